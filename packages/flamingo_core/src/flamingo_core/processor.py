"""Input processing for Flamingo (arXiv 2204.14198, Figure 7): interleaved text, images and videos -> token ids
with one ``<image>`` token where each media occurs, ``<EOC>`` ending chunks, and padded media tensors.

``stage2_image_transform`` is the paper's deterministic image preprocessing (Appendix B.1.2): pad to a square
with the image's mean colour, resize to the stage-2 resolution (320 for the paper's NFNet-F6, the encoder's own
input size otherwise), normalise as the encoder does. The model's processor resizes to that resolution
(``FlamingoConfig.image_size``) without padding: the training sources pad (``data.augmentation``, with their
``--pad-to-square`` switch), and evaluation keeps the encoder's square resize (the paper does not say how it
preprocesses at inference; docs/paper.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .tokenization import add_flamingo_tokens

__all__ = ["PAPER_IMAGE_SIZE", "FlamingoProcessor", "stage2_image_size", "stage2_image_transform"]

PAPER_IMAGE_SIZE = 320  # Appendix B.1.2: Flamingo trains at 320 x 320, its NFNet-F6 was pretrained at 288


def _is_pil(x) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover
        return False
    return isinstance(x, Image.Image)


def stage2_image_size(vision_encoder) -> int:
    """The stage-2 input resolution: 320 for the paper's NFNet-F6 tower (identifiers ``nfnet-f6...``), else the
    encoder's own ``image_size``."""
    if str(getattr(vision_encoder, "identifier", "")).startswith("nfnet-f6"):
        return PAPER_IMAGE_SIZE
    return int(vision_encoder.image_size)


def stage2_image_transform(vision_encoder, image_size: int | None = None, pad: bool = True) -> Callable:
    """PIL image -> (C, H, W): pad to a square with its mean colour, then resize and normalise.

    Args:
        vision_encoder: the frozen tower; its ``preprocess`` does the resize and normalisation at its own size.
        image_size: the output side (default ``stage2_image_size``). A size other than the encoder's needs a
            stage-1 tower, whose normalisation is known (``EvalTransform``): resized to it, normalised alike.
        pad: pad to a square first (False: the resize and normalisation only, as the model's processor does).

    Raises:
        ValueError: another size for a tower whose preprocessing cannot be re-sized.
    """
    from flamingo_core.data.augmentation import pad_to_square

    size = stage2_image_size(vision_encoder) if image_size is None else int(image_size)
    preprocess = vision_encoder.preprocess
    if size != getattr(vision_encoder, "image_size", size):
        inner = getattr(vision_encoder, "_transform", None)
        if not all(hasattr(inner, a) for a in ("size", "mean", "std")):
            raise ValueError(f"image size {size}: the vision encoder {type(vision_encoder).__name__} resizes to "
                             f"{vision_encoder.image_size} itself; expected a stage-1 tower to change its size")
        from contrastive_encoder.transforms import EvalTransform

        preprocess = EvalTransform(size, tuple(inner.mean), tuple(inner.std))
    return (lambda image: preprocess(pad_to_square(image))) if pad else preprocess


def doc_start_id(tokenizer, token: str | None) -> int | None:
    """The id to put before every sequence (``FlamingoConfig.doc_start_token``), or None: for ``token`` None,
    for a tokenizer that adds its own start token, and for "auto" when the tokenizer has neither BOS nor EOS."""
    if token is None:
        return None
    with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
    if len(with_special) > len(tokenizer("a", add_special_tokens=False)["input_ids"]) and with_special[0] in (
        tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.cls_token_id
    ):
        return None  # e.g. LLaMA-2 (<s>) and OPT (</s>) start every sequence themselves
    if token == "auto":
        token = tokenizer.bos_token or tokenizer.eos_token
        if token is None:
            return None
    if token not in tokenizer.get_vocab():
        raise ValueError(f"doc_start_token {token!r} is not a token of the tokenizer ({type(tokenizer).__name__})")
    return tokenizer.convert_tokens_to_ids(token)


class FlamingoProcessor:
    """Turns interleaved samples into model inputs.

    Args:
        tokenizer: the model's tokenizer (``<image>`` / ``<EOC>`` are added if missing).
        image_transform: PIL image -> (C, H, W) float tensor (the vision encoder's ``preprocess``).
        media_token, eoc_token: the special tokens.
        padding_side: "right" (training) or "left" (batched generation); overridable per call.
        max_length: truncate longer samples (media whose ``<image>`` token is cut are dropped).
        doc_start_token: put before every sequence unless the tokenizer adds a start token itself
            (``FlamingoConfig.doc_start_token``): "auto" = the tokenizer's BOS, else its EOS; a token; None.
    """

    def __init__(
        self,
        tokenizer,
        image_transform: Callable,
        media_token: str = "<image>",
        eoc_token: str = "<EOC>",
        padding_side: str = "right",
        max_length: int | None = None,
        doc_start_token: str | None = None,
    ):
        self.tokenizer = tokenizer
        self.image_transform = image_transform
        self.media_token, self.eoc_token = media_token, eoc_token
        self.media_token_id, self.eoc_token_id = add_flamingo_tokens(tokenizer, media_token, eoc_token)
        self.padding_side, self.max_length = padding_side, max_length
        self.doc_start_id = doc_start_id(tokenizer, doc_start_token)

    # ------------------------------------------------------------------ media
    def media_to_tensor(self, item, where: str = "") -> torch.Tensor:
        """An image (PIL), a video (list of PIL frames) or a pixel tensor -> (T, C, H, W) float tensor.

        Tensors are taken as already preprocessed pixels: (C, H, W) for an image or (T, C, H, W) for a video;
        uint8 tensors are converted to PIL and transformed.
        """
        if _is_pil(item):
            return self.image_transform(item)[None]
        if isinstance(item, (list, tuple)):
            if not item or not all(_is_pil(f) for f in item):
                raise ValueError(f"a video must be a non-empty list of PIL images{where}")
            return torch.stack([self.image_transform(f) for f in item])
        if isinstance(item, torch.Tensor):
            if item.ndim == 3:
                item = item[None]
            if item.ndim != 4:
                raise ValueError(f"a media tensor must be (C, H, W) or (T, C, H, W), got {tuple(item.shape)}{where}")
            if item.dtype == torch.uint8:
                from PIL import Image

                frames = [Image.fromarray(f.permute(1, 2, 0).numpy()) for f in item]
                return torch.stack([self.image_transform(f) for f in frames])
            return item.float()
        raise TypeError(f"expected text (str), an image (PIL), a video (list of PIL) or a tensor{where}, "
                        f"got {type(item).__name__}")

    # ------------------------------------------------------------------ text
    def token_ids(self, text: str) -> list[int]:
        """The ids of one sample's text as ``encode`` makes them: the start token, if any, then the tokens."""
        ids = self.tokenizer(text, add_special_tokens=True)["input_ids"]
        return ids if self.doc_start_id is None else [self.doc_start_id, *ids]

    def split_sample(self, sample, index: int = 0) -> tuple[str, list]:
        """An interleaved item list -> (text with ``<image>`` at each media, media list)."""
        if isinstance(sample, str):
            return sample, []
        if not isinstance(sample, (list, tuple)):
            raise TypeError(f"sample {index} must be a list of text and media items, got {type(sample).__name__}")
        parts, media = [], []
        for item in sample:
            if isinstance(item, str):
                parts.append(item)
            elif item is None:
                continue
            else:
                parts.append(self.media_token)
                media.append(item)
        return "".join(parts), media

    def __call__(self, batch: Sequence, padding_side: str | None = None, max_length: int | None = None) -> dict:
        """Encode a batch of interleaved samples (each a list of str / PIL image / video / tensor, or a str).

        Returns:
            dict with ``input_ids`` (B, L), ``attention_mask`` (B, L), and when any media is present
            ``media`` (B, N_max, T_max, C, H, W), ``media_mask`` (B, N_max), ``media_frame_mask``
            (B, N_max, T_max); the media entries are None otherwise.
        """
        if isinstance(batch, str):
            batch = [batch]
        texts, media = zip(*(self.split_sample(s, i) for i, s in enumerate(batch))) if batch else ((), ())
        return self.encode(list(texts), list(media), padding_side=padding_side, max_length=max_length)

    def encode(
        self,
        texts: list[str],
        media: list[list],
        padding_side: str | None = None,
        max_length: int | None = None,
    ) -> dict:
        """Encode texts that contain ``<image>`` placeholders with their media (in order of occurrence)."""
        if len(texts) != len(media):
            raise ValueError(f"{len(texts)} texts but {len(media)} media lists")
        if not texts:
            raise ValueError("the batch is empty")
        side = padding_side or self.padding_side
        if side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {side!r}")
        max_length = max_length or self.max_length
        rows, kept = [], []
        for i, (text, items) in enumerate(zip(texts, media)):
            ids = self.token_ids(text)
            self._check_count(ids, items, i)
            if max_length is not None and len(ids) > max_length:
                ids = ids[:max_length]
                items = items[: sum(t == self.media_token_id for t in ids)]
            rows.append(ids)
            kept.append(items)
        return self.encode_ids(rows, kept, padding_side=side)

    def _check_count(self, ids: list[int], items: list, i: int) -> None:
        count = sum(t == self.media_token_id for t in ids)
        if count != len(items):
            raise ValueError(
                f"{count} {self.media_token} tokens in the text but {len(items)} "
                f"{'image was' if len(items) == 1 else 'images were'} given (sample {i})"
            )

    def encode_ids(self, rows: list[list[int]], media: list[list], padding_side: str | None = None) -> dict:
        """Encode token id rows (``token_ids``, possibly cut) with their media in order of their ``<image>``
        tokens; returns what ``__call__`` does."""
        if len(rows) != len(media) or not rows:
            raise ValueError(f"{len(rows)} id rows but {len(media)} media lists (both must be non-empty)")
        side = padding_side or self.padding_side
        if side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {side!r}")
        tensors = []
        for i, (ids, items) in enumerate(zip(rows, media)):
            self._check_count(ids, items, i)
            tensors.append([self.media_to_tensor(m, f" (sample {i}, media {j})") for j, m in enumerate(items)])
        return self._collate(rows, tensors, side)

    def _collate(self, rows: list[list[int]], tensors: list[list[torch.Tensor]], side: str) -> dict:
        b, width = len(rows), max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((b, width), pad, dtype=torch.long)
        attention_mask = torch.zeros(b, width, dtype=torch.long)
        for i, r in enumerate(rows):
            span = slice(width - len(r), width) if side == "left" else slice(0, len(r))
            input_ids[i, span] = torch.tensor(r, dtype=torch.long)
            attention_mask[i, span] = 1
        out = {"input_ids": input_ids, "attention_mask": attention_mask,
               "media": None, "media_mask": None, "media_frame_mask": None}
        n_max = max(len(t) for t in tensors)
        if n_max == 0:
            return out
        shapes = {tuple(m.shape[1:]) for t in tensors for m in t}
        if len(shapes) != 1:
            raise ValueError(f"all media must have the same (C, H, W) after the transform, got {sorted(shapes)}")
        t_max = max(m.shape[0] for t in tensors for m in t)
        media = torch.zeros(b, n_max, t_max, *shapes.pop())  # (B, N_max, T_max, C, H, W)
        media_mask = torch.zeros(b, n_max, dtype=torch.bool)
        frame_mask = torch.zeros(b, n_max, t_max, dtype=torch.bool)
        for i, t in enumerate(tensors):
            for j, m in enumerate(t):
                media[i, j, : m.shape[0]] = m
                media_mask[i, j] = True
                frame_mask[i, j, : m.shape[0]] = True
        out.update(media=media, media_mask=media_mask, media_frame_mask=frame_mask)
        return out

    # ------------------------------------------------------------------ OBELICS / MMC4 layout
    def obelics_to_items(self, texts: Sequence, images: Sequence, add_eoc: bool = True) -> list:
        """Parallel ``texts`` / ``images`` lists (exactly one non-null per position) -> an item list.

        Each text chunk is followed by ``<EOC>`` when ``add_eoc`` (Figure 7: chunks end with ``<EOC>``).
        """
        if len(texts) != len(images):
            raise ValueError(f"texts and images must have the same length, got {len(texts)} and {len(images)}")
        items = []
        for i, (text, image) in enumerate(zip(texts, images)):
            if (text is None) == (image is None):
                raise ValueError(f"position {i}: exactly one of texts[{i}] / images[{i}] must be non-null")
            if text is not None:
                items.append(text + (self.eoc_token if add_eoc else ""))
            else:
                items.append(image)
        return items

    def from_obelics(self, texts: Sequence, images: Sequence, add_eoc: bool = True, **kwargs) -> dict:
        """Encode one document (parallel lists) or a batch of them (lists of parallel lists)."""
        batched = len(texts) > 0 and isinstance(texts[0], (list, tuple))
        docs = zip(texts, images) if batched else [(texts, images)]
        return self([self.obelics_to_items(t, im, add_eoc) for t, im in docs], **kwargs)

    # ------------------------------------------------------------------ output
    def decode(self, token_ids: torch.Tensor, stop_token_ids: Sequence[int] | None = None) -> list[str]:
        """Generated ids (B, L) -> texts, each cut at its first stop token (``<EOC>`` / EOS)."""
        stops = set(stop_token_ids or [self.eoc_token_id, self.tokenizer.eos_token_id])
        texts = []
        for row in token_ids.tolist():
            cut = next((i for i, t in enumerate(row) if t in stops), len(row))
            texts.append(self.tokenizer.decode(row[:cut], skip_special_tokens=True))
        return texts
