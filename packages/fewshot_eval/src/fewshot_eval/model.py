"""The model seen by the evaluator: a three-method protocol, and its implementation over flamingo_core.

Flamingo (Alayrac et al., arXiv 2204.14198) is evaluated by prompting: open-ended tasks generate text after
an interleaved prompt, close-ended tasks score candidate continuations, and RICES needs the frozen vision
encoder's pooled image embedding. ``EvalModel`` is exactly that surface, so the evaluator and its tests do not
depend on how the model is built; ``FlamingoEvalModel`` adapts a saved ``flamingo_core.Flamingo``.

A prompt is a list of items - strings, images (``PIL.Image.Image``) and videos (lists of PIL frames) - in
reading order; the model's processor puts an ``<image>`` token where each image or video occurs.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

__all__ = [
    "EOC",
    "IMAGE_TOKEN",
    "EvalModel",
    "FlamingoEvalModel",
    "ModelLoadError",
    "Prompt",
    "PromptItem",
    "prompt_to_text",
    "truncate_generation",
]

EOC = "<EOC>"
IMAGE_TOKEN = "<image>"
PromptItem = str | Image.Image | list[Image.Image]
Prompt = list[PromptItem]


class ModelLoadError(ValueError):
    """The model folder is missing or does not hold a model this package can load."""


@runtime_checkable
class EvalModel(Protocol):
    """What the evaluator needs from a model."""

    identifier: str  # stable name of the model, recorded in results
    # Optional ``encoder_identifier``: names the frozen vision encoder alone; RICES support features are cached
    # under it (falling back to ``identifier``), so checkpoints sharing an encoder share the cache.

    def generate(self, prompts: list[Prompt], max_new_tokens: int, num_beams: int = 3) -> list[str]:
        """Text generated after each prompt, cut at ``<EOC>`` / EOS (the stop token itself not included)."""
        ...

    def loglikelihood(self, prefix: Prompt, continuations: list[str]) -> list[tuple[float, int]]:
        """(summed log-probability, token count) of each continuation after ``prefix``.

        The prefix is encoded once and its cache reused for every continuation.
        """
        ...

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        """(N, D) L2-normalised pooled features from the frozen vision encoder (for RICES)."""
        ...


def prompt_to_text(prompt: Sequence[PromptItem]) -> str:
    """The prompt as the model's text sees it: every image or video replaced by ``<image>``."""
    return "".join(item if isinstance(item, str) else IMAGE_TOKEN for item in prompt)


def truncate_generation(text: str, stop: Sequence[str] = (EOC,)) -> str:
    """Cut generated text at the first stop string."""
    cut = len(text)
    for s in stop:
        i = text.find(s)
        if i != -1:
            cut = min(cut, i)
    return text[:cut]


def _folder_identifier(model_dir: Path) -> str:
    """Name + short hash of the folder's config files and weight sizes: changes when the model changes."""
    h = hashlib.sha256()
    for f in sorted(model_dir.iterdir()):
        if f.is_file():
            h.update(f.name.encode())
            h.update(str(f.stat().st_size).encode())
            if f.suffix == ".json" and f.stat().st_size < 1_000_000:
                h.update(f.read_bytes())
    return f"flamingo:{model_dir.resolve().name}:{h.hexdigest()[:12]}"


def _media_key(item) -> tuple:
    """Content key of an image or a video: the same pixels give the same visual tokens."""
    if isinstance(item, Image.Image):
        return (item.mode, item.size, hashlib.sha1(item.tobytes()).hexdigest())
    return tuple(_media_key(f) for f in item)


class FlamingoEvalModel:
    """``EvalModel`` over ``flamingo_core.Flamingo``.

    Each distinct image's (or video's) visual tokens - frozen encoder + Perceiver Resampler - are computed once
    and reused by every prompt it appears in (as a demonstration or a query), through ``media_tokens``.

    Args:
        model_dir: a folder written by ``Flamingo.save_pretrained``.
        device: torch device; CUDA when available by default.
        model: an already built ``Flamingo`` instead of a folder (tests, notebooks).
        cache_visual: reuse visual tokens across prompts (False: encode the pixels of every prompt).
        cache_size: visual-token entries kept (least recently used dropped first).
    """

    def __init__(
        self,
        model_dir: str | Path | None = None,
        device: str | None = None,
        model=None,
        cache_visual: bool = True,
        cache_size: int = 8192,
    ):
        import torch

        if model is None:
            if model_dir is None:
                raise ModelLoadError("FlamingoEvalModel needs a model folder or a model")
            model_dir = Path(model_dir)
            if not (model_dir / "config.json").is_file():
                raise ModelLoadError(
                    f"{model_dir}: not a Flamingo model folder (expected config.json and model.safetensors written "
                    "by Flamingo.save_pretrained)"
                )
            try:
                from flamingo_core import Flamingo
            except ImportError as e:  # pragma: no cover - depends on the installation
                raise ModelLoadError(f"flamingo_core is not importable ({e}); install packages/flamingo_core") from e
            try:
                model = Flamingo.from_pretrained(model_dir)
            except (OSError, ValueError, KeyError) as e:
                raise ModelLoadError(f"{model_dir}: could not load the Flamingo model ({e})") from e
            self.identifier = _folder_identifier(model_dir)
        else:
            self.identifier = f"flamingo:{model_dir or 'in-memory'}:{getattr(model.config, 'name', '')}"
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.processor = model.processor
        self.tokenizer = self.processor.tokenizer
        self.encoder_identifier = str(getattr(model.vision_encoder, "identifier", self.identifier))
        self.max_frames = int(getattr(model.config, "max_frames", 0) or 0) or None
        self.cache_visual, self.cache_size = cache_visual, cache_size
        self._visual_cache: OrderedDict = OrderedDict()
        self._placeholder = torch.zeros(3, 1, 1)  # stands for media already encoded
        lm_config = getattr(getattr(model, "lm", None), "config", None)
        self.max_length = getattr(lm_config, "max_position_embeddings", None) or getattr(lm_config, "n_positions", None)

    # ------------------------------------------------------------------ inputs
    def _fit_frames(self, item):
        if isinstance(item, list) and self.max_frames and len(item) > self.max_frames:
            step = (len(item) - 1) / (self.max_frames - 1) if self.max_frames > 1 else 0
            return [item[round(i * step)] for i in range(self.max_frames)]
        return item

    def _visual(self, item):
        """(R, d) visual tokens of one image or video, from the cache when seen before."""
        import torch

        key = _media_key(item)
        if key in self._visual_cache:
            self._visual_cache.move_to_end(key)
            return self._visual_cache[key]
        pixels = self.processor.media_to_tensor(item).to(self.device)  # (T, C, H, W)
        with torch.inference_mode():
            tokens = self.model.encode_media(pixels[None, None])[0, 0]  # (R, d)
        self._visual_cache[key] = tokens
        if len(self._visual_cache) > self.cache_size:
            self._visual_cache.popitem(last=False)
        return tokens

    def _check_length(self, input_ids, extra: int) -> None:
        if self.max_length is not None and input_ids.shape[1] + extra > self.max_length:
            raise ValueError(
                f"a prompt of {input_ids.shape[1]} tokens (+{extra} to generate or score) exceeds the language "
                f"model's {self.max_length} positions; use fewer shots or shorter templates"
            )

    def _inputs(self, prompts: list[Prompt], padding_side: str) -> dict:
        import torch

        prompts = [[self._fit_frames(x) for x in p] for p in prompts]
        if not self.cache_visual:
            batch = self.processor(prompts, padding_side=padding_side)
            return {"media_tokens": None, **{k: (v.to(self.device) if v is not None else None) for k, v in batch.items()}}
        # Text through the processor with placeholders; media through the visual-token cache.
        batch = self.processor([[x if isinstance(x, str) else self._placeholder for x in p] for p in prompts],
                               padding_side=padding_side)  # fmt: skip
        out = {"input_ids": batch["input_ids"].to(self.device), "attention_mask": batch["attention_mask"].to(self.device),
               "media": None, "media_mask": None, "media_frame_mask": None, "media_tokens": None}  # fmt: skip
        media = [[x for x in p if not isinstance(x, str)] for p in prompts]
        n_max = max(len(m) for m in media)
        if n_max:
            rows = [[self._visual(x) for x in m] for m in media]
            first = next(t for row in rows for t in row)
            tokens = first.new_zeros(len(prompts), n_max, *first.shape)
            mask = torch.zeros(len(prompts), n_max, dtype=torch.bool, device=self.device)
            for i, row in enumerate(rows):
                for j, t in enumerate(row):
                    tokens[i, j], mask[i, j] = t, True
            out.update(media_tokens=tokens, media_mask=mask)  # (B, N_max, R, d), (B, N_max)
        return out

    # ------------------------------------------------------------------ EvalModel
    def generate(self, prompts: list[Prompt], max_new_tokens: int, num_beams: int = 3) -> list[str]:
        """Beam search (or greedy) after each prompt. The stop tokens are banned at the first step: an answer or a
        caption has at least one token (a trained model may close its chunk at once, and an empty prediction can
        never score)."""
        batch = self._inputs(prompts, "left")
        self._check_length(batch["input_ids"], max_new_tokens)
        new_ids = self.model.generate(
            batch["input_ids"], batch["attention_mask"], batch["media"], max_new_tokens=max_new_tokens,
            min_new_tokens=min(1, max_new_tokens), num_beams=num_beams, media_mask=batch["media_mask"],
            media_frame_mask=batch["media_frame_mask"], media_tokens=batch["media_tokens"],
        )  # fmt: skip
        return self.processor.decode(new_ids.cpu(), self.model.stop_token_ids)

    def loglikelihood(self, prefix: Prompt, continuations: list[str]) -> list[tuple[float, int]]:
        batch = self._inputs([prefix], "right")
        cont_ids = [self.tokenizer(c, add_special_tokens=False)["input_ids"] for c in continuations]
        self._check_length(batch["input_ids"], max(len(c) for c in cont_ids))
        scores = self.model.score_continuations(
            batch["input_ids"], cont_ids, batch["media"], media_mask=batch["media_mask"],
            media_frame_mask=batch["media_frame_mask"], media_tokens=batch["media_tokens"],
        )  # fmt: skip
        return [(float(lp), int(n)) for lp, n in zip(scores.logprobs.tolist(), scores.num_tokens.tolist())]

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        import torch

        encoder = self.model.vision_encoder
        pixels = torch.stack([encoder.preprocess(im.convert("RGB")) for im in images]).to(self.device)
        with torch.inference_mode():
            emb = encoder.embed(pixels)  # (N, D), L2-normalised by contract
        return emb.float().cpu().numpy()
