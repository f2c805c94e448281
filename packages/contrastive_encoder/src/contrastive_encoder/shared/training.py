"""The trainer skeleton both stages run: the accelerator and its precision, the time budget, and the loop that
steps, logs, evaluates, checkpoints and stops (on ``max_steps``, on the time budget, or on a non-finite loss).

Each stage keeps what is its own - the model, the data, what one optimizer step computes, what a checkpoint and
an evaluation hold - and hands it to ``run_loop`` as functions. The loop owns the order of events, so both stages
log, evaluate, save and stop the same way::

    end = run_loop(LoopSettings(...), start_step, step=one_update, save=checkpoint, evaluate=held_out,
                   log=write_record, budget=TimeBudget(cfg.max_minutes), agree=any_process)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .nonfinite import NonFiniteLossError, check_finite

__all__ = [
    "LoopEnd",
    "LoopSettings",
    "StepLog",
    "TimeBudget",
    "any_process",
    "make_accelerator",
    "resolve_precision",
    "run_loop",
]


def resolve_precision(name: str, cpu: bool) -> str:
    """accelerate's ``mixed_precision`` for ``--precision auto | fp32 | bf16``: auto is bf16 autocast (parameters
    stay fp32) on a GPU that has bf16, fp32 elsewhere - on CPU bf16 autocast is slower than fp32."""
    if name == "auto":
        return "bf16" if not cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    try:
        return {"fp32": "no", "bf16": "bf16"}[name]
    except KeyError:
        raise ValueError(f"--precision {name!r}: expected auto, fp32 or bf16") from None


def make_accelerator(precision: str, cpu: bool, find_unused_parameters: bool = False):
    """An ``accelerate.Accelerator`` for one run. ``cpu`` (or no GPU) also sets up multi-process CPU runs
    (gloo): accelerate does that only when told cpu=True.

    accelerate keeps a process-wide singleton; a second run in the same process (tests, notebooks) may ask for
    another precision, so it is reset here (the distributed PartialState is kept)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import DistributedDataParallelKwargs

    AcceleratorState._reset_state()
    GradientState._reset_state()
    cpu = cpu or not torch.cuda.is_available()
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)] if find_unused_parameters else []
    return Accelerator(cpu=cpu, mixed_precision=resolve_precision(precision, cpu), kwargs_handlers=handlers)


def any_process(accelerator) -> Callable[[bool], bool]:
    """``run_loop``'s ``agree``: True on every process when it is True on any (an all-reduce; none with one
    process), so every process stops at the same step."""
    if accelerator.num_processes == 1:
        return bool

    def agree(mine: bool) -> bool:
        flag = torch.tensor(float(mine), device=accelerator.device)
        return bool(accelerator.reduce(flag, reduction="sum").item() > 0)

    return agree


class TimeBudget:
    """``--max-minutes``: wall-clock minutes of the training loop (steps, and the evaluations and checkpoints
    between them), counted from its first step; 0 = no limit. Loading models and the evaluations before the
    first and after the last step are outside it."""

    def __init__(self, minutes: float, clock: Callable[[], float] | None = None):
        if minutes < 0 or not math.isfinite(minutes):
            raise ValueError(f"--max-minutes {minutes}: expected a number >= 0 (0 = no limit)")
        self.minutes, self.t0 = float(minutes), None
        self.clock = clock or (lambda: time.monotonic())  # looked up at each call: tests move the clock

    def start(self) -> None:
        self.t0 = self.clock()

    @property
    def elapsed(self) -> float:
        """Seconds since ``start``."""
        return 0.0 if self.t0 is None else self.clock() - self.t0

    def spent(self) -> bool:
        return self.minutes > 0 and self.elapsed >= 60 * self.minutes


@dataclass
class StepLog:
    """What one optimizer step reports to the loop."""

    loss: float  # the number the step minimised (a weighted sum for a mixture)
    grad_norm: float  # before clipping
    finite: bool = True  # False: the update was NOT applied, the loop stops the run
    losses: dict[str, float] = field(default_factory=dict)  # parts of the loss, by name, for logs and checks
    record: dict[str, Any] = field(default_factory=dict)  # more metrics for the step's metrics.jsonl record
    postfix: dict[str, str] = field(default_factory=dict)  # progress-bar fields


@dataclass
class LoopSettings:
    max_steps: int  # the step the loop stops at (not a count: a resumed run starts at start_step)
    save_every: int = 0  # checkpoint every N steps (0 = only at the end)
    eval_every: int = 0  # evaluate every N steps, not at the last one (0 = never inside the loop)
    log_every: int = 10  # metrics record every N steps, and at the last
    progress: bool = True
    desc: str = "train"
    out: str = "."  # the run folder: the non-finite stop names its last good checkpoint


@dataclass
class LoopEnd:
    step: int  # the step reached
    stopped: str  # "max_steps" | "max_minutes"
    last: StepLog | None  # the last step's report (None when no step ran)
    seconds: float  # wall-clock time of the loop


class _Bar:
    """The progress bar: steps out of ``max_steps``, or, for a time-budgeted run, seconds out of the budget (a
    run that ends on time would otherwise show e.g. 49/100000 with a 64-hour estimate)."""

    def __init__(self, settings: LoopSettings, start: int, budget: TimeBudget, enabled: bool):
        self.budget, self.bar = budget, None
        if not enabled:
            return
        from tqdm.auto import tqdm

        if budget.minutes > 0:
            self.bar = tqdm(total=round(60 * budget.minutes), unit="s", dynamic_ncols=True,
                            desc=f"{settings.desc} ({budget.minutes:g} min budget)",
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} s [{postfix}]")
        else:
            self.bar = tqdm(total=settings.max_steps, initial=start, desc=settings.desc, dynamic_ncols=True)

    def update(self, step: int, log: StepLog) -> None:
        if self.bar is None:
            return
        if self.budget.minutes > 0:
            self.bar.n = min(self.bar.total, round(self.budget.elapsed))
            self.bar.set_postfix(step=step, loss=f"{log.loss:.3f}", **log.postfix, refresh=False)
            self.bar.refresh()
        else:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{log.loss:.3f}", **log.postfix)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def run_loop(settings: LoopSettings, start_step: int, *, step: Callable[[int], StepLog],
             save: Callable[[int], None], log: Callable[[int, dict[str, Any]], None],
             evaluate: Callable[[int], Any] | None = None, budget: TimeBudget | None = None,
             agree: Callable[[bool], bool] = bool, on_nonfinite: Callable[[], None] | None = None,
             show_progress: bool = True) -> LoopEnd:
    """Train from ``start_step`` to ``settings.max_steps`` or until the budget is spent.

    Args:
        step: ``step(i)`` runs optimizer step i (0-based) and reports it; under several processes every process
            calls it (it is collective).
        save: ``save(n)`` writes the checkpoint after n steps (collective).
        log: ``log(n, record)`` writes a metrics record (the caller decides which process writes).
        evaluate: ``evaluate(n)`` at every ``eval_every`` steps (collective).
        agree: turns this process's "budget spent" into every process's answer (an all-reduce under several
            processes), so all stop at the same step.
        on_nonfinite: called before the non-finite error is raised (e.g. to close the metrics log).
        show_progress: whether this process shows the bar (the main one).

    Raises:
        NonFiniteLossError: a step reported a NaN/inf loss or gradient norm; its update was not applied and the
            newest checkpoint is the last good state.
    """
    budget = budget or TimeBudget(0)
    bar = _Bar(settings, start_step, budget, settings.progress and show_progress)
    budget.start()
    n, stopped, last, saved = start_step, "max_steps", None, None
    try:
        while n < settings.max_steps:
            if agree(budget.spent()):
                stopped = "max_minutes"
                break
            result = step(n)
            if not result.finite:
                bar.close()
                log(n + 1, {"loss": result.loss, "grad_norm": result.grad_norm, "stopped": "non-finite"})
                if on_nonfinite is not None:
                    on_nonfinite()
                check_finite(n + 1, {**result.losses, "loss": result.loss}, result.grad_norm, settings.out)
                raise NonFiniteLossError(f"step {n + 1}: the step reported a non-finite update; it was not applied")
            n, last = n + 1, result
            bar.update(n, result)
            if n % settings.log_every == 0 or n == settings.max_steps:
                rate = (n - start_step) / max(budget.elapsed, 1e-9)
                log(n, {"loss": result.loss, "grad_norm": result.grad_norm, "steps_per_s": rate, **result.record})
            if settings.save_every > 0 and n % settings.save_every == 0:
                save(n)
                saved = n
            if evaluate is not None and settings.eval_every > 0 and n % settings.eval_every == 0 \
                    and n < settings.max_steps:
                evaluate(n)
    finally:
        bar.close()
    if n > start_step and saved != n:
        save(n)
    return LoopEnd(step=n, stopped=stopped, last=last, seconds=budget.elapsed)
