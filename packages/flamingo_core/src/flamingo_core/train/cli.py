"""``flamingo train``'s command line (also ``python -m flamingo_core.train``)."""

from __future__ import annotations

import argparse

import torch

from contrastive_encoder.shared.argtypes import OneLineParser
from contrastive_encoder.shared.command import run_command
from contrastive_encoder.shared.configcli import add_config_arguments, config_from_args
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
    try:
        return run_command("flamingo train", lambda: parse_args(argv), train)
    finally:  # launched by torchrun / accelerate: NCCL warns at exit about a group left open
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
