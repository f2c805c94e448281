"""The saved-model folder of a Flamingo (``Flamingo.save_pretrained`` / ``from_pretrained``): ``config.json`` (the
config naming the frozen parts, the added tokens' ids), ``model.safetensors`` (the trained weights only) and
``tokenizer/``; optionally ``vision_encoder/`` (a copied stage-1 export). Self-contained: it loads from any working
directory and as a copy, because local parts are named by absolute path or copied in, and names relative to the
folder resolve against it (``config.load_config``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .config import load_config

__all__ = ["CONFIG_NAME", "TOKENIZER_DIR", "VISION_DIR", "WEIGHTS_NAME", "load_flamingo", "save_flamingo"]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
TOKENIZER_DIR = "tokenizer"  # a saved model's tokenizer, named relative to its folder
VISION_DIR = "vision_encoder"  # a vision encoder copied in (save_pretrained(copy_vision_encoder=True))


def save_flamingo(model, directory: str | Path, overwrite: bool = False,
                  weights: dict[str, torch.Tensor] | None = None, copy_vision_encoder: bool = False) -> Path:
    """``Flamingo.save_pretrained``."""
    import shutil

    from safetensors.torch import save_file

    from contrastive_encoder.shared.outputs import atomic_save_dir

    directory = Path(directory)
    config = model.config.to_dict()
    for key in ("lm", "vision_encoder"):
        if isinstance(config[key], str) and Path(config[key]).exists():
            config[key] = str(Path(config[key]).resolve())
    config["tokenizer"] = TOKENIZER_DIR
    meta = {
        "format": "flamingo_core",
        "format_version": 1,
        "flamingo": config,
        "added_tokens": {model.config.media_token: model.media_token_id, model.config.eoc_token: model.eoc_token_id},
        "vision_encoder_identifier": getattr(model.vision_encoder, "identifier", None),
    }
    weights = {k: v.detach().contiguous().cpu()
               for k, v in (weights if weights is not None else model.trainable_state_dict()).items()}
    with atomic_save_dir(directory, overwrite=overwrite, by="Flamingo.save_pretrained") as tmp:
        if copy_vision_encoder and Path(config["vision_encoder"]).is_dir():
            shutil.copytree(config["vision_encoder"], tmp / VISION_DIR)
            config["vision_encoder"] = VISION_DIR
        model.tokenizer.save_pretrained(str(tmp / TOKENIZER_DIR))
        (tmp / CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n")
        save_file(weights, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
    return directory


def load_flamingo(directory: str | Path, lm=None, vision_encoder=None, tokenizer=None, dtype=None, device_map=None,
                  **overrides):
    """``Flamingo.from_pretrained``: the config and weights are read (and refused in one line naming the file)
    before the frozen parts are built."""
    from contrastive_encoder.shared.readers import load_weights, read_json

    directory = Path(directory)
    if not (directory / CONFIG_NAME).is_file() or not (directory / WEIGHTS_NAME).is_file():
        raise ValueError(f"{directory} is not a saved Flamingo model: expected {CONFIG_NAME} and {WEIGHTS_NAME}")
    meta = read_json(directory / CONFIG_NAME)
    weights = load_weights(directory / WEIGHTS_NAME)
    from .factory import create_model

    model = create_model(load_config(directory, **overrides), lm=lm, vision_encoder=vision_encoder,
                         tokenizer=tokenizer, dtype=dtype, device_map=device_map)
    saved_ids = meta.get("added_tokens", {})
    got = {model.config.media_token: model.media_token_id, model.config.eoc_token: model.eoc_token_id}
    if saved_ids and saved_ids != got:
        raise ValueError(f"tokenizer gives the added tokens ids {got} but the model was saved with {saved_ids}")
    expected = model.trainable_state_dict()
    missing, unexpected = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    reshaped = sorted(k for k in set(expected) & set(weights) if weights[k].shape != expected[k].shape)
    if missing or unexpected or reshaped:
        detail = [f"{label} {names[:5]}" for label, names in (("missing", missing), ("unexpected", unexpected))
                  if names]
        detail += [f"{k} is {tuple(weights[k].shape)}, expected {tuple(expected[k].shape)}" for k in reshaped[:3]]
        raise ValueError(f"{directory / WEIGHTS_NAME} does not match {directory / CONFIG_NAME}: "
                         + "; ".join(detail))
    model.load_state_dict(weights, strict=False)
    return model
