"""Stage-1 towers: a ``contrastive-encoder export`` folder or a contrastive_encoder preset (random weights, seeded),
through ``contrastive_encoder.load_vision_encoder`` (the suite's own NFNet image tower, the default)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .frozen import VisionEncoderError, freeze_module

__all__ = ["load_stage1_encoder", "stage1_presets"]


def stage1_presets() -> list[str]:
    """contrastive_encoder's preset names ([] when the package is not importable)."""
    try:
        from contrastive_encoder import list_models
    except ImportError:
        return []
    return list_models()


def load_stage1_encoder(name: str, seed: int = 0) -> nn.Module:
    """A frozen stage-1 tower from an export folder (its weights) or a preset (random weights seeded by ``seed``,
    so a saved Flamingo reloads the same encoder)."""
    try:
        from contrastive_encoder import load_vision_encoder as load_stage1
    except ImportError as e:
        raise VisionEncoderError(
            f"vision encoder '{name}' needs contrastive_encoder.load_vision_encoder, which is not available "
            f"({e}); use 'conv-tiny' for a built-in test encoder"
        ) from e
    try:
        if Path(name).is_dir():
            return freeze_module(load_stage1(name))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return freeze_module(load_stage1(name))
    except (FileNotFoundError, KeyError) as e:
        raise VisionEncoderError(f"cannot load vision encoder '{name}': {e}") from e
