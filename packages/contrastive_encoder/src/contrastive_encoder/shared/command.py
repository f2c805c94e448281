"""How a training command ends, the same in every stage: 0 on success, 2 and one line naming the bad input
(no traceback), ``EXIT_NONFINITE`` (3) and one line naming the last good checkpoint when a NaN/inf stopped it."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from .nonfinite import EXIT_NONFINITE, NonFiniteLossError

__all__ = ["run_command"]


def run_command(name: str | Callable[[Any], str], parse: Callable[[], Any], run: Callable[[Any], Any]) -> int:
    """``run(parse())`` with the suite's exit codes.

    Args:
        name: the command as the user typed it (``flamingo train``), the start of every error line; or a function
            of the parsed arguments giving it (a sub-command).
        parse: parses the command line; argparse's own exit (a one-line error, or ``--help``) returns its code.
        run: does the work; a ``FileNotFoundError`` or ``ValueError`` (``BadSampleError``, ``PretrainedError``
            and the other input errors are ValueErrors) is a bad input.
    """
    try:
        args = parse()
    except SystemExit as e:
        return int(e.code or 0)
    name = name(args) if callable(name) else name
    try:
        code = run(args)  # a training run returns its results, a sub-command its exit code
        return code if isinstance(code, int) else 0
    except NonFiniteLossError as e:
        print(f"{name}: {e}", file=sys.stderr)
        return EXIT_NONFINITE
    except (FileNotFoundError, ValueError) as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        return 2
