"""A map-style dataset of transformed image-text pairs with the suite's bad-sample policy.

Samples are addressed by keys ``(dataset, index, seed)``: the seed drives the augmentation, so a sample's
pixels depend on the key alone (identical in a resumed or multi-process run). A corrupt or missing image is
counted and replaced by the next index of the same source, keeping batches full; in strict mode it raises
``BadSampleError`` naming the file. A source that yields nothing readable within a bounded number of draws
(every sample bad, or ``max_replacements`` in a row) stops the run with ``UnreadableSourceError`` naming it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch

from ..shared.media import MediaError
from ..shared.records import BadSampleError
from ..transforms import EvalTransform, TrainTransform
from .sources import ImageTextPairs

__all__ = ["PairDataset", "UnreadableSourceError", "collate_pairs"]


class UnreadableSourceError(BadSampleError):
    """A source whose samples cannot be read for a bounded number of draws (all of them, or too many in a row)."""


class PairDataset(torch.utils.data.Dataset):
    """Several pair sources behind one ``__getitem__((dataset, index, seed))``.

    Args:
        sources: the pair sources, addressed by position.
        transform: a TrainTransform (uses the seed) or an EvalTransform.
        strict: raise on the first bad image instead of skipping it.
        max_replacements: give up (raise) after this many bad images in a row.
    """

    def __init__(
        self, sources: list[ImageTextPairs], transform: TrainTransform | EvalTransform, strict: bool = False,
        max_replacements: int = 64,
    ):
        self.sources = list(sources)
        self.transform = transform
        self.strict = strict
        self.max_replacements = max_replacements
        self._bad: set[tuple[int, int]] = set()
        self._first_bad: dict[int, str] = {}  # per source: "FILE: reason" of the first bad sample seen

    def sizes(self) -> list[int]:
        return [len(s) for s in self.sources]

    def _give_up(self, d: int, index: int, tried: int) -> UnreadableSourceError:
        source, first = self.sources[d], self._first_bad.get(d, "?")
        bad = sum(1 for k, _ in self._bad if k == d)
        if bad >= len(source):
            return UnreadableSourceError(
                f"all {len(source)} samples of {source.name} are unreadable (first: {first}); fix or remove "
                f"this source")
        return UnreadableSourceError(
            f"{source.name}: {tried} unreadable samples in a row from index {index} ({bad} of {len(source)} "
            f"bad so far; first: {first}); fix the data or remove this source")

    def __getitem__(self, key: tuple[int, int, int] | int) -> dict[str, Any]:
        if isinstance(key, int):
            key = (0, key, 0)
        d, index, seed = key[:3]
        source = self.sources[d]
        skipped: Counter = Counter()
        # a bad sample is replaced by the next index of the same source; at most max_replacements + 1 distinct
        # indices are tried, so a source with no readable sample stops with an error instead of spinning
        tried, loaded = 0, None
        for offset in range(len(source)):
            i = (index + offset) % len(source)
            if (d, i) in self._bad:  # known bad in this process (counted when first seen): costs no draw
                continue
            if tried > self.max_replacements:
                break
            tried += 1
            try:
                loaded = source.load(i)
                break
            except (ValueError, OSError, KeyError) as e:  # MediaError, or a tar member that cannot be read
                # "No such file or directory" rather than an errno repr that repeats the path named by where()
                reason = e.strerror if isinstance(e, OSError) and e.strerror else (
                    str(e) if isinstance(e, MediaError) else f"{type(e).__name__}: {e}")
                reason = reason.splitlines()[0]
                if self.strict:
                    raise BadSampleError(
                        f"{source.where(i)}: unreadable image ({reason}) (strict mode; drop --strict to skip "
                        f"and count such samples)"
                    ) from e
                self._bad.add((d, i))
                self._first_bad.setdefault(d, f"{source.where(i)}: {reason}")
                skipped["unreadable or missing image"] += 1
        if loaded is None:
            raise self._give_up(d, index, tried)
        image, text = loaded
        if isinstance(self.transform, TrainTransform):
            generator = torch.Generator().manual_seed(int(seed))
            pixels, text = self.transform(image, text, generator)
        else:
            pixels = self.transform(image)
        return {"pixels": pixels, "text": text, "skipped": dict(+skipped), "meta": key[3:]}


def collate_pairs(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack pixels ``(B, C, H, W)``, list the captions, sum the skip counts, keep the first sample's meta."""
    skipped: Counter = Counter()
    for s in samples:
        skipped.update(s["skipped"])
    return {
        "pixels": torch.stack([s["pixels"] for s in samples]),
        "text": [s["text"] for s in samples],
        "skipped": dict(skipped),
        "meta": samples[0]["meta"] if samples else (),
    }
