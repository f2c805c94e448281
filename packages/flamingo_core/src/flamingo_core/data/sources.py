"""The three kinds of Flamingo training data, as interleaved item lists the processor understands.

Flamingo (arXiv 2204.14198, Section 2.4 and Appendix A.3) trains on:

- M3W, interleaved web documents: a random window of 256 tokens with its first 5 images (``m3w``);
- LTIP / ALIGN, image-text pairs: ``<image>{caption}<EOC>``;
- VTP, video-text pairs: 8 frames at 1 FPS, ``<image>{caption}<EOC>`` with the clip as the medium.

A sample is a list of items: ``str``, ``PIL.Image``, a video (list of PIL frames) or, in a document, a
``DocumentImage`` the collator loads when the token window keeps it. Every text chunk ends with ``<EOC>``
(Figure 7). Training sources pad and augment their media (``augmentation.Stage2Augmentation``) and give pair
texts a leading space with probability ``p_leading_space`` (Appendix B.1.2: 1/2); every random choice comes from
the sample's seeded RNG.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from contrastive_encoder.shared.media import MediaError, load_image, load_video
from contrastive_encoder.shared.records import BadSampleError, SkipCounter
from contrastive_encoder.shared.stores import (
    IMAGE_KEYS,
    TEXT_KEYS,
    VIDEO_KEYS,
    RecordStore,
    first_field,
    open_store,
    short_repr,
)
from flamingo_core.data.augmentation import AugmentDraw, Stage2Augmentation
from flamingo_core.data.m3w import m3w_items

__all__ = [
    "EOC",
    "KINDS",
    "DocumentImage",
    "InterleavedSource",
    "PairSource",
    "SkippedSample",
    "Source",
    "VideoSource",
    "build_source",
]

EOC = "<EOC>"
KINDS = ("interleaved", "pairs", "video")


@dataclass
class SkippedSample:
    """Returned instead of items when a sample is corrupt; counted by the collator in the main process."""

    reason: str
    where: str


@dataclass
class DocumentImage:
    """An image of an M3W document, loaded (and augmented) only if the collator's token window keeps it.

    ``load()`` returns the PIL image or raises ``MediaError`` / ``OSError`` / ``ValueError``; ``where`` names it
    and ``strict`` says whether such a failure stops the run (``BadSampleError``) or skips the sample.
    """

    load: Callable[[], Any]
    where: str  # the document (file and line): the sample a failure skips, whichever of its images failed
    strict: bool = False
    what: str = "image"


@dataclass
class Source:
    """One named training source: a record store plus the rule that turns a record into items.

    ``load(index, rng)`` returns ``(items, meta)`` or a ``SkippedSample`` (raising in strict mode).
    """

    name: str
    store: RecordStore
    strict: bool = False
    max_tokens: int = 64
    meta_keys: tuple[str, ...] = ("scene",)
    # the model's media and end-of-chunk tokens: a text holding one literally would tokenize to it (an <image>
    # without its image, a caption cut short), so such a record is bad, not a failed batch
    special_tokens: tuple[str, ...] = ("<image>", EOC)
    # stage-2 preprocessing of the media (padding, flips, colour jitter); None = the images as stored
    augment: Stage2Augmentation | None = None
    kind: str = field(default="pairs", init=False)

    def __len__(self) -> int:
        return len(self.store)

    def _image(self, index: int, ref: Any):
        if ref is not None and hasattr(ref, "convert"):  # already a PIL image (datasets Image column)
            return ref.convert("RGB")
        m = self.store.media(index, ref)
        if m.value is None:
            raise MediaError(m.where)
        if hasattr(m.value, "convert"):
            return m.value.convert("RGB")
        return load_image(m.value, name=m.where)

    def _media(self, image, draw: AugmentDraw | None):
        """An image or a video's frames through ``augment`` with this sample's ``draw``."""
        if self.augment is None:
            return image
        if isinstance(image, list):
            return [self.augment.image(f, draw) for f in image]
        return self.augment.image(image, draw)

    def _draw(self, rng: random.Random) -> AugmentDraw | None:
        return None if self.augment is None else self.augment.draw(rng)

    def _text(self, text: str, draw: AugmentDraw | None) -> str:
        return text if self.augment is None else self.augment.text(text, draw)

    def sample_meta(self, rng: random.Random) -> dict[str, Any]:
        """Per-sample choices the collator or the model acts on (drawn after ``build``); none by default."""
        return {}

    def check_text(self, text: Any, what: str) -> str:
        """A text of the record: a string without the model's special tokens, else ``ValueError`` (a bad row)."""
        if not isinstance(text, str):
            raise ValueError(f"{what} must be a string, got {type(text).__name__} {short_repr(text)}")
        for token in self.special_tokens:
            if token in text:
                raise ValueError(f"{what} holds a literal {token}, a special token of the model: {short_repr(text)}")
        return text

    def caption(self, record: dict[str, Any], rng: random.Random | None = None) -> str | None:
        """The record's caption (first of ``TEXT_KEYS``), checked by ``check_text``. A list of captions (as stage 1
        reads them: one pair each) gives one per sample, drawn from the sample's seeded ``rng``."""
        key, text = first_field(record, TEXT_KEYS)
        if isinstance(text, list) and text:
            text = rng.choice(text) if rng is not None else text[0]
        return None if key is None else self.check_text(text, f"'{key}'").strip()

    def build(self, index: int, record: dict[str, Any], rng: random.Random) -> list[Any]:
        raise NotImplementedError

    def load(self, index: int, rng: random.Random) -> tuple[list[Any], dict[str, Any]] | SkippedSample:
        where = self.store.where(index)
        try:
            record = self.store.record(index)
            items = self.build(index, record, rng)
        except (MediaError, ValueError, KeyError, OSError) as e:
            reason = "corrupt or missing media" if isinstance(e, MediaError) else "bad record"
            if self.strict:
                raise BadSampleError(f"{where}: {e} (strict mode; drop --strict to skip and count such "
                                     "samples)") from e
            return SkippedSample(reason, f"{where}: {e}")
        meta = {k: record[k] for k in self.meta_keys if k in record}
        meta.update(self.sample_meta(rng))
        meta["source"], meta["where"] = self.name, where
        return items, meta


@dataclass
class PairSource(Source):
    """Image-text pairs (LTIP, ALIGN): ``[image, caption + <EOC>]``, the caption led by a space with
    probability ``p_leading_space`` (Appendix B.1.2: 1/2, so the model knows captions with and without one)."""

    p_leading_space: float = 0.0
    kind: str = field(default="pairs", init=False)

    def pair_text(self, text: str, draw: AugmentDraw | None, rng: random.Random) -> str:
        text = self._text(text, draw)
        if self.p_leading_space > 0 and rng.random() < self.p_leading_space:
            text = " " + text
        return text + EOC

    def build(self, index: int, record: dict[str, Any], rng: random.Random) -> list[Any]:
        text, (_, ref) = self.caption(record, rng), first_field(record, IMAGE_KEYS)
        if text is None or ref is None:
            raise ValueError(f"record needs an image and a text, has keys {sorted(record)}")
        draw = self._draw(rng)
        return [self._media(self._image(index, ref), draw), self.pair_text(text, draw, rng)]


@dataclass
class VideoSource(PairSource):
    """Video-text pairs (VTP): ``[frames, caption + <EOC>]`` with ``num_frames`` frames at ``fps``; every frame
    of a clip gets the same augmentation."""

    num_frames: int = 8
    fps: float = 1.0
    kind: str = field(default="video", init=False)

    def build(self, index: int, record: dict[str, Any], rng: random.Random) -> list[Any]:
        text, (_, ref) = self.caption(record, rng), first_field(record, VIDEO_KEYS)
        if text is None or ref is None:
            raise ValueError(f"record needs a video and a text, has keys {sorted(record)}")
        if isinstance(ref, list):  # a list of decoded frames (datasets) or frame paths
            frames = [self._image(index, r) for r in ref[: self.num_frames]]
            if not frames:
                raise MediaError(f"{self.store.where(index)}: empty frame list")
            frames += [frames[-1]] * (self.num_frames - len(frames))
        else:
            m = self.store.media(index, ref)
            if m.value is None:
                raise MediaError(m.where)
            frames = load_video(m.value, self.num_frames, fps=self.fps, rng=rng, name=m.where)
        draw = self._draw(rng)
        return [self._media(frames, draw), self.pair_text(text, draw, rng)]


@dataclass
class InterleavedSource(Source):
    """Interleaved documents (M3W, OBELICS/MMC4 layout): ``{"texts": [...], "images": [...]}`` -> the whole
    document in its order, every text chunk closed by ``<EOC>``, each image a ``DocumentImage``. The collator
    takes the paper's window of ``max_tokens`` tokens with its first ``max_images`` images (``m3w``).

    ``sample_meta`` draws the window's start (``m3w_window``, a uniform in [0, 1)) and, with probability
    ``p_next``, ``media_next``: the sequence's tokens attend to the image after them (Appendix A.3.2).
    """

    max_images: int = 5
    p_next: float = 0.5
    max_tokens: int = 256
    kind: str = field(default="interleaved", init=False)
    meta_keys: tuple[str, ...] = ()

    def build(self, index: int, record: dict[str, Any], rng: random.Random) -> list[Any]:
        texts, images = record.get("texts"), record.get("images")
        if not isinstance(texts, list) or not isinstance(images, list):
            raise ValueError("record needs parallel lists 'texts' and 'images'")
        for i, (t, im) in enumerate(zip(texts, images)):
            if t is not None:
                self.check_text(t, f"texts[{i}]")
            # images load in the collator, if the window keeps them; a reference that cannot name one is a bad
            # record now (a path or member name, encoded bytes, a datasets Image dict or a decoded image)
            if im is not None and not (isinstance(im, (str, bytes, dict)) and im) and not hasattr(im, "convert"):
                raise ValueError(f"images[{i}] {short_repr(im)} names no image (expected a path or member name)")
        layout = m3w_items(texts, images)
        if not any(kind == "image" for kind, _ in layout):
            raise ValueError("document has no images")
        draw = self._draw(rng)  # one draw for the whole document: a flip swaps left and right in all its text
        where = self.store.where(index)
        return [DocumentImage(self._document_image(index, v, draw), where, self.strict, f"image {short_repr(v)}")
                if kind == "image" else self._text(v, draw) + EOC for kind, v in layout]

    def _document_image(self, index: int, ref: Any, draw: AugmentDraw | None) -> Callable[[], Any]:
        return lambda: self._media(self._image(index, ref), draw)

    def sample_meta(self, rng: random.Random) -> dict[str, Any]:
        return {"m3w_window": rng.random(), "max_images": self.max_images,
                "media_next": rng.random() < self.p_next}


def build_source(name: str, kind: str, spec: Any, strict: bool = False, skipped: SkipCounter | None = None,
                 **options: Any) -> Source:
    """Open ``spec`` (jsonl / tar shards / datasets) as a source of the given kind.

    Args:
        name: the source's name in logs and weights (``m3w``, ``ltip``, ...).
        kind: ``interleaved``, ``pairs`` or ``video``.
        spec: path, shard spec, ``hf:<folder>``, or a ``datasets.Dataset``.
        strict: raise on the first corrupt sample instead of skipping it.
        skipped: counts rows dropped while indexing the store.
        options: the source's fields (``max_tokens``, ``augment``; pairs and video ``p_leading_space``; video
            ``num_frames``, ``fps``; interleaved ``max_images``, ``p_next``).
    """
    classes = {"interleaved": InterleavedSource, "pairs": PairSource, "video": VideoSource}
    if kind not in classes:
        raise ValueError(f"source {name!r}: unknown kind {kind!r}, expected one of {', '.join(KINDS)}")
    required = {"interleaved": ("texts", "images"), "pairs": (), "video": ()}[kind]
    store = open_store(spec, required=required, strict=strict, skipped=skipped)
    if len(store) == 0:
        raise ValueError(f"source {name!r}: {spec} holds no usable records")
    return classes[kind](name=name, store=store, strict=strict, **options)
