"""WebDataset tar shards, indexed once for random access: the one tar reader of every stage.

A sample is the set of members sharing a key, and the key follows WebDataset's rule (``base_plus_ext``): the
member path up to the first dot of its basename, so ``a.b/0001.jpg`` + ``a.b/0001.txt`` are sample ``a.b/0001``
(extensions ``jpg`` and ``txt``, lower-cased) and ``0001.seg.png`` is sample ``0001`` with extension ``seg.png``.
A member whose basename has no dot belongs to no sample. Unlike WebDataset's streaming reader, members of one key
need not be adjacent in the shard (the index groups the whole shard).

The shards are read with the standard library's ``tarfile`` (the ``webdataset`` package is not a dependency):
training needs random access, not streaming, so resume is exact and every process picks its own part of each
global batch. A shard that cannot be opened is skipped and counted, or raises ``BadSampleError`` naming it in
strict mode.
"""

from __future__ import annotations

import glob
import os
import re
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .records import SkipCounter

__all__ = ["ShardSample", "TarShards", "expand_shards", "is_shard_spec", "sample_key"]

_BRACE_RE = re.compile(r"\{(\d+)\.\.(\d+)\}")
_KEY_RE = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")  # WebDataset's base_plus_ext


def sample_key(member: str) -> tuple[str, str] | None:
    """``(key, extension)`` of a tar member by WebDataset's rule, or None for a basename without a dot."""
    m = _KEY_RE.match(member)
    return (m.group(1), m.group(2).lower()) if m else None


def is_shard_spec(spec: str) -> bool:
    """Whether a data spec names tar shards: a ``.tar`` file, a brace range, a glob or a folder."""
    return ".tar" in spec or bool(_BRACE_RE.search(spec)) or any(c in spec for c in "*?[") or Path(spec).is_dir()


def expand_shards(spec: str | Path | Sequence[str | Path]) -> list[Path]:
    """Expand shard specs: ``shards/{000..009}.tar``, globs, comma lists, a folder of ``*.tar`` or one file.

    Raises:
        FileNotFoundError: a named shard does not exist, or nothing matches (the message names them).
    """
    specs = [spec] if isinstance(spec, (str, Path)) else list(spec)
    out: list[Path] = []
    for s in specs:
        for part in str(s).split(","):
            m = _BRACE_RE.search(part)
            if m:
                lo, hi = m.group(1), m.group(2)
                for k in range(int(lo), int(hi) + 1):
                    out.append(Path(part[: m.start()] + str(k).zfill(len(lo)) + part[m.end():]))
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
        raise FileNotFoundError(f"no WebDataset shards match {str(spec)!r} (expected a .tar file, a folder of "
                                "them, a glob or a {000..009} range)")
    return out


@dataclass(frozen=True)
class ShardSample:
    """One sample: its shard (index into ``TarShards.shards``), key and ``{extension: member}``."""

    shard: int
    key: str
    members: dict[str, tarfile.TarInfo]


class TarShards:
    """The samples of a set of WebDataset shards, in shard order then first-appearance order of their keys.

    Args:
        spec: what ``expand_shards`` takes.
        strict: raise ``BadSampleError`` naming the first unreadable shard instead of skipping it.
        skipped: counts the shards skipped (reason ``unreadable tar shard``).
    """

    def __init__(self, spec: str | Path | Sequence[str | Path], strict: bool = False,
                 skipped: SkipCounter | None = None):
        self.shards = expand_shards(spec)
        self.samples: list[ShardSample] = []
        skipped = skipped if skipped is not None else SkipCounter()
        for si, shard in enumerate(self.shards):
            try:
                with tarfile.open(shard) as tar:
                    groups: dict[str, dict[str, tarfile.TarInfo]] = {}
                    for member in tar.getmembers():
                        split = sample_key(member.name) if member.isfile() else None
                        if split is not None:
                            groups.setdefault(split[0], {})[split[1]] = member
            except (tarfile.TarError, OSError) as e:
                skipped.skip(f"unreadable tar shard ({e})", str(shard), strict)
                continue
            self.samples.extend(ShardSample(si, key, group) for key, group in groups.items())
        self._handles: dict[int, tarfile.TarFile] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> ShardSample:
        return self.samples[i]

    def _tar(self, si: int) -> tarfile.TarFile:
        if os.getpid() != self._pid:  # a DataLoader worker must not share the parent's file offsets
            self._handles, self._pid = {}, os.getpid()
        if si not in self._handles:
            self._handles[si] = tarfile.open(self.shards[si])
        return self._handles[si]

    def read(self, si: int, member: tarfile.TarInfo | str) -> bytes:
        """The bytes of a member (an indexed ``TarInfo``, or a member name) of shard ``si``.

        Raises:
            KeyError: no member of that name in the shard.
        """
        fh = self._tar(si).extractfile(member)
        if fh is None:
            raise KeyError(member if isinstance(member, str) else member.name)
        return fh.read()

    def where(self, i: int) -> str:
        s = self.samples[i]
        return f"{self.shards[s.shard]}:{s.key}"

    def __getstate__(self):  # open tar handles do not pickle (DataLoader workers started by spawn)
        state = dict(self.__dict__)
        state["_handles"] = {}
        return state
