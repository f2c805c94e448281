"""The options every training run has, declared once: both stages' ``TrainConfig`` extend ``RunOptions``, so the
same concept has the same flag, type, default and help in ``contrastive-encoder train`` and ``flamingo train``
(``configcli`` makes the flags). A stage that needs another default redeclares the field."""

from __future__ import annotations

from dataclasses import dataclass, field

from .argtypes import non_negative_float, non_negative_int, positive_float, positive_int
from .configcli import option

__all__ = ["MAX_MINUTES_HELP", "RunOptions"]

MAX_MINUTES_HELP = (
    "wall-clock budget in minutes of the training loop (its steps and the evaluations and checkpoints between them; "
    "not loading, nor the evaluations before the first and after the last step); the run checkpoints and stops "
    "when it is spent (0 = no limit)")


@dataclass
class RunOptions:
    lr: float = field(default=1e-3, metadata=option("peak learning rate, after warm-up", type=positive_float))
    grad_clip: float = field(default=1.0, metadata=option(
        "max global gradient norm per optimizer step (0 = no clipping)", type=non_negative_float))
    precision: str = field(default="auto", metadata=option(
        "bf16 autocast with fp32 parameters; auto = bf16 on a GPU that supports it, fp32 elsewhere",
        choices=("auto", "fp32", "bf16")))
    cpu: bool = field(default=False, metadata=option("train on the CPU even when a GPU is present"))
    seed: int = field(default=0, metadata=option("seed of initialisation, data order and sample randomness"))
    strict: bool = field(default=False, metadata=option(
        "fail on the first corrupt or missing sample, naming the file (default: skip and count)"))
    resume: str | None = field(default=None, metadata=option("'latest' or a checkpoint folder to continue from"))
    overwrite: bool = field(default=False, metadata=option(
        "start again in a folder holding a previous run (deletes that run's own outputs, nothing else), or write "
        "into a non-empty folder that is not a run"))
    save_every: int = field(default=200, metadata=option(
        "checkpoint every N steps, and at the end (0: only at the end)", type=non_negative_int))
    keep_checkpoints: int = field(default=2, metadata=option(
        "newest checkpoints to keep (0 keeps all)", type=non_negative_int))
    log_every: int = field(default=10, metadata=option("metrics record every N steps", type=positive_int))
    progress: bool = field(default=True, metadata=option("progress bar"))
