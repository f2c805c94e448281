"""Random-access record stores: JSON Lines files, WebDataset tar shards and Hugging Face ``datasets``.

A store is a list of raw records (dicts) plus a way to fetch the media they name. Media references come in
three shapes and ``MediaRef`` unifies them: a path relative to the JSONL file (docs/formats.md), the name of a
member of a WebDataset tar (``<key>.png``), or an object a ``datasets`` column already decoded (PIL image, or
``{"bytes", "path"}`` for undecoded image columns). Random access (not streaming) keeps resume exact and lets
every process pick its own shard of each global batch.
"""

from __future__ import annotations

import glob
import os
import re
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contrastive_encoder.shared.records import SkipCounter, read_jsonl, resolve_media_path

__all__ = ["HFStore", "JsonlStore", "MediaRef", "RecordStore", "TarStore", "expand_shards", "open_store"]


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


_BRACE_RE = re.compile(r"\{(\d+)\.\.(\d+)\}")


def expand_shards(spec: str | Sequence[str]) -> list[Path]:
    """Expand WebDataset shard specs: ``shards/{000..009}.tar``, globs, comma lists, or a folder of tars."""
    specs = [spec] if isinstance(spec, (str, Path)) else list(spec)
    out: list[Path] = []
    for s in specs:
        for part in str(s).split(","):
            m = _BRACE_RE.search(part)
            if m:
                lo, hi = m.group(1), m.group(2)
                width = len(lo)
                for k in range(int(lo), int(hi) + 1):
                    out.append(Path(part[: m.start()] + str(k).zfill(width) + part[m.end():]))
            elif Path(part).is_dir():
                out.extend(sorted(Path(part).glob("*.tar")))
            elif any(c in part for c in "*?["):
                out.extend(Path(p) for p in sorted(glob.glob(part)))
            else:
                out.append(Path(part))
    missing = [str(p) for p in out if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"WebDataset shard(s) not found: {', '.join(missing[:5])}")
    if not out:
        raise FileNotFoundError(f"no WebDataset shards match {spec!r}")
    return out


def _split_key(name: str) -> tuple[str, str]:
    # WebDataset convention: the key is the path up to the first dot of the basename.
    d, base = os.path.split(name)
    stem, _, ext = base.partition(".")
    return (f"{d}/{stem}" if d else stem), ext.lower()


class TarStore(RecordStore):
    """WebDataset shards read with the standard library: one record per key, values are member names.

    A record maps each extension to its member (``{"png": ..., "txt": ...}``); text-like members
    (``txt``, ``json``, ``cls``) are decoded when the record is read, media members when the media is fetched.
    """

    TEXT_EXTS = ("txt", "text", "caption", "json", "cls")

    def __init__(self, spec: str | Sequence[str], strict: bool = False, skipped: SkipCounter | None = None):
        self.shards = expand_shards(spec)
        self.keys: list[tuple[int, str, dict[str, str]]] = []
        self._handles: dict[int, tarfile.TarFile] = {}
        self._pid = os.getpid()
        skipped = skipped if skipped is not None else SkipCounter()
        for si, shard in enumerate(self.shards):
            try:
                with tarfile.open(shard) as tf:
                    groups: dict[str, dict[str, str]] = {}
                    for m in tf.getmembers():
                        if m.isfile():
                            key, ext = _split_key(m.name)
                            groups.setdefault(key, {})[ext] = m.name
            except (tarfile.TarError, OSError) as e:
                skipped.skip(f"unreadable tar shard ({e})", str(shard), strict)
                continue
            self.keys.extend((si, k, g) for k, g in groups.items())

    def _tar(self, si: int) -> tarfile.TarFile:
        if os.getpid() != self._pid:  # DataLoader workers must not share file offsets with the parent
            self._handles, self._pid = {}, os.getpid()
        if si not in self._handles:
            self._handles[si] = tarfile.open(self.shards[si])
        return self._handles[si]

    def read_member(self, si: int, name: str) -> bytes:
        fh = self._tar(si).extractfile(name)
        if fh is None:
            raise KeyError(name)
        return fh.read()

    def __len__(self) -> int:
        return len(self.keys)

    def where(self, i: int) -> str:
        si, key, _ = self.keys[i]
        return f"{self.shards[si]}:{key}"

    def record(self, i: int) -> dict[str, Any]:
        import json

        si, key, group = self.keys[i]
        rec: dict[str, Any] = {"__members__": group}
        for ext, name in group.items():
            if ext in self.TEXT_EXTS:
                data = self.read_member(si, name)
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
        si, key, group = self.keys[i]
        if not isinstance(ref, str) or not ref:
            raise ValueError(f"media entry {short_repr(ref)} is not a member name (expected a non-empty string)")
        name = group.get(ref, ref)
        where = f"{self.shards[si]}:{name}"
        try:
            return MediaRef(self.read_member(si, name), where)
        except KeyError:
            # interleaved records may name members relative to the sample's folder
            d = os.path.dirname(key)
            alt = f"{d}/{name}" if d else name
            try:
                return MediaRef(self.read_member(si, alt), f"{self.shards[si]}:{alt}")
            except KeyError:
                return MediaRef(None, f"{where} (member not in shard)")


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
    if ".tar" in s or _BRACE_RE.search(s) or any(c in s for c in "*?[") or p.is_dir():
        return TarStore(s, strict=strict, skipped=skipped)
    raise FileNotFoundError(f"data source {s!r}: expected a .jsonl file, WebDataset .tar shard(s), or a "
                            "datasets folder written by save_to_disk")
