"""Argument types shared by the suite's command lines: a value out of range is refused by the parser itself
(one line: ``error: argument --num-beams: expected an integer >= 1, got 0``, exit 2) instead of surfacing later
as a traceback or silently meaning something else."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = [
    "OneLineParser",
    "at_least", "fraction", "non_negative_float", "non_negative_int", "positive_float", "positive_fraction",
    "positive_int",
]


def at_least(minimum: float, kind: type = int) -> Callable[[str], float]:
    """An argparse ``type`` accepting ``kind`` values >= ``minimum``."""
    noun = "an integer" if kind is int else "a number"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {noun} >= {minimum:g}, got {text!r}") from None
        if not (value >= minimum) or (kind is float and not math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"expected {noun} >= {minimum:g}, got {text}")
        return value

    parse.__name__ = f"{kind.__name__}>={minimum:g}"
    return parse


positive_int = at_least(1, int)
non_negative_int = at_least(0, int)
non_negative_float = at_least(0.0, float)


def positive_float(text: str) -> float:
    """An argparse ``type`` accepting finite numbers > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def fraction(text: str) -> float:
    """An argparse ``type`` accepting a probability in [0, 1]."""
    return _in_unit_interval(text, low_open=False)


def positive_fraction(text: str) -> float:
    """An argparse ``type`` accepting a number in (0, 1] (e.g. nucleus sampling's top-p)."""
    return _in_unit_interval(text, low_open=True)


def _in_unit_interval(text: str, low_open: bool) -> float:
    span = "(0, 1]" if low_open else "[0, 1]"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in {span}, got {text!r}") from None
    if not ((0.0 < value) if low_open else (0.0 <= value)) or not value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in {span}, got {text}")
    return value


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (``prog: error: argument --num-beams: ...``), without the
    usage block argparse prints first (``--help`` shows it), so every bad input reads the same in every CLI.

    Subparsers made with ``add_subparsers`` inherit the class.
    """

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")
