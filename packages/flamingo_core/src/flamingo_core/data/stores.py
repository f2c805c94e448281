"""Random-access record stores: JSON Lines files, WebDataset tar shards and Hugging Face ``datasets``.

A store is a list of raw records (dicts) plus a way to fetch the media they name. Media references come in
three shapes and ``MediaRef`` unifies them: a path relative to the JSONL file (docs/formats.md), the name of a
member of a WebDataset tar (``<key>.png``), or an object a ``datasets`` column already decoded (PIL image, or
``{"bytes", "path"}`` for undecoded image columns). Random access (not streaming) keeps resume exact and lets
every process pick its own shard of each global batch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contrastive_encoder.shared.records import SkipCounter, read_jsonl, resolve_media_path
from contrastive_encoder.shared.shards import TarShards, is_shard_spec

__all__ = ["HFStore", "JsonlStore", "MediaRef", "RecordStore", "TarStore", "open_store"]


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

    def media(self, i: int, ref: Any) -> MediaRef:
        raise NotImplementedError


class JsonlStore(RecordStore):
    """A JSON Lines file as written by the ShapesWorld generator; media paths are relative to its folder."""

    def __init__(self, path: str | Path, required: Sequence[str] = (), strict: bool = False,
                 skipped: SkipCounter | None = None):
        self.path = Path(path)
        self.base = self.path.parent
        self.records = list(read_jsonl(self.path, required=required, strict=strict, skipped=skipped))

    def __len__(self) -> int:
        return len(self.records)

    def record(self, i: int) -> dict[str, Any]:
        return self.records[i]

    def where(self, i: int) -> str:
        return f"{self.path} (record {i})"

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
    """A Hugging Face ``datasets.Dataset`` (or a folder written by ``save_to_disk``)."""

    def __init__(self, dataset: Any, name: str = "datasets"):
        if isinstance(dataset, (str, Path)):
            import datasets

            name = str(dataset)
            dataset = datasets.load_from_disk(str(dataset))
            if isinstance(dataset, datasets.DatasetDict):
                if "train" not in dataset:
                    raise ValueError(f"{name}: a DatasetDict needs a 'train' split, found {list(dataset)}")
                dataset = dataset["train"]
        self.dataset = dataset
        self.name = name

    def __len__(self) -> int:
        return len(self.dataset)

    def record(self, i: int) -> dict[str, Any]:
        return dict(self.dataset[int(i)])

    def where(self, i: int) -> str:
        return f"{self.name} (row {i})"

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
               skipped: SkipCounter | None = None) -> RecordStore:
    """Pick the store for a path: ``*.jsonl`` -> JSON Lines, ``*.tar`` / brace / glob / folder of tars ->
    WebDataset, a ``save_to_disk`` folder (or ``hf:<folder>``) or a ``datasets.Dataset`` -> HFStore."""
    if not isinstance(spec, (str, Path)):
        return HFStore(spec)
    s = str(spec)
    if s.startswith("hf:"):
        return HFStore(s[3:])
    p = Path(s)
    if p.suffix == ".jsonl" or p.suffix == ".json":
        return JsonlStore(p, required=required, strict=strict, skipped=skipped)
    if p.is_dir() and ((p / "dataset_info.json").exists() or (p / "state.json").exists()
                       or (p / "dataset_dict.json").exists()):
        return HFStore(p)
    if is_shard_spec(s):
        return TarStore(s, strict=strict, skipped=skipped)
    raise FileNotFoundError(f"data source {s!r}: expected a .jsonl file, WebDataset .tar shard(s), or a "
                            "datasets folder written by save_to_disk")
