"""A map-style dataset of transformed image-text pairs with the suite's bad-sample policy.

Samples are addressed by keys ``(dataset, index, seed)``: the seed drives the augmentation, so a sample's
pixels depend on the key alone (identical in a resumed or multi-process run). A corrupt or missing image is
counted and replaced by the next index of the same source, keeping batches full; in strict mode it raises
``BadSampleError`` naming the file.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from PIL import Image

from ..transforms import EvalTransform, TrainTransform
from .jsonl import BadSampleError
from .sources import PairSource

__all__ = ["PairDataset", "collate_pairs"]

_BAD_IMAGE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError, KeyError, EOFError)


class PairDataset(torch.utils.data.Dataset):
    """Several pair sources behind one ``__getitem__((dataset, index, seed))``.

    Args:
        sources: the pair sources, addressed by position.
        transform: a TrainTransform (uses the seed) or an EvalTransform.
        strict: raise on the first bad image instead of skipping it.
        max_replacements: give up (raise) after this many bad images in a row.
    """

    def __init__(
        self, sources: list[PairSource], transform: TrainTransform | EvalTransform, strict: bool = False,
        max_replacements: int = 64,
    ):
        self.sources = list(sources)
        self.transform = transform
        self.strict = strict
        self.max_replacements = max_replacements
        self._bad: set[tuple[int, int]] = set()

    def sizes(self) -> list[int]:
        return [len(s) for s in self.sources]

    def __getitem__(self, key: tuple[int, int, int] | int) -> dict[str, Any]:
        if isinstance(key, int):
            key = (0, key, 0)
        d, index, seed = key[:3]
        source = self.sources[d]
        skipped: Counter = Counter()
        for attempt in range(self.max_replacements + 1):
            i = (index + attempt) % len(source)
            if (d, i) in self._bad:  # counted when first seen by this process
                continue
            try:
                image, text = source.load(i)
                break
            except _BAD_IMAGE as e:
                reason = f"{type(e).__name__}: {e}".splitlines()[0]
                if self.strict:
                    raise BadSampleError(
                        f"{source.where(i)}: unreadable image ({reason}) (strict mode; drop --strict to skip "
                        f"and count such samples)"
                    ) from e
                self._bad.add((d, i))
                skipped["unreadable or missing image"] += 1
        else:
            raise RuntimeError(f"{source.name}: {self.max_replacements + 1} bad images in a row near index {index}")
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
