"""Step-level checkpoints shared by every training loop in the suite.

A checkpoint is a folder ``<run>/checkpoints/step_<N>/`` written with ``outputs.atomic_save_dir`` (built in a
temporary sibling, put in place once complete), so a crash never leaves a half-written ``step_<N>``: resume
always finds a whole one, and the temporaries a kill leaves are removed at the next start.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

__all__ = ["checkpoint_dir", "latest_checkpoint", "prune_checkpoints"]

_STEP_RE = re.compile(r"^step_(\d+)$")


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:08d}"


def _steps(run_dir: str | Path) -> list[tuple[int, Path]]:
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_RE.match(p.name)) and p.is_dir()]
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint folder of a run, or None."""
    steps = _steps(run_dir)
    return steps[-1][1] if steps else None


def prune_checkpoints(run_dir: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (keep <= 0 keeps everything)."""
    if keep <= 0:
        return
    for _, path in _steps(run_dir)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)
