"""The frozen vision encoder that Flamingo stage 2 reads (arXiv 2204.14198, section 2.1).

After contrastive pretraining the image tower is frozen. Flamingo feeds the *spatial* output of the NFNet's
final stage to the Perceiver Resampler, flattened to S = h * w positions per frame; videos are encoded frame by
frame. The pooled, projected, L2-normalised embedding is kept for retrieval of in-context examples (RICES).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from .model import CONFIG_NAME, WEIGHTS_NAME, DualEncoder, VisionTower
from .transforms import EvalTransform

__all__ = ["FrozenVisionEncoder", "load_vision_encoder"]


class FrozenVisionEncoder(nn.Module):
    """The image tower of a DualEncoder, in eval mode with every parameter frozen.

    Attributes:
        feature_dim: channels d of the spatial features.
        embed_dim: size of the joint embedding returned by ``embed``.
        image_size: the square resolution the encoder was trained at.
        identifier: a stable string naming these weights (a cache key for precomputed features).
    """

    def __init__(self, tower: VisionTower, image_size: int, mean, std, identifier: str):
        super().__init__()
        self.tower = tower
        self.feature_dim = tower.spatial_dim
        self.embed_dim = tower.proj.out_features
        self.image_size = int(image_size)
        self.identifier = identifier
        self._transform = EvalTransform(self.image_size, tuple(mean), tuple(std))
        for p in self.parameters():
            p.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> FrozenVisionEncoder:
        """Stays in eval mode whatever the caller asks (a parent's ``.train()`` must not unfreeze it)."""
        return super().train(False)

    @classmethod
    def from_dual_encoder(cls, model: DualEncoder, identifier: str | None = None) -> FrozenVisionEncoder:
        """Wrap the image tower of an in-memory model (the tower is deep-copied, the model is untouched)."""
        import copy

        if identifier is None:
            digest = hashlib.sha1()
            for key, value in sorted(model.vision.state_dict().items()):
                digest.update(key.encode())
                digest.update(value.detach().float().cpu().numpy().tobytes())
            identifier = f"{model.config.name}@{digest.hexdigest()[:12]}"
            if model.config.spatial_features != "final_conv":  # same weights, other features: another cache key
                identifier += f"/{model.config.spatial_features}"
        cfg = model.config
        return cls(copy.deepcopy(model.vision), cfg.image_size, cfg.image_mean, cfg.image_std, identifier)

    @torch.no_grad()
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Spatial features of images or videos.

        Args:
            pixels: ``(B, C, H, W)`` images or ``(B, T, C, H, W)`` videos (frames encoded independently).

        Returns:
            ``(B, T, S, d)`` with T = 1 for images and S = h * w positions of the final feature map.
        """
        if pixels.dim() == 4:
            pixels = pixels.unsqueeze(1)  # (B, 1, C, H, W)
        if pixels.dim() != 5:
            raise ValueError(f"pixels must be (B, C, H, W) or (B, T, C, H, W), got shape {tuple(pixels.shape)}")
        b, t = pixels.shape[:2]
        fmap = self.tower.spatial_map(pixels.flatten(0, 1))  # (B*T, d, h, w)
        return fmap.flatten(2).transpose(1, 2).reshape(b, t, -1, self.feature_dim)  # (B, T, S, d)

    @torch.no_grad()
    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """The L2-normalised pooled embedding ``(B, D_joint)`` of images ``(B, C, H, W)`` (for RICES)."""
        if pixels.dim() != 4:
            raise ValueError(f"embed expects images (B, C, H, W), got shape {tuple(pixels.shape)}")
        return self.tower(pixels)

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """The eval transform: RGB, resize to ``image_size``, normalise; returns ``(C, H, W)`` float."""
        return self._transform(image)


def _folder_identifier(folder: Path) -> str:
    digest = hashlib.sha1((folder / CONFIG_NAME).read_bytes())
    stat = (folder / WEIGHTS_NAME).stat()
    digest.update(f"{stat.st_size}".encode())
    with open(folder / WEIGHTS_NAME, "rb") as fh:  # a cheap content fingerprint: head and tail of the weights
        digest.update(fh.read(1 << 20))
        fh.seek(max(0, stat.st_size - (1 << 20)))
        digest.update(fh.read())
    name = json.loads((folder / CONFIG_NAME).read_text()).get("name", folder.name)
    return f"{name}@{digest.hexdigest()[:12]}"


def load_vision_encoder(path_or_preset: str | Path) -> FrozenVisionEncoder:
    """A frozen vision encoder from a ``save_pretrained`` / ``contrastive-encoder export`` folder or a preset.

    Args:
        path_or_preset: a folder with ``config.json`` + ``model.safetensors``, or a preset name (random
            weights, seeded by the caller; useful for tests and for building the paper's model).
    """
    from .factory import create_model

    folder = Path(path_or_preset)
    if folder.is_dir() and (folder / CONFIG_NAME).is_file():
        return FrozenVisionEncoder.from_dual_encoder(DualEncoder.from_pretrained(folder), _folder_identifier(folder))
    if folder.exists():
        raise FileNotFoundError(f"{folder} is not an exported encoder: expected {CONFIG_NAME} and {WEIGHTS_NAME}")
    return FrozenVisionEncoder.from_dual_encoder(create_model(str(path_or_preset)))
