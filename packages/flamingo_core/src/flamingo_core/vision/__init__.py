"""The frozen vision encoder of Flamingo (arXiv 2204.14198, section 2.1): resolution of a config's
``vision_encoder`` name to a module with the frozen-encoder interface (docs/interfaces.md; ``frozen.py``):
``forward(pixels (B, C, H, W) | (B, T, C, H, W)) -> (B, T, S, d)``, ``embed(pixels) -> (B, D)`` (L2-normalised,
RICES), ``preprocess(pil) -> (C, H, W)``, ``feature_dim``, ``embed_dim``, ``image_size``, ``identifier``.

Names, one backend per file:

- ``conv-tiny``: a built-in random conv stem for tests (``conv_stem.py``).
- a stage-1 export folder or a contrastive_encoder preset: the suite's own tower, the default (``stage1.py``).
- ``open_clip:<model>[@<weights file or pretrained tag>]``: an open_clip ViT as OpenFlamingo uses it
  (``open_clip_tower.py``); a folder with ``open_clip_config.json`` means ``open_clip:local-dir:<folder>``.
- ``hf:<hub id or folder>``: a transformers CLIP / SigLIP vision model (``transformers_tower.py``); a folder whose
  ``config.json`` is a transformers CLIP / SigLIP config needs no prefix.
- ``timm:<model>[@<weights file>]``: a timm model's feature map or tokens (``timm_tower.py``).

Nothing is downloaded unless ``allow_download=True`` or ``FLAMINGO_ALLOW_DOWNLOAD=1``.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from .conv_stem import ConvStemVisionEncoder
from .frozen import DOWNLOAD_ENV, FrozenTower, VisionEncoderError, downloads_allowed, freeze_module
from .open_clip_tower import load_open_clip_encoder
from .stage1 import load_stage1_encoder, stage1_presets
from .timm_tower import load_timm_encoder
from .transformers_tower import load_transformers_encoder, transformers_model_type

__all__ = ["BACKENDS", "ConvStemVisionEncoder", "DOWNLOAD_ENV", "FrozenTower", "VisionEncoderError",
           "check_vision_encoder_name", "freeze_module", "load_vision_encoder"]

# name prefix -> loader(spec, seed=, allow_download=, name=)
BACKENDS = {"open_clip": load_open_clip_encoder, "hf": load_transformers_encoder, "timm": load_timm_encoder}


def _unknown(name: str) -> VisionEncoderError:
    presets = ", ".join(stage1_presets()) or "none: contrastive_encoder is not importable"
    missing = f" (there is no folder {name})" if "/" in name else ""
    return VisionEncoderError(
        f"unknown vision encoder '{name}'{missing}: expected 'open_clip:<model>[@<pretrained>]', 'hf:<hub id or folder>', "
        f"'timm:<model>[@<weights file>]', a stage-1 export folder, 'conv-tiny', or a stage-1 preset ({presets})")


def _load_folder(folder: Path, name: str, seed: int, allow_download: bool) -> nn.Module:
    """A folder picks its backend by what it holds: a transformers config (the hf: backend names an unsupported
    model_type), an open_clip config, or else a stage-1 export."""
    if transformers_model_type(folder) is not None:  # stage-1 configs have no top-level model_type
        return load_transformers_encoder(str(folder), seed=seed, allow_download=allow_download, name=name)
    if (folder / "open_clip_config.json").is_file():
        return load_open_clip_encoder(f"local-dir:{folder}", seed=seed, allow_download=allow_download, name=name)
    return load_stage1_encoder(str(folder), seed=seed)


def check_vision_encoder_name(name: str | Path) -> None:
    """Refuse, without importing a backend or reading weights, a name that no backend can take: an unknown
    prefix or preset, a backend prefix with nothing after it. For checks before a run starts; the backend's own
    checks (unknown model, weights not cached) come when ``load_vision_encoder`` runs."""
    name = str(name)
    prefix, sep, spec = name.partition(":")
    if sep and prefix in BACKENDS:
        if not spec:
            raise VisionEncoderError(f"vision encoder '{name}' names no model after '{prefix}:'")
    elif name != "conv-tiny" and not Path(name).is_dir() and name not in stage1_presets():
        raise _unknown(name)


def load_vision_encoder(name: str | Path, seed: int = 0, allow_download: bool | None = None) -> nn.Module:
    """Build the frozen vision encoder named in a Flamingo config.

    Args:
        name: ``conv-tiny``, a stage-1 export folder or preset, ``open_clip:...``, ``hf:...``, ``timm:...``, or a
            transformers / open_clip model folder (see the module docstring).
        seed: seeds random weights (presets, towers without a weights file), so a saved Flamingo reloads the same
            encoder.
        allow_download: let hub ids and pretrained tags that are not cached be fetched; None reads
            ``$FLAMINGO_ALLOW_DOWNLOAD`` ("1" allows).

    Raises:
        VisionEncoderError: (a ``ValueError``) a name no backend knows, a missing optional library, weights that
            do not fit the named model; one line naming the input.
    """
    name = str(name)
    if name == "conv-tiny":
        return ConvStemVisionEncoder(seed=seed)
    allow = downloads_allowed(allow_download)
    check_vision_encoder_name(name)
    prefix, sep, spec = name.partition(":")
    if sep and prefix in BACKENDS:
        return BACKENDS[prefix](spec, seed=seed, allow_download=allow, name=name)
    if Path(name).is_dir():
        return _load_folder(Path(name), name, seed, allow)
    return load_stage1_encoder(name, seed=seed)
