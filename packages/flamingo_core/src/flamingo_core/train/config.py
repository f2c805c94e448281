"""The options of a stage-2 training run (``TrainConfig``) and what a run returns (``TrainResult``)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

from contrastive_encoder.shared.argtypes import (
    fraction,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)
from contrastive_encoder.shared.configcli import option
from contrastive_encoder.shared.run_options import MAX_MINUTES_HELP, RunOptions
from flamingo_core.mixture import STRATEGIES
from flamingo_core.train.step import LOSS_NORMALISATIONS


def parse_source_lengths(text: str | None) -> dict[str, int]:
    """``--max-tokens`` ``NAME=N,...`` (N >= 2) -> ``{name: N}``; a bad entry raises a one-line ``ValueError``."""
    out = {}
    for part in (text or "").split(",") if text else []:
        name, sep, value = part.partition("=")
        if not sep or not name.strip() or not value.strip().isdigit() or int(value) < 2:
            raise ValueError(f"--max-tokens entry {part!r}: expected NAME=N with N >= 2, e.g. align=32")
        out[name.strip()] = int(value)
    return out


def source_lengths(text: str) -> str:
    """The argparse ``type`` of ``--max-tokens``: the text, checked by ``parse_source_lengths``."""
    try:
        parse_source_lengths(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


# what a run writes in its folder (glob patterns): all that --overwrite deletes there
RUN_OUTPUTS = ("checkpoints/step_*", "metrics.jsonl", "model", "tensorboard/events.out.tfevents.*")


@dataclass
class TrainConfig(RunOptions):
    """Every option of a training run; each field is also a ``flamingo train`` flag of the same name
    (``contrastive_encoder.shared.configcli``), so the Python API and the CLI have one set of defaults."""

    data: str = field(default="data/world", metadata=option(
        "ShapesWorld root with m3w/ ltip/ align/ vtp/ (docs/formats.md)"))
    sources: list[str] = field(default_factory=list, metadata=option(
        "add or replace a source; KIND interleaved|pairs|video, SPEC a .jsonl, WebDataset shards "
        "(dir/{000..009}.tar) or hf:<save_to_disk folder>; repeatable", flag="--source", metavar="NAME=KIND:SPEC"))
    weights: str | None = field(default=None, metadata=option(
        "dataset weights NAME=W,... (default m3w=1,ltip=0.2,align=0.2,vtp=0.03; 0 drops a source)"))
    # dataset strategy (paper Table 3)
    strategy: str = field(default="accumulation", metadata=option(
        "dataset strategy (paper Table 3): accumulation = every step sums the weighted losses of one batch per "
        "source; round-robin = every step trains on one source's batch, the sources taking turns in proportion "
        "to their weights (as stage 1's --strategy)", choices=STRATEGIES))
    loss_normalisation: str = field(default="tokens", metadata=option(
        "what each source's summed token NLL is divided by: tokens = a per-token mean; sequences = the paper's "
        "Eq. 2, the sum of each sequence's NLL, divided by the source's sequences in the global batch",
        choices=LOSS_NORMALISATIONS))
    eval_data: str | None = field(default=None, metadata=option(
        "held-out image-text JSONL (default <data>/ltip/val.jsonl)"))
    out: str = field(default="runs/flamingo", metadata=option("run folder: checkpoints/, metrics.jsonl, model/"))
    model: str = field(default="smollm2", metadata=option(
        "Flamingo model: a preset name (flamingo_core/presets, e.g. smollm2, tiny) or a JSON config"))
    vision_encoder: str | None = field(default="runs/stage1/export", metadata=option(
        "frozen vision encoder: the stage-1 export folder, a stage-1 preset, or open_clip:<model>, hf:<hub id or "
        "folder>, timm:<model> (docs/interfaces.md; '' = the model preset's)"))
    lm: str | None = field(default=None, metadata=option(
        "frozen causal LM name or folder (default: the model preset's)"))
    frozen_dtype: str | None = field(default=None, metadata=option(
        "dtype of the frozen LM and vision encoder (default: the model preset's, float32); bfloat16 halves their "
        "memory as the paper trains, the trained parts keep fp32 weights", choices=("float32", "bfloat16",
                                                                                    "float16")))
    pack: bool = field(default=True, metadata=option(
        "pack image-text and video-text pairs into rows of the source's window (exact: each sample sees only its "
        "own tokens and media; the frozen LM runs no padding); the packing efficiency is logged as packing/<source>"))
    feature_cache: str | None = field(default=None, metadata=option(
        "compute each image's frozen vision features once: 'memory', or a folder kept for later runs (keyed by "
        "the pixels: with --augment each flip and jitter is new pixels, so add --no-augment to reuse features)",
        metavar="memory|DIR"))
    # Appendix B.1.2's stage-2 preprocessing, on the training sources only (held-out pairs are not augmented)
    pad_to_square: bool = field(default=True, metadata=option(
        "pad training images to a square with their mean colour before the encoder's resize, so a wide image keeps "
        "its proportions (paper)"))
    augment: bool = field(default=True, metadata=option(
        "random horizontal flips (p=0.5) and colour jitter (brightness, contrast, saturation 0.2; no hue shift, "
        "colour words stay true) of the training images, one draw per sample (paper: flips and colour "
        "augmentation)"))
    swap_lr: bool = field(default=True, metadata=option(
        "swap the words left and right in the texts of a sample whose images were flipped"))
    p_leading_space: float = field(default=0.5, metadata=option(
        "probability that an image- or video-text pair's caption starts with a space (paper: 1/2)", type=fraction))
    max_tokens: str | None = field(default=None, metadata=option(
        "per-source sequence lengths NAME=N,... (default m3w=256, ltip=64, align=32, vtp=32 as the paper; other "
        "sources by kind: interleaved 256, pairs 64, video 32)", type=source_lengths))
    batch_size: int = field(default=4, metadata=option(
        "samples per process per step for image-text pairs; M3W gets a quarter, VTP half", type=positive_int))
    batch_sizes: str | None = field(default=None, metadata=option(
        "per-source batch sizes NAME=N,... (e.g. m3w=2,vtp=4; default: from --batch-size)"))
    # Learning rates and batch for a budget of minutes, not the paper's 500k steps at 1e-4: the resampler at the
    # full rate collapses to one output for every image, so it gets 0.01x; from 0 Adam moves a tanh gate by at
    # most its learning rate per step, so the gates get 100x; within minutes more, smaller steps beat fewer large
    # ones (docs/design/stage2-learning-rates.md).
    gate_lr_mult: float = field(default=100.0, metadata=option(
        "learning rate of the tanh gates as a multiple of --lr (they start at 0 and move about lr per step)",
        type=positive_float))
    resampler_lr_mult: float = field(default=0.01, metadata=option(
        "learning rate of the Perceiver Resampler as a multiple of --lr", type=positive_float))
    warmup_steps: int = field(default=10, metadata=option(
        "linear warm-up steps, then constant", type=non_negative_int))
    weight_decay: float = field(default=0.1, metadata=option(
        "AdamW decay of the parameters --weight-decay-scope names", type=non_negative_float))
    weight_decay_scope: str = field(default="matrices", metadata=option(
        "what --weight-decay decays: the cross-attention matrices only, or (paper) every trained parameter but "
        "the resampler's (flamingo_core.train.optim.DECAY_SCOPES says why the default differs)",
        choices=("matrices", "paper")))
    max_steps: int = field(default=100_000, metadata=option(
        "optimizer steps (the time budget usually ends the run first)", type=non_negative_int))
    # 16 leaves model loading and the final evaluation inside 20 minutes on 2 CPU cores
    max_minutes: float = field(default=16.0, metadata=option(MAX_MINUTES_HELP, type=non_negative_float))
    grad_checkpointing: bool = field(default=False, metadata=option("recompute LM activations during backward"))
    zero: str = field(default="auto", metadata=option(
        "ZeRO-1 optimizer-state sharding (auto: on with more than one DDP process)", choices=("auto", "on", "off")))
    fsdp: bool = field(default=False, metadata=option(
        "shard every part (trained parts with fp32 master weights, the frozen LM and vision encoder in "
        "--frozen-dtype) over the processes with FSDP2 (torch fully_shard), on CPU (gloo) as on GPUs; checkpoints "
        "are sharded (torch.distributed.checkpoint) and resume with another number of processes"))
    tensor_parallel: int = field(default=1, metadata=option(
        "split the frozen LM's attention and MLP, the GATED XATTN-DENSE blocks, the embedding and the head over N "
        "processes (the paper's Megatron sharding, torch parallelize_module); N must divide the processes, the "
        "heads and the split widths; with more processes than N add --fsdp (a data x tensor mesh)",
        type=positive_int, metavar="N"))
    num_workers: int = field(default=0, metadata=option("DataLoader workers per source", type=non_negative_int))
    eval_every: int = field(default=200, metadata=option(
        "held-out loss and sample captions every N steps (0: only before and after training)",
        type=non_negative_int))
    eval_samples: int = field(default=64, metadata=option(
        "held-out pairs for the loss and colour accuracy", type=positive_int))
    eval_probes: list[str] = field(default_factory=list, metadata=option(
        "task probe scoring the held-out greedy captions, repeatable: MODULE:FUNCTION or FILE.py:FUNCTION, "
        "probe(texts, records) -> {metric: value} (e.g. tools/shapesworld/probes.py:colour_probe)",
        flag="--eval-probe"))
    num_captions: int = field(default=4, metadata=option(
        "sample captions printed per evaluation", type=non_negative_int))
    final_eval: bool = field(default=True, metadata=option(
        "skip the evaluations before the first and after the last step", flag="--no-eval"))
    # M3W: probability a sequence's tokens attend to the next image instead of the previous one (phi shifted, the
    # tokens in place). The paper draws it with p_next = 1/2 (Appendix A.3.2) for web pages, where an image's text
    # may come before or after it. ShapesWorld pages (like OBELICS-style captions) always describe an image right
    # after it, so a "next" sequence would read each description with the following image's features: the default
    # is 0; use 0.5 for web documents.
    p_next: float = field(default=0.0, metadata=option(
        "M3W: probability a sequence's tokens attend to the image after them (paper: 0.5, for web pages whose text "
        "may precede its image; 0 = the image before, how ShapesWorld pages are written)", type=fraction))
    video_frames: int = field(default=0, metadata=option(
        "VTP frames per clip at 1 FPS (paper: 8; 0 = the model's max_frames)", type=non_negative_int))


@dataclass
class TrainResult:
    step: int
    losses: dict[str, float]
    eval: dict[str, Any]
    skipped: dict[str, int]
    model_dir: str | None
    stopped: str  # "max_steps" | "max_minutes"
