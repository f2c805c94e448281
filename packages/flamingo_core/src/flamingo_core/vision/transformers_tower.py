"""transformers CLIP / SigLIP image towers: ``hf:<hub id or folder>``, or a plain folder whose ``config.json`` is a
transformers CLIP or SigLIP config (the full model or its vision part). CLIP: Radford et al., arXiv 2103.00020;
SigLIP: Zhai et al., arXiv 2303.15343.

- Model: ``CLIPVisionModelWithProjection`` (a full CLIP, or a saved vision model with a projection),
  ``CLIPVisionModel`` (a vision model saved without one), ``SiglipVisionModel``; weights loaded in fp32.
- Spatial features ``(N, S, hidden)``: the last hidden state's patch tokens, S = the patch grid. CLIP's class
  token is dropped and its final LayerNorm (``post_layernorm``) applied to the patch tokens, which is what
  open_clip's ``ln_post`` + ``tokens = x[:, 1:]`` gives OpenFlamingo: the resampler sees the same normalised
  patch tokens from a CLIP in either library, and S = h * w as the interface says. SigLIP has no class token and
  its last hidden state is already post-LayerNorm.
- Pooled embedding (what ``get_image_features`` returns), L2-normalised: CLIP's projected class token
  (``image_embeds``; the unprojected ``pooler_output`` for a vision model without projection), SigLIP's
  attention-pooled ``pooler_output`` (the mean patch token for a SigLIP built without its pooling head).
- Preprocessing: the folder's image processor (``preprocessor_config.json`` through ``AutoImageProcessor``).

A hub id is read from the local hub cache (``*.json`` and ``*.safetensors`` of the repo); it is fetched only when
downloads are allowed (``allow_download`` or ``FLAMINGO_ALLOW_DOWNLOAD=1``). Remote code is never run.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import torch

from .frozen import FrozenTower, VisionEncoderError, one_line
from .identity import weights_digest

__all__ = ["TransformersVisionEncoder", "load_transformers_encoder", "transformers_model_type"]

PREFIX = "hf"
# config.json model_type -> which spatial / pooled rule applies (full models and their vision parts alike)
KINDS = {"clip": "clip", "clip_vision_model": "clip", "siglip": "siglip", "siglip_vision_model": "siglip"}


def transformers_model_type(folder: str | Path) -> str | None:
    """The top-level ``model_type`` of ``folder/config.json``; None when there is none (e.g. a stage-1 export)."""
    path = Path(folder) / "config.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data.get("model_type") if isinstance(data, dict) and isinstance(data.get("model_type"), str) else None


class TransformersVisionEncoder(FrozenTower):
    """A transformers CLIP / SigLIP vision model behind the frozen-encoder interface (see the module docstring).

    ``kind`` is ``"clip"`` or ``"siglip"``.
    """

    def __init__(self, model, transform, *, kind: str, **attrs):
        super().__init__(model, transform, **attrs)
        self.kind = kind

    def spatial(self, pixels: torch.Tensor) -> torch.Tensor:
        hidden = self.model(pixel_values=pixels).last_hidden_state  # (N, [1 +] S, hidden)
        if self.kind == "clip":
            return self.model.vision_model.post_layernorm(hidden[:, 1:])  # (N, S, hidden), class token dropped
        return hidden

    def pooled(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=pixels)
        embeds = getattr(out, "image_embeds", None)
        if embeds is None:
            embeds = out.pooler_output
        return embeds if embeds is not None else out.last_hidden_state.mean(1)  # (N, D)


@contextmanager
def _quiet_transformers():
    """Silence transformers' load report while loading: the missing / mismatched keys that matter are checked
    and named here, and a full CLIP's text weights (unused by the vision model) are expected leftovers."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def _local_folder(ref: str, name: str, allow_download: bool) -> Path:
    """The local folder of ``ref``: an existing folder, or a hub repo's cached snapshot."""
    folder = Path(ref).expanduser()
    if folder.is_dir():
        return folder
    if ref.startswith(("/", ".", "~")) or ref.count("/") > 1:  # a path; hub ids are 'name' or 'org/name'
        raise VisionEncoderError(f"vision encoder '{name}': folder {folder} does not exist")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(ref, allow_patterns=["*.json", "*.safetensors"],
                                      local_files_only=not allow_download))
    except (OSError, ValueError) as e:
        how = one_line(e) if allow_download else "not in the local hub cache and downloads are off " \
            "(set FLAMINGO_ALLOW_DOWNLOAD=1)"
        raise VisionEncoderError(f"vision encoder '{name}': '{ref}' is not a local folder and hub repo '{ref}' "
                                 f"could not be read: {how}") from e


def _model_class(model_type: str, folder: Path):
    import transformers

    if KINDS[model_type] == "siglip":
        return transformers.SiglipVisionModel
    architectures = json.loads((folder / "config.json").read_text()).get("architectures") or []
    if model_type == "clip" or "CLIPVisionModelWithProjection" in architectures:
        return transformers.CLIPVisionModelWithProjection
    return transformers.CLIPVisionModel


def _vision_config(model_type: str, folder: Path):
    """A full CLIP's vision config with the full model's ``projection_dim`` (a CLIPConfig keeps it at the top level;
    the nested vision config's own default would not fit the checkpoint's projection); None otherwise."""
    if model_type != "clip":
        return None
    from transformers import CLIPConfig

    full = CLIPConfig.from_pretrained(folder, local_files_only=True)
    vision = full.vision_config
    vision.projection_dim = full.projection_dim
    return vision


def _load_model(cls, model_type: str, folder: Path, name: str):
    """``cls.from_pretrained(folder)`` with every vision weight present and shaped as the config says."""
    try:
        with _quiet_transformers():
            kwargs = {"config": _vision_config(model_type, folder)} if model_type == "clip" else {}
            model, info = cls.from_pretrained(folder, local_files_only=True, dtype=torch.float32,
                                              output_loading_info=True, ignore_mismatched_sizes=True, **kwargs)
    except (OSError, ValueError, RuntimeError) as e:
        raise VisionEncoderError(f"cannot load vision encoder '{name}': {one_line(e)}") from e
    missing, mismatched = sorted(info["missing_keys"]), sorted(k[0] for k in info["mismatched_keys"])
    if missing or mismatched:
        detail = "; ".join(f"{label} {keys[:4]}" for label, keys in (("missing", missing),
                                                                     ("wrong shape", mismatched)) if keys)
        raise VisionEncoderError(f"vision encoder '{name}': the weights in {folder} do not fit {cls.__name__} "
                                 f"({detail})")
    return model.eval()


def _processor_transform(folder: Path, name: str):
    from transformers import AutoImageProcessor

    if not (folder / "preprocessor_config.json").is_file():
        raise VisionEncoderError(f"vision encoder '{name}': {folder} has no preprocessor_config.json (save the "
                                 "model's image processor there with save_pretrained)")
    return _ProcessorTransform(AutoImageProcessor.from_pretrained(folder, local_files_only=True))


class _ProcessorTransform:
    """PIL image -> ``(C, H, W)`` through a transformers image processor."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, image) -> torch.Tensor:
        return self.processor(images=image, return_tensors="pt")["pixel_values"][0]


def load_transformers_encoder(ref: str, seed: int = 0, allow_download: bool = False,
                              name: str | None = None) -> TransformersVisionEncoder:
    """Build the frozen tower named ``hf:<ref>``.

    Args:
        ref: a folder with a transformers CLIP / SigLIP ``config.json``, weights and ``preprocessor_config.json``,
            or a hub id (read from the local cache unless ``allow_download``).
        seed: unused (the weights come from the folder); accepted so every backend takes the same arguments.
        allow_download: let a hub id that is not cached be fetched.
        name: the full name, for messages.
    """
    name = name or f"{PREFIX}:{ref}"
    folder = _local_folder(ref, name, allow_download)
    model_type = transformers_model_type(folder)
    if model_type not in KINDS:
        raise VisionEncoderError(f"vision encoder '{name}': hf: takes CLIP and SigLIP models (model_type "
                                 f"{', '.join(KINDS)}), but {folder / 'config.json'} has model_type {model_type!r}")
    cls = _model_class(model_type, folder)
    model = _load_model(cls, model_type, folder, name)
    vision_cfg = model.config
    files = [folder / "config.json", folder / "preprocessor_config.json", *sorted(folder.glob("*.safetensors")),
             *sorted(folder.glob("*.bin"))]
    has_projection = cls.__name__ == "CLIPVisionModelWithProjection"
    return TransformersVisionEncoder(
        model, _processor_transform(folder, name), kind=KINDS[model_type], feature_dim=vision_cfg.hidden_size,
        embed_dim=vision_cfg.projection_dim if has_projection else vision_cfg.hidden_size,
        image_size=vision_cfg.image_size,
        identifier=f"{PREFIX}:{model_type}@{weights_digest([f for f in files if f.is_file()])}")
