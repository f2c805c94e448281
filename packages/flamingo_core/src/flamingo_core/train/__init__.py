"""Training Flamingo (arXiv 2204.14198, Section 3 and Appendix B.1.2) on the weighted dataset mixture with
accelerate: one process, DDP (+ ZeRO stage 1 optimizer sharding) on CPU or GPUs, FSDP2 (``--fsdp``: torch's
``fully_shard`` of every part, frozen ones too, on CPU processes with gloo as on GPUs; ``train/fsdp.py``),
tensor parallelism (``--tensor-parallel N``: ``train/tensor_parallel.py``; with ``--fsdp`` a data x tensor mesh,
``train/mesh.py``), or FSDP through an accelerate config (``configs/accelerate/``).

Recipe (paper -> here): AdamW, weight decay on the GATED XATTN-DENSE matrices only (not the resampler, norms,
gates, biases or token rows); linear warm-up then constant learning rate; gradient clipping (global norm 1)
per optimizer step; bf16 autocast with fp32 parameters where the hardware has bf16; the accumulation
strategy over datasets (``flamingo_core.mixture``), or, for the paper's Table 3 ablation, ``--strategy
round-robin``: each step trains on one dataset, turns in proportion to the weights (``SourceSchedule``).

Checkpoints (``<out>/checkpoints/step_N/``, written atomically) have the layout both stages share
(``contrastive_encoder.shared.checkpoint``): ``model/`` (a ``Flamingo.save_pretrained`` folder of the trained
parameters: loadable on its own), ``optimizer.safetensors`` + ``optimizer.json`` (the full AdamW state),
``rng.safetensors`` (torch RNG of every process) and ``state.json`` (step, scheduler, data positions, skip
counts, config). Resuming restores all of it, so a resumed run equals an uninterrupted one; checkpoints of the
older layout (``trained.safetensors``, ``optimizer.pt``, ``rng.pt``) still resume. A NaN/inf loss or gradient
norm stops the run before the optimizer step, leaving the last good checkpoint as the newest. ``--fsdp`` runs
write sharded checkpoints instead of the optimizer files (``train/dcp_checkpoint.py``, through
``torch.distributed.checkpoint``: trained weights and AdamW state in ``distributed/``, resumable with another
number of processes, beside the same ``model/``, per-process ``rng.safetensors`` and ``state.json``). Under
accelerate's FSDP the trained parameters are gathered for the checkpoint but the sharded optimizer state is not
saved (a resumed run restarts the AdamW moments), and ``<out>/model`` is not written.

The loop itself (steps, logging, evaluation, checkpoints, the time budget, the non-finite stop) is the suite's
one trainer skeleton, ``contrastive_encoder.shared.training.run_loop``; held-out evaluation takes task probes
(``--eval-probe``).

Usage: ``flamingo train --data data/world --vision-encoder runs/stage1/export --max-minutes 16``;
multi-process: ``accelerate launch --config_file configs/accelerate/ddp_cpu_2proc.yaml -m flamingo_core.train``
or ``torchrun --nproc_per_node 2 -m flamingo_core.train --cpu`` (add ``--fsdp`` for FSDP2).
"""

from flamingo_core.train.checkpoint import (
    check_resume_settings,
    load_checkpoint,
    resolve_resume,
    save_checkpoint,
)
from flamingo_core.train.cli import build_parser, main, parse_args
from flamingo_core.train.config import TrainConfig, TrainResult
from flamingo_core.train.held_out import caption_eval, visual_token_spread
from flamingo_core.train.loop import train
from flamingo_core.train.optim import param_groups, warmup_constant
from flamingo_core.train.source_specs import default_sources, parse_source_specs, source_batch_sizes
from flamingo_core.train.step import StepResult, train_step

__all__ = [
    "StepResult",
    "TrainConfig",
    "TrainResult",
    "build_parser",
    "caption_eval",
    "check_resume_settings",
    "default_sources",
    "load_checkpoint",
    "main",
    "param_groups",
    "parse_args",
    "parse_source_specs",
    "resolve_resume",
    "save_checkpoint",
    "source_batch_sizes",
    "train",
    "train_step",
    "visual_token_spread",
    "warmup_constant",
]
