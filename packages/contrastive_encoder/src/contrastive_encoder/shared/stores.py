"""Random-access record stores, the one reader family of both training stages: JSON Lines files, WebDataset
tar shards (``shared.shards``) and Hugging Face ``datasets``.

A store is a list of raw records (dicts) plus a way to fetch the media they name. Media references come in
three shapes and ``MediaRef`` unifies them: a path relative to the JSONL file (docs/formats.md), the name of a
member of a WebDataset tar (``<key>.png``), or an object a ``datasets`` column already decoded (PIL image, or
``{"bytes", "path"}`` for undecoded image columns). Random access (not streaming) keeps resume exact and lets
every process pick its own shard of each global batch.

Which field of a record holds what is written once here too: ``IMAGE_KEYS``, ``TEXT_KEYS`` and ``VIDEO_KEYS``,
the first present one wins (``first_field``), so a JSON Lines row, a tar sample (``0001.png`` + ``0001.txt``) and
a ``datasets`` row name their image and caption the same way in stage 1 and stage 2.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .media import IMAGE_SUFFIXES
from .records import SkipCounter, TypeSpec, read_jsonl, resolve_media_path
from .shards import TarShards, is_shard_spec

__all__ = ["IMAGE_KEYS", "TEXT_KEYS", "VIDEO_KEYS", "HFStore", "JsonlStore", "MediaRef", "RecordStore", "TarStore",
           "first_field", "open_store", "short_repr"]

IMAGE_KEYS = ("image", *(suffix[1:] for suffix in IMAGE_SUFFIXES))  # a column / JSON key, or a tar member's extension
TEXT_KEYS = ("text", "caption", "txt")
VIDEO_KEYS = ("video", "mp4", "frames")


def first_field(record: Mapping[str, Any], keys: Sequence[str]) -> tuple[str | None, Any]:
    """The first of ``keys`` with a value (not null, not a blank string): ``(key, value)``, or ``(None, None)``."""
    for k in keys:
        v = record.get(k)
        if v is not None and not (isinstance(v, str) and not v.strip()):
            return k, v
    return None, None


@dataclass
class MediaRef:
    """Where a sample's image or video lives; ``value`` is a Path, tar bytes, or a decoded object."""

    value: Any
    where: str  # human-readable location for error messages


class RecordStore:
    """Base class: ``len(store)``, ``store.record(i)`` and ``store.media(i, ref)``.

    ``media`` raises ``ValueError`` for a reference of the wrong type (``"image": 123``: a bad record) and
    returns ``MediaRef(None, where)`` for one that names nothing (missing media); ``record`` raises
    ``ValueError`` for a record it cannot decode. The sources skip and count both (or raise when strict).
    """

    def __len__(self) -> int:
        raise NotImplementedError

    def record(self, i: int) -> dict[str, Any]:
        raise NotImplementedError

    def where(self, i: int) -> str:
        raise NotImplementedError

    def fields(self, i: int) -> set[str]:
        """The keys ``record(i)`` has, without decoding the record (indexing a store reads no member or image)."""
        raise NotImplementedError

    def media(self, i: int, ref: Any) -> MediaRef:
        raise NotImplementedError


class JsonlStore(RecordStore):
    """A JSON Lines file (docs/formats.md); media paths are relative to its folder. ``required`` and ``types`` are
    ``read_jsonl``'s row checks: a row that fails them is skipped and counted (raises when strict)."""

    def __init__(self, path: str | Path, required: Sequence[str] = (), strict: bool = False,
                 skipped: SkipCounter | None = None, types: Mapping[str, TypeSpec] | None = None):
        self.path = Path(path)
        self.base = self.path.parent
        rows = list(read_jsonl(self.path, required, strict, skipped, types, line_numbers=True))
        self.lines = [lineno for lineno, _ in rows]  # where(i) names the file's line, not the i-th kept row
        self.records = [record for _, record in rows]

    def __len__(self) -> int:
        return len(self.records)

    def record(self, i: int) -> dict[str, Any]:
        return self.records[i]

    def where(self, i: int) -> str:
        return f"{self.path}:{self.lines[i]}"

    def fields(self, i: int) -> set[str]:
        return set(self.records[i])

    def media(self, i: int, ref: Any) -> MediaRef:
        if not isinstance(ref, str) or not ref:
            raise ValueError(f"media entry {short_repr(ref)} is not a path (expected a non-empty string)")
        path = resolve_media_path(ref, self.base)
        return MediaRef(path, str(path))


def short_repr(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


class TarStore(RecordStore):
    """WebDataset shards (``contrastive_encoder.shared.shards``): one record per sample key.

    A record maps each extension to its member name (``{"png": ..., "txt": ...}``); text-like members
    (``txt``, ``json``, ``cls``) are decoded when the record is read, media members when the media is fetched.
    """

    TEXT_EXTS = ("txt", "text", "caption", "json", "cls")

    def __init__(self, spec: str | Sequence[str], strict: bool = False, skipped: SkipCounter | None = None):
        self.tars = TarShards(spec, strict=strict, skipped=skipped)
        self.shards = self.tars.shards

    def __len__(self) -> int:
        return len(self.tars)

    def where(self, i: int) -> str:
        return self.tars.where(i)

    def fields(self, i: int) -> set[str]:
        # a text member becomes the record's "text"; a json member may add any key, which only reading tells
        exts = set(self.tars[i].members)
        return (exts - set(self.TEXT_EXTS)) | ({"text"} if exts & set(self.TEXT_EXTS) - {"json"} else set()) | (
            {"json"} & exts)

    def record(self, i: int) -> dict[str, Any]:
        import json

        sample = self.tars[i]
        rec: dict[str, Any] = {"__members__": {ext: m.name for ext, m in sample.members.items()}}
        for ext, member in sample.members.items():
            name = member.name
            if ext in self.TEXT_EXTS:
                data = self.tars.read(sample.shard, member)
                try:
                    raw = data.decode("utf-8")
                    obj = json.loads(raw) if ext == "json" else None
                except UnicodeDecodeError as e:
                    raise ValueError(f"member {name} is not UTF-8 text (byte {e.start})") from e
                except json.JSONDecodeError as e:
                    raise ValueError(f"member {name} is not valid JSON ({e.msg})") from e
                if ext == "json":
                    if not isinstance(obj, dict):
                        raise ValueError(f"member {name} holds {type(obj).__name__}, expected a JSON object")
                    rec.update(obj)
                    continue
                rec.setdefault("text", raw.strip())
            else:
                rec.setdefault(ext, name)  # a media member, fetched lazily
        return rec

    def media(self, i: int, ref: Any) -> MediaRef:
        sample = self.tars[i]
        shard = self.shards[sample.shard]
        if not isinstance(ref, str) or not ref:
            raise ValueError(f"media entry {short_repr(ref)} is not a member name (expected a non-empty string)")
        member = sample.members.get(ref)
        name = member.name if member is not None else ref
        try:
            return MediaRef(self.tars.read(sample.shard, member if member is not None else name), f"{shard}:{name}")
        except KeyError:
            # interleaved records may name members relative to the sample's folder
            d = os.path.dirname(sample.key)
            alt = f"{d}/{name}" if d else name
            try:
                return MediaRef(self.tars.read(sample.shard, alt), f"{shard}:{alt}")
            except KeyError:
                return MediaRef(None, f"{shard}:{name} (member not in shard)")


class HFStore(RecordStore):
    """A Hugging Face ``datasets.Dataset``: given, or named as a folder written by ``save_to_disk`` or a dataset
    the ``datasets`` cache holds (``name[:split]``; the split defaults to ``train``)."""

    def __init__(self, dataset: Any, name: str = "datasets"):
        if isinstance(dataset, (str, Path)):
            import datasets

            name = str(dataset)
            target, _, split = name.partition(":") if not os.path.isdir(name) else (name, "", "")
            dataset = datasets.load_from_disk(target) if os.path.isdir(target) else datasets.load_dataset(target)
            if isinstance(dataset, datasets.DatasetDict):
                split = split or "train"
                if split not in dataset:
                    raise ValueError(f"{name}: no split '{split}' in the dataset, it has {list(dataset)}")
                dataset = dataset[split]
        self.dataset = dataset
        self.name = name

    def __len__(self) -> int:
        return len(self.dataset)

    def record(self, i: int) -> dict[str, Any]:
        return dict(self.dataset[int(i)])

    def where(self, i: int) -> str:
        return f"{self.name} (row {i})"

    def fields(self, i: int) -> set[str]:
        return set(self.dataset.column_names) if hasattr(self.dataset, "column_names") else set(self.dataset[int(i)])

    def media(self, i: int, ref: Any) -> MediaRef:
        if isinstance(ref, dict):  # undecoded Image feature
            if ref.get("bytes"):
                return MediaRef(ref["bytes"], f"{self.where(i)}: {ref.get('path') or 'bytes'}")
            ref = ref.get("path")
        if isinstance(ref, str) and ref:
            return MediaRef(Path(ref), ref)
        if isinstance(ref, bytes) or hasattr(ref, "convert"):  # encoded bytes, or a decoded PIL image
            return MediaRef(ref, self.where(i))
        raise ValueError(f"media entry {short_repr(ref)} is not an image, its bytes or a path")


def open_store(spec: str | Path | Any, required: Sequence[str] = (), strict: bool = False,
               skipped: SkipCounter | None = None, types: Mapping[str, TypeSpec] | None = None) -> RecordStore:
    """Pick the store for a path: ``*.jsonl`` -> JSON Lines, ``*.tar`` / brace / glob / folder of tars ->
    WebDataset, a ``save_to_disk`` folder, ``hf:<folder or dataset name>[:split]`` or a ``datasets.Dataset`` ->
    HFStore. ``types``: JSON Lines row checks (``read_jsonl``)."""
    if not isinstance(spec, (str, Path)):
        return HFStore(spec)
    s = str(spec)
    if s.startswith("hf:"):
        return HFStore(s[3:])
    p = Path(s)
    if p.suffix == ".jsonl" or p.suffix == ".json":
        return JsonlStore(p, required=required, strict=strict, skipped=skipped, types=types)
    if p.is_dir() and ((p / "dataset_info.json").exists() or (p / "state.json").exists()
                       or (p / "dataset_dict.json").exists()):
        return HFStore(p)
    if is_shard_spec(s):
        return TarStore(s, strict=strict, skipped=skipped)
    raise ValueError(f"unknown data source {s!r}: expected a .jsonl file, WebDataset .tar shard(s), a datasets "
                     "folder written by save_to_disk, or hf:<dataset>")
