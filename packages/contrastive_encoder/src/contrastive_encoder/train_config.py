"""The options of a stage-1 training run (``TrainConfig``): the Python API of ``train`` and, generated from the
same fields (``shared/configcli.py``), the flags of ``contrastive-encoder train``, so both train the same run.

The defaults train the ``nano-minilm`` preset on ShapesWorld's LTIP and ALIGN pairs (written by
``tools/shapesworld`` under ``data/world``) and evaluate zero-shot colour and shape classification on its
held-out images; ``contrastive-encoder train`` leaves out the default files that were not generated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .data.mixing import STRATEGIES
from .shared.argtypes import non_negative_float, non_negative_int, positive_float, positive_int
from .shared.configcli import option
from .shared.run_options import MAX_MINUTES_HELP, RunOptions
from .zero_shot import DEFAULT_TEMPLATES

__all__ = ["RUN_OUTPUTS", "TrainConfig", "WORLD"]

WORLD = "data/world"  # where `python tools/shapesworld --out data/world` writes the default data

# what a run writes in its folder (glob patterns): all that --overwrite deletes there
RUN_OUTPUTS = ("checkpoints/step_*", "metrics.jsonl", "summary.json", "tensorboard/events.out.tfevents.*")


@dataclass
class TrainConfig(RunOptions):
    """Every option of a stage-1 run; each documented field is a ``contrastive-encoder train`` flag."""

    model: str = field(default="nano-minilm", metadata=option(
        "preset name, preset JSON, or a saved model folder to continue from"))
    data: list[str] = field(default_factory=lambda: [f"{WORLD}/ltip/train.jsonl", f"{WORLD}/align/train.jsonl"],
                            metadata=option(
        "pair source, repeatable: file.jsonl, shard.tar / shard folder / glob, or hf:<dataset>[:split]; the "
        "default is ShapesWorld's LTIP and ALIGN, as the paper's pair datasets (the CLI leaves out one not generated)"))
    data_weights: list[float] | None = field(default=None, metadata=option(
        "one loss weight (lambda) per --data (default 1 each)", type=non_negative_float, nargs="+"))
    strategy: str = field(default="accumulation", metadata=option(
        "how several datasets are combined in a step", choices=STRATEGIES))
    batch_size: int = field(default=32, metadata=option(
        "global batch of one micro-batch of one dataset, over all processes", type=positive_int))
    accum_steps: int = field(default=1, metadata=option(
        "micro-batches per dataset per optimizer step (negatives stay within a micro-batch)", type=positive_int))
    max_steps: int = field(default=1800, metadata=option(
        "optimizer steps (the cosine schedule reaches 0 here)", type=positive_int))
    optimizer: str = field(default="adamw", metadata=option(
        "optimizer (adam: the paper's, weight decay as an L2 term; sgd: plain, no momentum, for tests and ablations)",
        choices=("adamw", "adam", "sgd")))
    text_lr: float | None = field(default=None, metadata=option(
        "peak learning rate of the text tower (default --lr)", type=positive_float))
    weight_decay: float = field(default=0.05, metadata=option(
        "AdamW weight decay on weight matrices (not gains, biases, norms, logit scale)", type=non_negative_float))
    warmup_steps: int = field(default=50, metadata=option("linear warmup steps from 0", type=non_negative_int))
    schedule: str = field(default="cosine", metadata=option(
        "learning-rate schedule after warmup (cosine or linear, the paper's: to 0 at --max-steps)",
        choices=("cosine", "linear", "constant")))
    label_smoothing: float = field(default=0.0, metadata=option(
        "label smoothing of the contrastive loss's targets, in [0, 1) (the paper: 0.1)", type=non_negative_float))
    agc: float = field(default=0.0, metadata=option(
        "Adaptive Gradient Clipping factor for the NFNet trunk (0 disables; the NFNet paper uses 0.01)",
        type=non_negative_float))
    lock_text: bool | None = field(default=None, metadata=option(
        "freeze the text encoder (its projection still trains); default: frozen when pretrained"))
    text_cache: bool = field(default=True, metadata=option(
        "with a frozen text encoder, cache each caption's pooled output (exact, faster)"))
    local_loss: bool = field(default=False, metadata=option(
        "each process scores only its own rows against the global batch"))
    image_size: int | None = field(default=None, metadata=option(
        "override the preset's resolution", type=positive_int))
    augment: bool = field(default=True, metadata=option("colour jitter and horizontal flips"))
    swap_lr: bool = field(default=True, metadata=option("swap left/right words in captions of flipped images"))
    num_workers: int = field(default=1, metadata=option("DataLoader worker processes", type=non_negative_int))
    out: str = field(default="runs/contrastive", metadata=option(
        "run folder (checkpoints/, metrics.jsonl, summary.json)"))
    stop_after: int | None = field(default=None, metadata=option(
        "stop after N steps in this invocation (simulated preemption)", type=positive_int))
    max_minutes: float = field(default=10.0, metadata=option(MAX_MINUTES_HELP, type=non_negative_float))
    eval_every: int = field(default=0, metadata=option(
        "steps between zero-shot evaluations (0: only at the end)", type=non_negative_int))
    zero_shot: list[str] = field(
        default_factory=lambda: [f"{WORLD}/eval/colour/val", f"{WORLD}/eval/classify/val"], metadata=option(
            "class-folder or JSONL set for zero-shot evaluation, repeatable; the default is ShapesWorld's colour "
            "and shape sets (the CLI leaves out one not generated)"))
    templates: list[str] = field(default_factory=lambda: list(DEFAULT_TEMPLATES), metadata=option(
        "prompt template with {class}, repeatable", flag="--template"))
    eval_max_images: int | None = field(default=500, metadata=option(
        "cap on images per zero-shot set", type=positive_int))
    fsdp: bool = field(default=False, metadata=option(
        "shard the dual encoder over the processes with FSDP2 (torch fully_shard; fp32 master weights, bf16 compute "
        "under --precision bf16), on CPU (gloo) as on GPUs; checkpoints are sharded (torch.distributed.checkpoint) "
        "and resume with another number of processes"))
    export: str | None = field(default=None, metadata=option(
        "also save the final model to this folder (save_pretrained); --overwrite applies"))
    model_overrides: dict[str, Any] = field(default_factory=dict)  # DualEncoderConfig field overrides (Python only)
