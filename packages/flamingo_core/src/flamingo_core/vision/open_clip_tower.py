"""open_clip image towers, ``open_clip:<model>`` or ``open_clip:<model>@<pretrained>``, used as OpenFlamingo 2.0.1
uses them (Awadalla et al., "OpenFlamingo", arXiv 2308.01390).

OpenFlamingo's ``create_model_and_transforms`` calls ``open_clip.create_model_and_transforms(model,
pretrained=...)``, sets ``visual.output_tokens = True``, and ``Flamingo._encode_vision_x`` feeds
``visual(x)[1]`` to the Perceiver Resampler: the ViT's patch tokens after ``ln_post``, the class token dropped and
no projection, width ``vision_cfg["width"]``. The spatial features here are exactly that call's output, so a
converted OpenFlamingo checkpoint sees the features it was trained on. The pooled embedding is ``encode_image``
(the projected class token, ``visual(x)[0]``), L2-normalised; preprocessing is open_clip's eval transform for the
model (and the pretrained tag's mean, std, interpolation and resize mode).

``<model>`` is an open_clip model name (``open_clip.list_models()``, including configs added with
``open_clip.add_model_config``) or ``local-dir:<folder>``. ``<pretrained>`` is a local weights file or one of the
model's pretrained tags (``open_clip.list_pretrained_tags_by_model``) whose file is already in the local cache;
without it the weights are random, seeded. Under open_clip 3.3.0 a tag's ``quick_gelu`` is not applied to a
model config that lacks it (``ViT-L-14@openai`` builds with GELU and warns, as in OpenFlamingo 2.0.1 on that
version); ``ViT-L-14-quickgelu@openai`` builds the activation the weights were trained with.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .frozen import FrozenTower, VisionEncoderError, import_optional, one_line
from .identity import digest, weights_digest

__all__ = ["OpenClipVisionEncoder", "load_open_clip_encoder"]

PREFIX = "open_clip"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


class OpenClipVisionEncoder(FrozenTower):
    """The ``visual`` module of an open_clip CLIP (a ``VisionTransformer``) with ``output_tokens = True``.

    ``spatial``: ``(N, C, H, W) -> (N, S, width)``, S = the patch grid (class token dropped, as OpenFlamingo).
    ``pooled``: ``(N, C, H, W) -> (N, D)``, the projected class token (``CLIP.encode_image``).
    """

    def spatial(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(pixels)[1]  # (N, S, d): OpenFlamingo's vision_encoder(vision_x)[1]

    def pooled(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(pixels)[0]  # (N, D)


def _cached_tag_file(open_clip, tag_cfg: dict) -> str | None:
    """The local file of a pretrained tag, looked up where open_clip would download it, without downloading."""
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    if tag_cfg.get("file"):
        return tag_cfg["file"] if os.path.isfile(tag_cfg["file"]) else None
    if tag_cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache

        repo, filename = os.path.split(tag_cfg["hf_hub"])  # 'org/name/' -> ('org/name', '')
        filename = filename or HF_WEIGHTS_NAME
        names = [HF_SAFE_WEIGHTS_NAME] if filename == HF_WEIGHTS_NAME else []
        names += [filename[:-4] + ".safetensors"] if filename.endswith((".bin", ".pth")) else []
        for candidate in [*names, filename]:
            found = try_to_load_from_cache(repo, candidate)
            if isinstance(found, str):
                return found
    if tag_cfg.get("url"):
        path = os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(tag_cfg["url"]))
        if os.path.isfile(path):
            return path
    return None


def _resolve_weights(open_clip, model_name: str, pretrained: str, name: str,
                     allow_download: bool) -> tuple[str, dict]:
    """``pretrained`` (a file or a tag) -> (a local weights file, the tag's preprocessing overrides)."""
    if os.path.isfile(pretrained):
        return pretrained, {}
    tag_cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    if not tag_cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(model_name)) or "none"
        raise VisionEncoderError(f"vision encoder '{name}': '{pretrained}' is neither a weights file nor a "
                                 f"pretrained tag of open_clip model '{model_name}' (its tags: {tags})")
    path = _cached_tag_file(open_clip, tag_cfg)
    if path is None and allow_download:
        path = open_clip.download_pretrained(tag_cfg)
    if not path:
        raise VisionEncoderError(f"vision encoder '{name}': the weights of open_clip tag '{pretrained}' are not in "
                                 f"the local cache and downloads are off (set FLAMINGO_ALLOW_DOWNLOAD=1, or give a "
                                 f"weights file after '@')")
    fields = {"mean": "image_mean", "std": "image_std", "interpolation": "image_interpolation",
              "resize_mode": "image_resize_mode"}
    return path, {arg: tag_cfg[key] for key, arg in fields.items() if key in tag_cfg}


def _hub_folder(repo: str, name: str, allow_download: bool) -> Path:
    """The local snapshot folder of an open_clip hub repo (config + weights), fetched only if allowed."""
    from huggingface_hub import hf_hub_download
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    def fetch(filename: str) -> str | None:
        try:
            return hf_hub_download(repo, filename, local_files_only=not allow_download)
        except (OSError, ValueError):  # not cached with downloads off, not in the repo, or unreachable
            return None

    config = fetch("open_clip_config.json")
    if config is None or not (fetch(HF_SAFE_WEIGHTS_NAME) or fetch(HF_WEIGHTS_NAME)):
        how = "could not be fetched" if allow_download else "is not in the local hub cache and downloads are off " \
            "(set FLAMINGO_ALLOW_DOWNLOAD=1)"
        raise VisionEncoderError(f"vision encoder '{name}': open_clip hub repo '{repo}' (open_clip_config.json and "
                                 f"its weights) {how}")
    return Path(config).parent


def _resolve_model(open_clip, model_name: str, name: str, allow_download: bool) -> tuple[str, dict | None]:
    """(the name to give open_clip, the model config); a one-line error for a model open_clip does not know."""
    if model_name.startswith("hf-hub:"):
        model_name = f"local-dir:{_hub_folder(model_name[len('hf-hub:'):], name, allow_download)}"
    if model_name.startswith("local-dir:"):
        folder = Path(model_name[len("local-dir:"):])
        if not (folder / "open_clip_config.json").is_file():
            raise VisionEncoderError(f"vision encoder '{name}': {folder} has no open_clip_config.json")
        return model_name, open_clip.get_model_config(model_name)
    cfg = open_clip.get_model_config(model_name.replace("/", "-"))
    if cfg is None:
        known = open_clip.list_models()
        raise VisionEncoderError(f"unknown open_clip model '{model_name}' in vision encoder '{name}': open_clip "
                                 f"knows {len(known)} models (open_clip.list_models(), e.g. ViT-B-32, ViT-L-14)")
    return model_name, cfg


def _identifier_tag(model_name: str, model_cfg: dict | None, path: str | None, overrides: dict, seed: int) -> str:
    """What follows '@' in the identifier: a fingerprint of the weights, or of the config and seed when random."""
    if model_name.startswith("local-dir:"):
        folder = Path(model_name[len("local-dir:"):])
        files = sorted(p for p in folder.iterdir() if p.suffix in _WEIGHT_SUFFIXES)
        if files:
            return weights_digest([folder / "open_clip_config.json", *files])
        path = None  # a config without weights: open_clip initialises it randomly
    if path is not None:
        return weights_digest([path], model_cfg, overrides)
    return f"random-{digest(model_cfg, seed)}"


def load_open_clip_encoder(spec: str, seed: int = 0, allow_download: bool = False,
                           name: str | None = None) -> OpenClipVisionEncoder:
    """Build the frozen tower named ``open_clip:<spec>``.

    Args:
        spec: ``<model>`` (random weights, seeded) or ``<model>@<weights file or pretrained tag>``.
        seed: seeds random weights, so a saved Flamingo reloads the same tower.
        allow_download: let open_clip fetch a tag's weights or an ``hf-hub:`` model that is not cached.
        name: the full name, for messages.
    """
    name = name or f"{PREFIX}:{spec}"
    open_clip = import_optional("open_clip", name, "open_clip")
    label, _, pretrained = spec.partition("@")
    model_name, model_cfg = _resolve_model(open_clip, label, name, allow_download)
    if pretrained and model_name.startswith("local-dir:"):
        raise VisionEncoderError(f"vision encoder '{name}': a local-dir:/hf-hub: model brings its own weights; "
                                 f"drop '@{pretrained}'")
    vision_cfg = (model_cfg or {}).get("vision_cfg", {})
    if "timm_model_name" in vision_cfg or isinstance(vision_cfg.get("layers"), (list, tuple)):  # before building
        raise VisionEncoderError(f"vision encoder '{name}': open_clip model '{label}' has a timm or ResNet image "
                                 "tower, which gives no patch tokens; open_clip: takes ViT models (timm:<model> "
                                 "takes CNNs)")
    path, overrides = _resolve_weights(open_clip, model_name, pretrained, name, allow_download) if pretrained \
        else (None, {})
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            clip, _, transform = open_clip.create_model_and_transforms(model_name, pretrained=path, **overrides)
    except (RuntimeError, ValueError, OSError, KeyError) as e:
        raise VisionEncoderError(f"cannot load vision encoder '{name}': {one_line(e)}") from e
    visual = clip.visual
    if not isinstance(visual, open_clip.transformer.VisionTransformer):
        raise VisionEncoderError(f"vision encoder '{name}': open_clip's {type(visual).__name__} image tower gives no "
                                 "patch tokens; open_clip: takes ViT models (timm:<model> takes CNNs)")
    visual.output_tokens = True  # as OpenFlamingo's factory: forward returns (pooled, tokens)
    width = visual.ln_post.normalized_shape[-1]  # the tokens' width (pool_dim; vision_cfg width without attn pool)
    size = visual.preprocess_cfg["size"]
    return OpenClipVisionEncoder(
        visual, transform, feature_dim=width, embed_dim=visual.output_dim if visual.proj is not None else width,
        image_size=size if isinstance(size, int) else size[0],
        identifier=f"{PREFIX}:{'local' if model_name.startswith('local-dir:') else label}@"
                   f"{_identifier_tag(model_name, model_cfg, path, overrides, seed)}")
