"""The three kinds of Flamingo training data, as interleaved item lists the processor understands.

Flamingo (arXiv 2204.14198, Section 2.4 and Appendix A.3) trains on:

- M3W, interleaved web documents: up to 5 images and 256 tokens per sequence;
- LTIP / ALIGN, image-text pairs: ``<image>{caption}<EOC>``;
- VTP, video-text pairs: 8 frames at 1 FPS, ``<image>{caption}<EOC>`` with the clip as the medium.

A sample is a list of items: ``str``, ``PIL.Image`` or a video (list of PIL frames). ``<EOC>`` ends each text
chunk that follows a medium.

M3W and the image a text attends to. The model's phi lets each text token attend to the last medium *before*
it. Appendix A.3.2 of the paper also trains text to attend to the *next* image: per sequence, with probability
p_next = 1/2, each text chunk is paired with the image after it instead. We implement that at data level:
in a "next" sequence every image is moved in front of the text chunk that precedes it, so "the last image
before the text" is the image that followed it in the document. Text after the last image keeps attending to
that image (there is no next one). The choice is drawn from the per-sample RNG, so it is reproducible.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
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

__all__ = [
    "EOC",
    "KINDS",
    "InterleavedSource",
    "PairSource",
    "SkippedSample",
    "Source",
    "VideoSource",
    "build_source",
    "m3w_items",
]

EOC = "<EOC>"
KINDS = ("interleaved", "pairs", "video")


@dataclass
class SkippedSample:
    """Returned instead of items when a sample is corrupt; counted by the collator in the main process."""

    reason: str
    where: str


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
        meta["source"], meta["where"] = self.name, where
        return items, meta


@dataclass
class PairSource(Source):
    """Image-text pairs (LTIP, ALIGN): ``[image, caption + <EOC>]``."""

    kind: str = field(default="pairs", init=False)

    def build(self, index: int, record: dict[str, Any], rng: random.Random) -> list[Any]:
        text, (_, ref) = self.caption(record, rng), first_field(record, IMAGE_KEYS)
        if text is None or ref is None:
            raise ValueError(f"record needs an image and a text, has keys {sorted(record)}")
        return [self._image(index, ref), text + EOC]


@dataclass
class VideoSource(Source):
    """Video-text pairs (VTP): ``[frames, caption + <EOC>]`` with ``num_frames`` frames at ``fps``."""

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
        return [frames, text + EOC]


def m3w_items(texts: Sequence[Any], images: Sequence[Any], max_images: int, attend_next: bool,
              rng: random.Random) -> list[tuple[str, Any]]:
    """Lay out one OBELICS-style document as ``[("text", t) | ("image", ref), ...]``.

    Takes a window of at most ``max_images`` images (a random one when the document has more, as the paper
    samples a random subsequence), and in ``attend_next`` mode moves each image in front of the text chunk
    that precedes it (see the module docstring).
    """
    if len(texts) != len(images):
        raise ValueError(f"texts ({len(texts)}) and images ({len(images)}) must be parallel lists")
    seq: list[tuple[str, Any]] = []
    for t, im in zip(texts, images):
        if (t is None) == (im is None):
            raise ValueError("each position needs exactly one of texts[i] / images[i]")
        seq.append(("text", t) if t is not None else ("image", im))
    img_pos = [i for i, (k, _) in enumerate(seq) if k == "image"]
    if len(img_pos) > max_images:
        first = rng.randint(0, len(img_pos) - max_images)
        start = img_pos[first - 1] + 1 if first > 0 else 0  # keep the text run before the first kept image
        end = img_pos[first + max_images] if first + max_images < len(img_pos) else len(seq)
        seq = seq[start:end]
    # split into text runs around the images: R0 I1 R1 I2 ... In Rn (len(runs) == len(imgs) + 1)
    runs: list[list[str]] = [[]]
    imgs: list[Any] = []
    for kind, v in seq:
        if kind == "text":
            runs[-1].append(str(v).strip())
        else:
            imgs.append(v)
            runs.append([])
    joined = [" ".join(t for t in r if t) for r in runs]
    out: list[tuple[str, Any]] = []
    if attend_next:  # I1 R0 I2 R1 ... In R(n-1) Rn: each run is read after the image that followed it
        for k, im in enumerate(imgs):
            out.append(("image", im))
            text = " ".join(t for t in (joined[k], joined[k + 1] if k == len(imgs) - 1 else "") if t)
            if text:
                out.append(("text", text))
        if not imgs and joined[0]:
            out.append(("text", joined[0]))
    else:
        if joined[0]:
            out.append(("text", joined[0]))
        for k, im in enumerate(imgs):
            out.append(("image", im))
            if joined[k + 1]:
                out.append(("text", joined[k + 1]))
    return out


@dataclass
class InterleavedSource(Source):
    """Interleaved documents (M3W, OBELICS/MMC4 layout): ``{"texts": [...], "images": [...]}``."""

    max_images: int = 5
    p_next: float = 0.5
    max_tokens: int = 256
    kind: str = field(default="interleaved", init=False)
    meta_keys: tuple[str, ...] = ()

    def build(self, index: int, record: dict[str, Any], rng: random.Random) -> list[Any]:
        texts, images = record.get("texts"), record.get("images")
        if not isinstance(texts, list) or not isinstance(images, list):
            raise ValueError("record needs parallel lists 'texts' and 'images'")
        for i, t in enumerate(texts):
            if t is not None:
                self.check_text(t, f"texts[{i}]")
        layout = m3w_items(texts, images, self.max_images, rng.random() < self.p_next, rng)
        items: list[Any] = []
        for kind, v in layout:
            if kind == "image":
                items.append(self._image(index, v))
            else:
                # a text chunk that follows a medium is closed by <EOC> (the paper's end-of-chunk token)
                items.append(v + EOC if items else v)
        if not any(not isinstance(x, str) for x in items):
            raise ValueError("document has no images")
        return items


def build_source(name: str, kind: str, spec: Any, strict: bool = False, skipped: SkipCounter | None = None,
                 **options: Any) -> Source:
    """Open ``spec`` (jsonl / tar shards / datasets) as a source of the given kind.

    Args:
        name: the source's name in logs and weights (``m3w``, ``ltip``, ...).
        kind: ``interleaved``, ``pairs`` or ``video``.
        spec: path, shard spec, ``hf:<folder>``, or a ``datasets.Dataset``.
        strict: raise on the first corrupt sample instead of skipping it.
        skipped: counts rows dropped while indexing the store.
        options: kind-specific fields (``max_tokens``, ``num_frames``, ``fps``, ``max_images``, ``p_next``).
    """
    classes = {"interleaved": InterleavedSource, "pairs": PairSource, "video": VideoSource}
    if kind not in classes:
        raise ValueError(f"source {name!r}: unknown kind {kind!r}, expected one of {', '.join(KINDS)}")
    required = {"interleaved": ("texts", "images"), "pairs": (), "video": ()}[kind]
    store = open_store(spec, required=required, strict=strict, skipped=skipped)
    if len(store) == 0:
        raise ValueError(f"source {name!r}: {spec} holds no usable records")
    return classes[kind](name=name, store=store, strict=strict, **options)
