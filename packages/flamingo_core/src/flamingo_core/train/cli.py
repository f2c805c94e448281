"""``flamingo train``'s command line (also ``python -m flamingo_core.train``)."""

from __future__ import annotations

import argparse
import sys

import torch

from contrastive_encoder.shared.argtypes import OneLineParser
from contrastive_encoder.shared.configcli import add_config_arguments, config_from_args
from contrastive_encoder.shared.nonfinite import EXIT_NONFINITE, NonFiniteLossError
from flamingo_core.train.config import TrainConfig
from flamingo_core.train.loop import train


def build_parser() -> argparse.ArgumentParser:
    """Every flag and default is a ``TrainConfig`` field (``shared/configcli.py``)."""
    p = OneLineParser(prog="flamingo train", description="Train Flamingo's resampler and cross-attention "
                                "on the weighted M3W / LTIP / ALIGN / VTP mixture.")
    add_config_arguments(p, TrainConfig)
    return p


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    cfg = config_from_args(TrainConfig, build_parser().parse_args(argv))
    cfg.vision_encoder = cfg.vision_encoder or None  # '' = the model preset's own
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
