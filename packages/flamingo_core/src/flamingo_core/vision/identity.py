"""Identifiers of frozen towers: RICES caches support-set features under a tower's ``identifier``, so it must
name the weights (same weights -> same string from any folder or working directory; other weights -> another)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

__all__ = ["digest", "weights_digest"]

_CHUNK = 1 << 20


def digest(*parts: object) -> str:
    """12 hex digits of SHA-1 over ``parts`` (strings, or JSON-able objects dumped with sorted keys)."""
    h = hashlib.sha1()
    for part in parts:
        h.update((part if isinstance(part, str) else json.dumps(part, sort_keys=True, default=str)).encode())
        h.update(b"\0")
    return h.hexdigest()[:12]


def weights_digest(files: Iterable[str | Path], *extra: object) -> str:
    """A cheap content fingerprint of weight files: each file's size, first and last MiB (as stage 1's exports
    are fingerprinted), plus ``extra``. File names and locations do not enter it."""
    h = hashlib.sha1(digest(*extra).encode())
    for path in files:
        size = Path(path).stat().st_size
        h.update(str(size).encode())
        with open(path, "rb") as fh:
            h.update(fh.read(_CHUNK))
            fh.seek(max(0, size - _CHUNK))
            h.update(fh.read())
    return h.hexdigest()[:12]
