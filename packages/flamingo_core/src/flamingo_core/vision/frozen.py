"""The frozen-tower contract every vision backend implements (Flamingo, arXiv 2204.14198, section 2.1: the vision
encoder is pretrained, then frozen): ``forward(pixels (B, C, H, W) | (B, T, C, H, W)) -> (B, T, S, d)`` spatial
features, ``embed(pixels (B, C, H, W)) -> (B, D)`` L2-normalised pooled embedding (RICES), ``preprocess(pil) ->
(C, H, W)``, and the attributes ``feature_dim`` (d), ``embed_dim`` (D), ``image_size`` and ``identifier``.

A backend subclasses ``FrozenTower`` and supplies ``spatial`` and ``pooled`` on flat image batches; the base
class handles videos (frames encoded independently), dtype, freezing and eval mode.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DOWNLOAD_ENV", "FrozenTower", "VisionEncoderError", "downloads_allowed", "freeze_module",
           "import_optional", "one_line"]

DOWNLOAD_ENV = "FLAMINGO_ALLOW_DOWNLOAD"  # "1": towers named by hub id / pretrained tag may download


class VisionEncoderError(ValueError):
    """A vision encoder name that cannot be resolved or loaded; the message is one line and names the input."""


def freeze_module(module: nn.Module) -> nn.Module:
    """Set ``requires_grad=False`` on every parameter and put the module in eval mode."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


def downloads_allowed(flag: bool | None = None) -> bool:
    """``flag`` when given, else ``$FLAMINGO_ALLOW_DOWNLOAD == "1"``: off by default, so a run never fetches
    weights it was not told to fetch (and tests never download)."""
    return bool(flag) if flag is not None else os.environ.get(DOWNLOAD_ENV) == "1"


def import_optional(module: str, name: str, extra: str):
    """Import ``module`` for the tower ``name``, or say in one line which pip extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise VisionEncoderError(f"vision encoder '{name}' needs the {module} package, which is not installed "
                                 f"({e}): pip install 'flamingo-core[{extra}]'") from e


class FrozenTower(nn.Module):
    """A library's image model behind the frozen-encoder interface; every parameter frozen, always in eval mode.

    Args:
        model: the library module (kept as ``self.model``, so its weights load by the library's key names).
        transform: PIL image -> ``(C, H, W)`` float tensor, the library's own eval preprocessing.
        feature_dim: d, the width of the spatial tokens.
        embed_dim: D, the width of the pooled embedding.
        image_size: the square input resolution the model expects.
        identifier: a stable string naming these weights (RICES caches features under it).
    """

    def __init__(self, model: nn.Module, transform: Callable, *, feature_dim: int, embed_dim: int, image_size: int,
                 identifier: str):
        super().__init__()
        self.model = model
        self._transform = transform
        self.feature_dim, self.embed_dim, self.image_size = int(feature_dim), int(embed_dim), int(image_size)
        self.identifier = identifier
        freeze_module(self)

    def train(self, mode: bool = True) -> FrozenTower:
        """Stays in eval mode whatever the caller asks (a parent's ``.train()`` must not unfreeze it)."""
        return super().train(False)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def spatial(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> ``(N, S, d)`` spatial tokens."""
        raise NotImplementedError

    def pooled(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> ``(N, D)`` pooled embedding, before L2 normalisation."""
        raise NotImplementedError

    @torch.no_grad()
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Spatial features ``(B, T, S, d)`` of images ``(B, C, H, W)`` (T = 1) or videos ``(B, T, C, H, W)``."""
        if pixels.dim() == 4:
            pixels = pixels.unsqueeze(1)  # (B, 1, C, H, W)
        if pixels.dim() != 5:
            raise ValueError(f"pixels must be (B, C, H, W) or (B, T, C, H, W), got shape {tuple(pixels.shape)}")
        b, t = pixels.shape[:2]
        tokens = self.spatial(pixels.flatten(0, 1).to(self.dtype))  # (B*T, S, d)
        return tokens.reshape(b, t, *tokens.shape[1:])  # (B, T, S, d)

    @torch.no_grad()
    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """The L2-normalised pooled embedding ``(B, D)`` of images ``(B, C, H, W)`` (for RICES)."""
        if pixels.dim() != 4:
            raise ValueError(f"embed expects images (B, C, H, W), got shape {tuple(pixels.shape)}")
        return F.normalize(self.pooled(pixels.to(self.dtype)), dim=-1)

    def preprocess(self, image) -> torch.Tensor:
        """The backend's eval transform of one PIL image: ``(C, H, W)`` float."""
        return self._transform(image.convert("RGB"))


def one_line(error: BaseException, limit: int = 300) -> str:
    """A library's (often many-line) error message on one line, cut at ``limit`` characters."""
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
