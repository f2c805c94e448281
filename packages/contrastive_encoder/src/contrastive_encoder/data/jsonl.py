"""JSON Lines reading with the suite's bad-input policy: bad rows are skipped and counted, or raise in strict mode."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["BadSampleError", "SkipCounter", "read_jsonl", "resolve_media_path"]


class BadSampleError(ValueError):
    """A corrupt or missing sample in strict mode; the message names the file and the row."""


class SkipCounter(Counter):
    """Counts skipped samples by reason; ``report()`` gives a one-line summary."""

    def skip(self, reason: str, where: str, strict: bool) -> None:
        if strict:
            raise BadSampleError(f"{where}: {reason} (strict mode; drop --strict to skip and count such samples)")
        self[reason] += 1

    def report(self) -> str:
        total = sum(self.values())
        if not total:
            return "skipped 0 samples"
        parts = ", ".join(f"{n} {reason}" for reason, n in self.most_common())
        return f"skipped {total} samples ({parts})"


def resolve_media_path(value: str, base: Path) -> Path:
    """Media paths in a JSONL file are relative to the file's folder unless absolute."""
    p = Path(value)
    return p if p.is_absolute() else base / p


def read_jsonl(
    path: str | Path,
    required: Iterable[str] = (),
    strict: bool = False,
    skipped: SkipCounter | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield the JSON objects of a JSON Lines file.

    Args:
        path: the file.
        required: keys every record must have; a record without one is skipped (or raises when strict).
        strict: raise BadSampleError on the first bad row instead of skipping it.
        skipped: a SkipCounter that collects the reasons rows were skipped.

    Raises:
        FileNotFoundError: the file does not exist (named in the message).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"JSON Lines file not found: {path}")
    skipped = skipped if skipped is not None else SkipCounter()
    required = tuple(required)
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                skipped.skip(f"invalid JSON ({e.msg})", where, strict)
                continue
            if not isinstance(record, dict):
                skipped.skip("row is not a JSON object", where, strict)
                continue
            missing = [k for k in required if record.get(k) in (None, "")]
            if missing:
                skipped.skip(f"missing key(s) {missing}", where, strict)
                continue
            yield record
