"""``create_model``: a Flamingo from a preset name, JSON file, saved folder or config, its frozen parts (LM, vision
encoder, tokenizer) loaded by name unless given."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .config import FROZEN_DTYPES, FlamingoConfig, load_config
from .flamingo import Flamingo
from .tokenization import load_flamingo_tokenizer
from .vision import load_vision_encoder

__all__ = ["create_model", "resolve_dtype"]


def _build_lm(config: FlamingoConfig, dtype: torch.dtype, device_map=None):
    if config.lm_config is not None:
        from transformers import AutoConfig, AutoModelForCausalLM

        cfg = dict(config.lm_config)
        model_type = cfg.pop("model_type")
        lm_cfg = AutoConfig.for_model(model_type, **cfg)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.lm_seed)
            lm = AutoModelForCausalLM.from_config(lm_cfg).to(dtype).eval()  # fp32 draw, then cast: same weights
        return lm if device_map is None else lm.to(_single_device(device_map))
    from contrastive_encoder.shared.pretrained import load_causal_lm

    return load_causal_lm(config.lm, dtype=dtype, device_map=device_map)


def _single_device(device_map) -> str:
    if isinstance(device_map, (str, torch.device)) and str(device_map) != "auto":
        return str(device_map)
    raise ValueError(f"device_map {device_map!r}: a randomly initialised LM (lm_config) takes one device, e.g. 'cpu'")


def resolve_dtype(name: str | torch.dtype, device_map=None) -> torch.dtype:
    """The torch dtype of a ``frozen_dtype`` name, refused (one line, before any weights load) when the named
    devices cannot run it: bf16 on a CUDA GPU without bf16 support (before Ampere), any CUDA map without CUDA."""
    dtype = getattr(torch, name) if isinstance(name, str) else name
    if not isinstance(dtype, torch.dtype) or str(dtype).removeprefix("torch.") not in FROZEN_DTYPES:
        raise ValueError(f"dtype {name!r}: expected one of {', '.join(FROZEN_DTYPES)}")
    devices = set(device_map.values()) if isinstance(device_map, dict) else {device_map}
    cuda = any(d is not None and ("cuda" in str(d) or str(d) == "auto" or isinstance(d, int)) for d in devices)
    if cuda and str(device_map) != "auto" and not torch.cuda.is_available():
        raise ValueError(f"device_map {device_map!r} names a CUDA device but this machine has none")
    if cuda and dtype == torch.bfloat16 and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        raise ValueError(f"dtype bfloat16: the GPU {torch.cuda.get_device_name()} cannot run it; use float16")
    return dtype


def create_model(
    config_or_preset: str | Path | FlamingoConfig = "smollm2",
    lm: nn.Module | None = None,
    vision_encoder: nn.Module | None = None,
    tokenizer=None,
    dtype: str | torch.dtype | None = None,
    device_map=None,
    **overrides,
) -> Flamingo:
    """Build a Flamingo model from a preset name, JSON file or config; frozen parts are loaded by name unless given.

    Args:
        config_or_preset: ``list_models()`` name, JSON path, saved folder or ``FlamingoConfig``.
        lm, vision_encoder, tokenizer: already-built frozen parts to use instead of loading them.
        dtype: the frozen parts' dtype (``frozen_dtype``; ``torch_dtype`` is accepted too, as transformers
            does): ``"bfloat16"`` halves the LM's and the tower's memory; the trained parts stay fp32.
        device_map: where the frozen LM goes, as transformers' ``device_map`` (the vision encoder and the trained
            parts then go to its first device; a cross-attention block goes with the LM layer it wraps).
        **overrides: ``FlamingoConfig`` fields to change.

    ``lm``, ``vision_encoder`` and ``tokenizer`` given as strings are names: they override the config fields.
    """
    dtype = dtype if dtype is not None else overrides.pop("torch_dtype", None)
    if dtype is not None:
        overrides["frozen_dtype"] = dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch.")
    for key, value in (("lm", lm), ("vision_encoder", vision_encoder), ("tokenizer", tokenizer)):
        if isinstance(value, (str, Path)):
            overrides[key] = str(value)
    lm = None if isinstance(lm, (str, Path)) else lm
    vision_encoder = None if isinstance(vision_encoder, (str, Path)) else vision_encoder
    tokenizer = None if isinstance(tokenizer, (str, Path)) else tokenizer
    config = load_config(config_or_preset, **overrides)
    torch_dtype = resolve_dtype(config.frozen_dtype, device_map)  # before any weights load
    if tokenizer is None:
        name = config.tokenizer or (config.lm if config.lm_config is None else None)
        if name is None:
            raise ValueError("a config with lm_config needs a 'tokenizer' name (e.g. 'byte')")
        tokenizer = load_flamingo_tokenizer(name)
    lm = lm if lm is not None else _build_lm(config, torch_dtype, device_map)
    if vision_encoder is None:  # parts given as modules are used as they are
        vision_encoder = load_vision_encoder(config.vision_encoder, seed=config.seed).to(torch_dtype)
    model = Flamingo(config, lm, vision_encoder, tokenizer)
    if device_map is not None:
        model.place_on_lm_devices()
    model.log_parameter_counts()
    return model
