"""``flamingo train``'s command line (also ``python -m flamingo_core.train``)."""

from __future__ import annotations

import argparse
import sys

import torch

from contrastive_encoder.shared.argtypes import (
    OneLineParser,
    fraction,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)
from contrastive_encoder.shared.nonfinite import EXIT_NONFINITE, NonFiniteLossError
from flamingo_core.mixture import STRATEGIES
from flamingo_core.train.config import TrainConfig
from flamingo_core.train.loop import train


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = OneLineParser(prog="flamingo train", description="Train Flamingo's resampler and cross-attention "
                                "on the weighted M3W / LTIP / ALIGN / VTP mixture.")
    p.add_argument("--data", default=d.data, help="ShapesWorld root with m3w/ ltip/ align/ vtp/ (docs/formats.md)")
    p.add_argument("--source", dest="sources", action="append", default=[], metavar="NAME=KIND:SPEC",
                   help="add or replace a source; KIND interleaved|pairs|video, SPEC a .jsonl, WebDataset shards "
                        "(dir/{000..009}.tar) or hf:<save_to_disk folder>; repeatable")
    p.add_argument("--weights", default=None, help="dataset weights NAME=W,... (default m3w=1,ltip=0.2,align=0.2,"
                                                    "vtp=0.03; 0 drops a source)")
    p.add_argument("--strategy", choices=STRATEGIES, default=d.strategy,
                   help="dataset strategy (paper Table 3): accumulation = every step sums the weighted losses of "
                        "one batch per source; round-robin = every step trains on one source's batch, the "
                        "sources taking turns in proportion to their weights (as stage 1's --strategy)")
    p.add_argument("--eval-data", default=None, help="held-out image-text JSONL (default <data>/ltip/val.jsonl)")
    p.add_argument("--out", default=d.out, help="run folder: checkpoints/, metrics.jsonl, model/")
    p.add_argument("--preset", default=d.preset, help="Flamingo preset name or JSON config (e.g. smollm2, tiny)")
    p.add_argument("--vision-encoder", default=d.vision_encoder,
                   help="frozen vision encoder: the stage-1 export folder or a preset ('' = the preset's)")
    p.add_argument("--lm", default=None, help="frozen causal LM name or folder (default: the preset's)")
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size,
                   help="samples per process per step for image-text pairs; M3W gets a quarter, VTP half")
    p.add_argument("--batch-sizes", default=None, help="per-source batch sizes NAME=N,... (e.g. m3w=2,vtp=4)")
    p.add_argument("--lr", type=positive_float, default=d.lr, help="peak learning rate after warm-up")
    p.add_argument("--gate-lr-mult", type=positive_float, default=d.gate_lr_mult,
                   help="learning rate of the tanh gates as a multiple of --lr")
    p.add_argument("--resampler-lr-mult", type=positive_float, default=d.resampler_lr_mult,
                   help="learning rate of the Perceiver Resampler as a multiple of --lr")
    p.add_argument("--warmup-steps", type=non_negative_int, default=d.warmup_steps, help="linear warm-up steps")
    p.add_argument("--weight-decay", type=non_negative_float, default=d.weight_decay, help="AdamW decay on cross-attention matrices")
    p.add_argument("--grad-clip", type=non_negative_float, default=d.grad_clip, help="max global gradient norm (0 = no clipping)")
    p.add_argument("--max-steps", type=non_negative_int, default=d.max_steps, help="optimizer steps")
    p.add_argument("--max-minutes", type=non_negative_float, default=d.max_minutes,
                   help="stop training after this many minutes from start (0 = no limit)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default=d.precision,
                   help="bf16 autocast with fp32 parameters; auto = bf16 on GPUs that support it")
    p.add_argument("--grad-checkpointing", action="store_true", help="recompute LM activations during backward")
    p.add_argument("--zero", choices=["auto", "on", "off"], default=d.zero,
                   help="ZeRO-1 optimizer-state sharding (auto: on with more than one process)")
    p.add_argument("--cpu", action="store_true", help="train on CPU even if a GPU is present")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of data order and initialisation")
    p.add_argument("--num-workers", type=non_negative_int, default=d.num_workers, help="DataLoader workers per source")
    p.add_argument("--strict", action="store_true", help="fail on the first corrupt or missing media (names the file)")
    p.add_argument("--resume", default=None, help="'latest' or a checkpoint folder to continue from")
    p.add_argument("--overwrite", action="store_true",
                   help="start again in a folder holding a previous run (deletes that run's checkpoints, metrics "
                        "and model, nothing else), or write into a non-empty folder that is not a run")
    p.add_argument("--save-every", type=non_negative_int, default=d.save_every, help="checkpoint every N steps")
    p.add_argument("--keep-checkpoints", type=non_negative_int, default=d.keep_checkpoints, help="newest checkpoints to keep")
    p.add_argument("--eval-every", type=non_negative_int, default=d.eval_every, help="held-out evaluation every N steps (0 = off)")
    p.add_argument("--eval-samples", type=positive_int, default=d.eval_samples, help="held-out pairs per evaluation")
    p.add_argument("--num-captions", type=non_negative_int, default=d.num_captions, help="sample captions printed per evaluation")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluations before and after training")
    p.add_argument("--log-every", type=positive_int, default=d.log_every, help="metrics record every N steps")
    p.add_argument("--p-next", type=fraction, default=d.p_next,
                   help="M3W: probability a sequence's text attends to the next image (paper: 0.5, for web pages "
                        "whose text may precede its image; 0 = the previous image, how ShapesWorld pages are written)")
    p.add_argument("--video-frames", type=non_negative_int, default=d.video_frames,
                   help="frames per video clip at 1 FPS (0 = the model's max_frames, 8 for the paper presets)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    a = build_parser().parse_args(argv)
    cfg = TrainConfig(**{k: v for k, v in vars(a).items() if k in TrainConfig.__dataclass_fields__})
    cfg.vision_encoder = a.vision_encoder or None
    cfg.final_eval, cfg.progress = not a.no_eval, not a.no_progress
    return cfg


def main(argv: list[str] | None = None) -> int:
    """``flamingo train``: returns 0 on success, 2 on bad input, 3 when a non-finite loss stopped the run."""
    from contrastive_encoder.shared.records import BadSampleError

    try:
        cfg = parse_args(argv)
    except SystemExit as e:  # the parser has printed its one line (or --help): return its code like the others
        return int(e.code or 0)
    try:
        train(cfg)
    except NonFiniteLossError as e:
        print(f"flamingo train: {e}", file=sys.stderr)
        return EXIT_NONFINITE
    except (FileNotFoundError, BadSampleError, ValueError) as e:
        print(f"flamingo train: {e}", file=sys.stderr)
        return 2
    finally:  # launched by torchrun / accelerate: NCCL warns at exit about a group left open
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0
