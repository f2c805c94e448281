"""Reading the suite's saved files (JSON configs, safetensors weights) with one-line errors that name the file.

A truncated download, a half-copied folder or a file of the wrong kind is a user's problem to fix, not a
traceback: ``CorruptFileError`` says which file and what was wrong with it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["CorruptFileError", "first_line", "load_weights", "read_json"]


class CorruptFileError(ValueError):
    """A saved file that cannot be read; the message names it."""


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type when it has none): torch's and the hub's errors run
    over many lines, a one-line error quotes only this."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def read_json(path: str | Path, expect: type = dict) -> Any:
    """Parse a JSON file, naming it when it is missing, not UTF-8, not JSON, or not a JSON ``expect``."""
    path = Path(path)
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{path}: no such file") from e
    except UnicodeDecodeError as e:
        raise CorruptFileError(f"{path}: not UTF-8 text (byte {e.start})") from e
    except json.JSONDecodeError as e:
        raise CorruptFileError(f"{path}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from e
    except OSError as e:
        raise CorruptFileError(f"{path}: cannot read it ({e.strerror or e})") from e
    if not isinstance(data, expect):
        raise CorruptFileError(f"{path}: expected a JSON {expect.__name__}, got {type(data).__name__}")
    return data


def load_weights(path: str | Path, device: str = "cpu") -> dict:
    """Load a safetensors file, naming it when it is missing, truncated or not safetensors."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CorruptFileError(f"{path}: not a readable safetensors file, truncated or corrupt ({first_line(e)})") from e
