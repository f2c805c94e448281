"""Where image-text pairs come from: JSON Lines + image files, WebDataset tar shards, or a `datasets` dataset.

Every source is a random-access list of pairs with three methods: ``len(source)``, ``source.load(i)`` giving
``(PIL image, caption)`` (raising on a corrupt or missing image) and ``source.where(i)`` naming the file, for
error messages. WebDataset shards are read by ``shared.shards`` (the reader stage 2 uses too): members sharing
a key (the path up to the first dot of the basename) form a sample, e.g. ``000012.png`` + ``000012.txt``.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

from PIL import Image

from ..shared.records import SkipCounter, read_jsonl, resolve_media_path
from ..shared.shards import TarShards, is_shard_spec

__all__ = ["IMAGE_ERRORS", "HFPairs", "JsonlPairs", "PairSource", "TarPairs", "open_image", "open_source"]

IMAGE_EXTS = ("png", "jpg", "jpeg", "webp", "bmp")
# what a missing, truncated, corrupt or oversized image raises while ``open_image`` decodes it
IMAGE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError, KeyError, EOFError)
TEXT_EXTS = ("txt", "text", "caption")


def open_image(data: Any) -> Image.Image:
    """Decode a path, bytes, a ``{"bytes"|"path"}`` dict (datasets' Image feature) or a PIL image, fully."""
    if isinstance(data, Image.Image):
        image = data
    elif isinstance(data, dict):
        image = Image.open(io.BytesIO(data["bytes"])) if data.get("bytes") else Image.open(data["path"])
    elif isinstance(data, (bytes, bytearray)):
        image = Image.open(io.BytesIO(data))
    else:
        image = Image.open(data)
    image.load()  # decode now, so a truncated file fails here and not inside a transform
    return image.convert("RGB")


class PairSource:
    """Random-access image-text pairs."""

    name: str = "pairs"

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, index: int) -> tuple[Image.Image, str]:
        raise NotImplementedError

    def where(self, index: int) -> str:
        return f"{self.name}[{index}]"


class JsonlPairs(PairSource):
    """Rows ``{"image": path, "text": caption | [captions]}``; a list of captions gives one pair each.

    Args:
        path: the JSON Lines file (image paths are relative to its folder).
        strict / skipped: the bad-row policy of ``read_jsonl``.
    """

    def __init__(
        self, path: str | Path, image_key: str = "image", text_key: str = "text", strict: bool = False,
        skipped: SkipCounter | None = None,
    ):
        self.path = Path(path)
        self.name = str(self.path)
        base = self.path.parent
        self.items: list[tuple[str, str, int]] = []
        rows = read_jsonl(self.path, required=(image_key, text_key), strict=strict, skipped=skipped,
                          types={image_key: str, text_key: (str, [str])})
        for lineno, row in enumerate(rows, 1):
            texts = row[text_key] if isinstance(row[text_key], list) else [row[text_key]]
            image = str(resolve_media_path(row[image_key], base))
            self.items += [(image, t, lineno) for t in texts if t.strip()]
        if not self.items:
            raise ValueError(f"{self.path}: no usable image-text rows (expected keys '{image_key}', '{text_key}')")

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int) -> tuple[Image.Image, str]:
        image, text, _ = self.items[index]
        return open_image(image), text

    def where(self, index: int) -> str:
        image, _, row = self.items[index]
        return f"{image} (record {row} of {self.path})"


class TarPairs(PairSource):
    """WebDataset shards (``shared.shards``: a file, a folder of ``*.tar``, a glob or a ``{000..009}`` range):
    the samples with an image member and a caption member (``txt``/``text``/``caption``, or ``json`` with a
    ``text`` or ``caption`` field). An unreadable shard is skipped and counted (raises when strict)."""

    def __init__(self, spec: str | Path, strict: bool = False, skipped: SkipCounter | None = None):
        self.name = str(spec)
        self.tars = TarShards(spec, strict=strict, skipped=skipped)
        self.samples: list[tuple[int, tarfile.TarInfo, tarfile.TarInfo]] = []  # (sample, image, caption)
        for i, sample in enumerate(self.tars.samples):
            image = next((sample.members[e] for e in IMAGE_EXTS if e in sample.members), None)
            text = next((sample.members[e] for e in TEXT_EXTS + ("json",) if e in sample.members), None)
            if image is not None and text is not None:
                self.samples.append((i, image, text))
        if not self.samples:
            raise ValueError(f"{spec}: no samples with both an image ({'/'.join(IMAGE_EXTS)}) and a caption")

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[Image.Image, str]:
        i, image_member, text_member = self.samples[index]
        shard = self.tars[i].shard
        raw = self.tars.read(shard, text_member).decode("utf-8")
        if text_member.name.lower().endswith(".json"):
            meta = json.loads(raw)
            raw = meta.get("text") or meta.get("caption") or ""
        return open_image(self.tars.read(shard, image_member)), raw.strip()

    def where(self, index: int) -> str:
        i, image_member, _ = self.samples[index]
        sample = self.tars[i]
        return f"{image_member.name} (sample '{sample.key}' of {self.tars.shards[sample.shard]})"


class HFPairs(PairSource):
    """Any Hugging Face ``datasets`` dataset with an image column and a text column."""

    def __init__(self, dataset, image_column: str = "image", text_column: str = "text", name: str = "dataset"):
        missing = [c for c in (image_column, text_column) if c not in dataset.column_names]
        if missing:
            raise ValueError(f"{name}: missing column(s) {missing}; it has {dataset.column_names}")
        self.dataset, self.image_column, self.text_column, self.name = dataset, image_column, text_column, name

    def __len__(self) -> int:
        return len(self.dataset)

    def load(self, index: int) -> tuple[Image.Image, str]:
        row = self.dataset[index]
        text = row[self.text_column]
        return open_image(row[self.image_column]), str(text[0] if isinstance(text, list) else text)


def open_source(spec: str, strict: bool = False, skipped: SkipCounter | None = None) -> PairSource:
    """Open a data source from a command-line spec.

    Args:
        spec: ``path.jsonl``; ``shard.tar`` / a folder of shards / ``shards-*.tar`` / ``shards-{000..009}.tar``; or
            ``hf:<folder saved by save_to_disk or hub name>[:split]`` for a `datasets` dataset.
    """
    if spec.startswith("hf:"):
        import datasets

        target, _, split = spec[3:].partition(":")
        if os.path.isdir(target):
            ds = datasets.load_from_disk(target)
        else:
            ds = datasets.load_dataset(target)
        if isinstance(ds, datasets.DatasetDict):
            split = split or ("train" if "train" in ds else next(iter(ds)))
            ds = ds[split]
        return HFPairs(ds, name=spec)
    path = Path(spec)
    if path.suffix == ".jsonl":
        return JsonlPairs(path, strict=strict, skipped=skipped)
    if is_shard_spec(spec):
        return TarPairs(spec, strict=strict, skipped=skipped)
    raise ValueError(f"unknown data source '{spec}': expected a .jsonl file, .tar shard(s), or hf:<dataset>")
