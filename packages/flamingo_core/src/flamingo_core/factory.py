"""``create_model``: a Flamingo from a preset name, JSON file, saved folder or config, its frozen parts (LM, vision
encoder, tokenizer) loaded by name unless given."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .config import FlamingoConfig, load_config
from .flamingo import Flamingo
from .tokenization import load_flamingo_tokenizer
from .vision import load_vision_encoder

__all__ = ["create_model"]


def _build_lm(config: FlamingoConfig):
    if config.lm_config is not None:
        from transformers import AutoConfig, AutoModelForCausalLM

        cfg = dict(config.lm_config)
        model_type = cfg.pop("model_type")
        lm_cfg = AutoConfig.for_model(model_type, **cfg)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.lm_seed)
            return AutoModelForCausalLM.from_config(lm_cfg).eval()
    from contrastive_encoder.shared.pretrained import load_causal_lm

    return load_causal_lm(config.lm)


def create_model(
    config_or_preset: str | Path | FlamingoConfig = "smollm2",
    lm: nn.Module | None = None,
    vision_encoder: nn.Module | None = None,
    tokenizer=None,
    **overrides,
) -> Flamingo:
    """Build a Flamingo model from a preset name, JSON file or config; frozen parts are loaded by name unless given.

    Args:
        config_or_preset: ``list_models()`` name, JSON path, saved folder or ``FlamingoConfig``.
        lm, vision_encoder, tokenizer: already-built frozen parts to use instead of loading them.
        **overrides: ``FlamingoConfig`` fields to change.

    ``lm``, ``vision_encoder`` and ``tokenizer`` given as strings are names: they override the config fields.
    """
    for key, value in (("lm", lm), ("vision_encoder", vision_encoder), ("tokenizer", tokenizer)):
        if isinstance(value, (str, Path)):
            overrides[key] = str(value)
    lm = None if isinstance(lm, (str, Path)) else lm
    vision_encoder = None if isinstance(vision_encoder, (str, Path)) else vision_encoder
    tokenizer = None if isinstance(tokenizer, (str, Path)) else tokenizer
    config = load_config(config_or_preset, **overrides)
    if tokenizer is None:
        name = config.tokenizer or (config.lm if config.lm_config is None else None)
        if name is None:
            raise ValueError("a config with lm_config needs a 'tokenizer' name (e.g. 'byte')")
        tokenizer = load_flamingo_tokenizer(name)
    lm = lm if lm is not None else _build_lm(config)
    vision_encoder = vision_encoder if vision_encoder is not None else load_vision_encoder(config.vision_encoder, seed=config.seed)
    model = Flamingo(config, lm, vision_encoder, tokenizer)
    model.log_parameter_counts()
    return model
