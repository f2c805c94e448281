"""timm image towers: ``timm:<model>`` (random weights, seeded) or ``timm:<model>@<weights file>`` (a timm state
dict, safetensors or a torch file read with ``weights_only=True``). The model is built headless
(``num_classes=0``); a file's classifier weights are dropped.

- Spatial features: ``forward_features``. A ViT's ``(N, prefix + S, d)`` tokens lose their prefix tokens (class
  and register tokens, ``num_prefix_tokens``), so S is the patch grid; a CNN's ``(N, d, h, w)`` map (or an
  ``NHWC`` model's ``(N, h, w, d)``) becomes S = h * w tokens, as Flamingo flattens its NFNet's final map.
- Pooled embedding: ``forward_head(features, pre_logits=True)`` (the model's own global pool and pre-logits
  layers), L2-normalised.
- Preprocessing: ``timm.data.resolve_data_config`` + ``create_transform`` (the model's eval transform).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .frozen import FrozenTower, VisionEncoderError, import_optional, one_line
from .identity import digest, weights_digest

__all__ = ["TimmVisionEncoder", "load_timm_encoder"]

PREFIX = "timm"


class TimmVisionEncoder(FrozenTower):
    """A headless timm model behind the frozen-encoder interface (see the module docstring)."""

    def spatial(self, pixels: torch.Tensor) -> torch.Tensor:
        feats = self.model.forward_features(pixels)
        if feats.dim() == 3:
            return feats[:, getattr(self.model, "num_prefix_tokens", 0):]  # (N, S, d), prefix tokens dropped
        if getattr(self.model, "output_fmt", "NCHW") == "NHWC":
            return feats.flatten(1, 2)  # (N, h, w, d) -> (N, h*w, d)
        return feats.flatten(2).transpose(1, 2)  # (N, d, h, w) -> (N, h*w, d)

    def pooled(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(pixels), pre_logits=True)  # (N, D)


def _load_weights(model, path: Path, name: str) -> None:
    """Load a timm state dict into the headless model, strictly: every key must match."""
    from safetensors import SafetensorError
    from timm.models import load_state_dict

    if not path.is_file():
        raise VisionEncoderError(f"vision encoder '{name}': weights file {path} does not exist")
    try:
        state = load_state_dict(str(path), weights_only=True)
    except (OSError, RuntimeError, ValueError, SafetensorError) as e:
        raise VisionEncoderError(f"vision encoder '{name}': cannot read {path} ({one_line(e)})") from e
    classifiers = model.pretrained_cfg.get("classifier") or ()
    heads = tuple(f"{c}." for c in ([classifiers] if isinstance(classifiers, str) else classifiers))
    state = {k: v for k, v in state.items() if not (heads and k.startswith(heads))}  # num_classes=0: no head
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        detail = "; ".join(f"{label} {sorted(keys)[:4]}" for label, keys in (("missing", missing),
                                                                            ("unexpected", unexpected)) if keys)
        raise VisionEncoderError(f"vision encoder '{name}': {path} does not fit timm model "
                                 f"'{model.pretrained_cfg.get('architecture')}' ({detail})")


def load_timm_encoder(spec: str, seed: int = 0, allow_download: bool = False,
                      name: str | None = None) -> TimmVisionEncoder:
    """Build the frozen tower named ``timm:<spec>``.

    Args:
        spec: ``<model>`` (random weights, seeded) or ``<model>@<weights file>``.
        seed: seeds random weights, so a saved Flamingo reloads the same tower.
        allow_download: unused (nothing here downloads); accepted so every backend takes the same arguments.
        name: the full name, for messages.
    """
    name = name or f"{PREFIX}:{spec}"
    timm = import_optional("timm", name, "timm")
    model_name, _, weights = spec.partition("@")
    if not timm.is_model(model_name):
        raise VisionEncoderError(f"unknown timm model '{model_name}' in vision encoder '{name}': timm knows "
                                 f"{len(timm.list_models())} models (timm.list_models(), e.g. vit_base_patch16_224, "
                                 "resnet50)")
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = timm.create_model(model_name, pretrained=False, num_classes=0)
    except (RuntimeError, ValueError, TypeError) as e:
        raise VisionEncoderError(f"cannot build vision encoder '{name}': {one_line(e)}") from e
    if weights:
        _load_weights(model, Path(weights).expanduser(), name)
    model.eval()
    data_cfg = timm.data.resolve_data_config({}, model=model)
    transform = timm.data.create_transform(**data_cfg, is_training=False)
    tag = weights_digest([Path(weights).expanduser()], model_name) if weights else f"random-{digest(model_name, seed)}"
    return TimmVisionEncoder(model, transform, feature_dim=model.num_features,
                             embed_dim=getattr(model, "head_hidden_size", None) or model.num_features,
                             image_size=data_cfg["input_size"][1], identifier=f"{PREFIX}:{model_name}@{tag}")
