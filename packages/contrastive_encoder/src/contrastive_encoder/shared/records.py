"""JSON Lines reading with the suite's bad-input policy: bad rows are skipped and counted, or raise in strict mode."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = ["BadSampleError", "SkipCounter", "read_jsonl", "resolve_media_path"]

_WORKER_PREFIX = "Caught "
_WORKER_MARK = "DataLoader worker process"


class BadSampleError(ValueError):
    """A corrupt or missing sample in strict mode; the message names the file and the row.

    A DataLoader worker re-raises it in the main process as ``BadSampleError("Caught BadSampleError in
    DataLoader worker process 0.\\nOriginal Traceback ...")``; the constructor keeps the original one-line
    message, so the user reads the same error with ``--workers 1`` as with ``--workers 0``.
    """

    def __init__(self, message: str = "", *args: Any):
        if isinstance(message, str) and message.startswith(_WORKER_PREFIX) and _WORKER_MARK in message:
            last = next((ln for ln in reversed(message.splitlines()) if ln.strip()), message)
            name, sep, original = last.partition(": ")  # "package.module.BadSampleError: the message"
            message = original if sep and name.rsplit(".", 1)[-1] == type(self).__name__ else last
        super().__init__(message, *args)


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


TypeSpec = type | list | tuple  # a type, [type] (a list of them), or a tuple of alternatives


def _matches(value: Any, spec: TypeSpec) -> bool:
    if isinstance(spec, tuple):
        return any(_matches(value, s) for s in spec)
    if isinstance(spec, list):
        return isinstance(value, list) and all(_matches(v, spec[0]) for v in value)
    return isinstance(value, spec) and not (isinstance(value, bool) and spec is not bool)


def _describe(spec: TypeSpec) -> str:
    if isinstance(spec, tuple):
        return " or ".join(_describe(s) for s in spec)
    if isinstance(spec, list):
        return f"a list of {_describe(spec[0]).split(' ', 1)[1]}s"
    return {"str": "a string", "list": "a list", "dict": "an object", "int": "an integer", "float": "a number",
            "bool": "a boolean"}.get(spec.__name__, f"a {spec.__name__}")


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        inner = sorted({_json_type(v) for v in value} - {"a string"}) if value else []
        return f"a list holding {inner[0]}" if inner else "a list"
    return _describe(type(value))


def read_jsonl(
    path: str | Path,
    required: Iterable[str] = (),
    strict: bool = False,
    skipped: SkipCounter | None = None,
    types: Mapping[str, TypeSpec] | None = None,
    line_numbers: bool = False,
) -> Iterator[dict[str, Any]] | Iterator[tuple[int, dict[str, Any]]]:
    """Yield the JSON objects of a JSON Lines file.

    Args:
        path: the file.
        required: keys every record must have; a record without one is skipped (or raises when strict).
        strict: raise BadSampleError on the first bad row instead of skipping it.
        skipped: a SkipCounter that collects the reasons rows were skipped.
        types: the JSON types some keys must have when present, e.g. ``{"image": str, "text": (str, [str])}``
            (``[str]``: a list of strings); a media path given as a number or a caption given as an object is a
            bad row, not a crash or a caption reading ``{'a': 1}`` later.
        line_numbers: yield ``(line number, record)`` pairs (1-based), for messages that name the row.

    Raises:
        FileNotFoundError: the file does not exist (named in the message).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"JSON Lines file not found: {path}")
    skipped = skipped if skipped is not None else SkipCounter()
    required = tuple(required)
    types = dict(types or {})
    # read bytes and decode line by line: one line in another encoding is one bad row, not a failed file
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")  # a BOM may start the file
            except UnicodeDecodeError as e:
                skipped.skip(f"not UTF-8 text (byte {e.start})", where, strict)
                continue
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
            wrong = [k for k, spec in types.items() if record.get(k) is not None and not _matches(record[k], spec)]
            if wrong:
                k = wrong[0]
                skipped.skip(f"'{k}' is {_json_type(record[k])}, expected {_describe(types[k])}", where, strict)
                continue
            yield (lineno, record) if line_numbers else record
