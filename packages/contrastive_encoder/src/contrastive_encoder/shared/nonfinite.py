"""The non-finite guard shared by both trainers: a NaN/inf loss, gradient norm or weight stops the run before it
is written anywhere, so the newest checkpoint is always a good one (and checkpoint rotation never removes the
good ones in favour of NaN weights).

The command lines turn ``NonFiniteLossError`` into exit code ``EXIT_NONFINITE`` (3) and one line naming the step
and the last good checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch

__all__ = ["EXIT_NONFINITE", "NonFiniteLossError", "check_finite", "check_finite_weights"]

EXIT_NONFINITE = 3


class NonFiniteLossError(RuntimeError):
    """A step's loss, gradient norm or weights were NaN/inf; the message names the last good checkpoint."""


def _last_good(run_dir: str | Path) -> str:
    from .checkpoint import latest_checkpoint

    ckpt = latest_checkpoint(run_dir)
    return f"last good checkpoint: {ckpt} (resume with --resume latest)" if ckpt else "no checkpoint was written"


def check_finite(step: int, losses: Mapping[str, float], grad_norm: float, run_dir: str | Path) -> None:
    """Raise NonFiniteLossError when any loss or the gradient norm of optimizer step ``step`` is not finite.

    Call it after the backward pass and before ``optimizer.step()``: the update is then never applied.
    """
    values = [*losses.values(), grad_norm]
    if all(math.isfinite(v) for v in values):
        return
    parts = ", ".join(f"{n} {v:.4g}" for n, v in losses.items())
    raise NonFiniteLossError(f"non-finite loss at step {step} ({parts}; grad norm {grad_norm:.4g}): stopped "
                             f"before the update; {_last_good(run_dir)}")


def check_finite_weights(step: int, params: Iterable[torch.Tensor], run_dir: str | Path,
                         reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
    """Raise NonFiniteLossError when a weight is not finite (an update that overflowed): call before saving.

    Collective when ``reduce`` is given (sums a flag over processes, for sharded parameters): every process
    then raises together.
    """
    params = list(params)
    with torch.no_grad():
        bad = torch.tensor(float(any(not bool(torch.isfinite(p).all()) for p in params)))
    if reduce is not None:
        bad = reduce(bad.to(params[0].device if params else "cpu")).cpu()
    if float(bad) > 0:
        raise NonFiniteLossError(f"non-finite weights after step {step} (the update overflowed; lower --lr or "
                                 f"enable --grad-clip): not saved; {_last_good(run_dir)}")
