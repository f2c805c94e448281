"""The options of a stage-2 training run (``TrainConfig``) and what a run returns (``TrainResult``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# what a run writes in its folder (glob patterns): all that --overwrite deletes there
RUN_OUTPUTS = ("checkpoints/step_*", "metrics.jsonl", "model", "tensorboard/events.out.tfevents.*")


@dataclass
class TrainConfig:
    """Every option of a training run; the CLI flags map one to one."""

    data: str = "data/world"  # ShapesWorld root (docs/formats.md)
    sources: list[str] = field(default_factory=list)  # NAME=KIND:SPEC overrides/additions
    weights: str | None = None  # NAME=W,...; default m3w 1.0, ltip 0.2, align 0.2, vtp 0.03
    # dataset strategy (paper Table 3): accumulation (every step: one batch per source, lambda-weighted losses
    # summed) | round-robin (every step: one source's batch, turns in proportion to the weights)
    strategy: str = "accumulation"
    eval_data: str | None = None  # held-out image-text pairs; default <data>/ltip/val.jsonl
    out: str = "runs/flamingo"  # run folder
    preset: str = "smollm2"  # Flamingo preset (flamingo_core/presets) or JSON file
    vision_encoder: str | None = "runs/stage1/export"  # stage-1 export folder or preset; None = preset's
    lm: str | None = None  # frozen LM name; None = preset's
    batch_size: int = 4  # samples per process per step for image-text pairs (see source_batch_sizes)
    batch_sizes: str | None = None  # NAME=N,... per-source overrides (default: m3w batch/4, vtp batch/2)
    # Learning rates and batch for a budget of minutes, not the paper's 500k steps at 1e-4 (2 CPU cores,
    # ShapesWorld, SmolLM2; benchmarks in the flamingo_core README):
    # - the resampler at the full rate collapsed to one output for every image within 100 steps; at 0.01x it
    #   keeps the image information;
    # - the visual path is limited by the tanh gates: from 0, Adam moves a gate by at most its learning rate per
    #   step, and less when its gradient's sign is noisy. LTIP only, 80 steps: gates at 10x -> colour named in
    #   39% of held-out captions, at 100x -> 84% (multiplying the cross-attention output weights by 10 instead:
    #   77%), so the gates get 100x;
    # - the run is limited by optimizer steps rather than samples: batch 4 (M3W 1, VTP 2) made 97 mixture steps
    #   in 8 minutes against 57 at batch 8, with colour 23% against 14% (gates 10x).
    lr: float = 1e-3  # peak learning rate
    gate_lr_mult: float = 100.0  # the tanh gates' learning rate = lr * this (they start at 0 and move ~lr per step)
    resampler_lr_mult: float = 0.01  # the Perceiver Resampler's learning rate = lr * this
    warmup_steps: int = 10  # linear warm-up steps, then constant
    weight_decay: float = 0.1  # on cross-attention matrices only
    grad_clip: float = 1.0  # global gradient-norm clip per optimizer step (0 = off)
    max_steps: int = 100_000  # optimizer steps (the time budget usually ends the run first)
    max_minutes: float = 16.0  # wall-clock budget (from start) for training, 0 = none; the default fits the
    # 20-minute benchmark on 2 cores: model loading + 16 min of steps + the final evaluation
    precision: str = "auto"  # auto | fp32 | bf16 (autocast, parameters stay fp32)
    grad_checkpointing: bool = False  # recompute LM activations in backward
    zero: str = "auto"  # ZeRO-1 optimizer sharding: auto (on when >1 DDP process) | on | off
    cpu: bool = False  # force CPU even when a GPU is present
    seed: int = 0  # data order, sample randomness and RNG
    num_workers: int = 0  # DataLoader workers per source
    strict: bool = False  # raise on the first corrupt sample instead of skipping it
    resume: str | None = None  # 'latest' or a checkpoint folder
    overwrite: bool = False  # replace a previous run in `out` (its own files only) / write into a non-empty folder
    save_every: int = 200  # checkpoint every N steps (and at the end)
    keep_checkpoints: int = 2  # newest checkpoints kept (0 = all)
    eval_every: int = 200  # held-out loss + sample captions every N steps (0 = only at start and end)
    eval_samples: int = 64  # held-out pairs for the loss and colour accuracy
    num_captions: int = 4  # sample captions logged per evaluation
    final_eval: bool = True  # evaluate before the first and after the last step
    log_every: int = 10  # metrics.jsonl record every N steps
    # M3W: probability a sequence's text attends to the next image instead of the previous one. The paper draws
    # it with p_next = 1/2 (Appendix A.3.2) for web pages, where an image's text may come before or after it.
    # ShapesWorld pages (like OBELICS-style captions) always describe an image right after it, so every "next"
    # sequence would pair each description with the wrong image: the default is 0; use 0.5 for web documents.
    p_next: float = 0.0
    video_frames: int = 0  # VTP frames per clip at 1 FPS (paper: 8); 0 = the model's max_frames
    progress: bool = True  # tqdm progress bar


@dataclass
class TrainResult:
    step: int
    losses: dict[str, float]
    eval: dict[str, Any]
    skipped: dict[str, int]
    model_dir: str | None
    stopped: str  # "max_steps" | "max_minutes"
