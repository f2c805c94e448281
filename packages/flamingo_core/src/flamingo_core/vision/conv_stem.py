"""``conv-tiny``: a seeded random convolutional stem with the frozen-encoder interface, a stand-in for tests and
smoke runs that need no pretrained tower at all."""

from __future__ import annotations

import torch
from torch import nn

from .frozen import freeze_module

__all__ = ["ConvStemVisionEncoder"]


class ConvStemVisionEncoder(nn.Module):
    """A seeded random conv stem: (B, [T,] 3, H, W) -> (B, T, (H/8)*(W/8), feature_dim). For tests only."""

    def __init__(self, feature_dim: int = 32, image_size: int = 32, seed: int = 0):
        super().__init__()
        self.feature_dim, self.image_size, self.embed_dim = feature_dim, image_size, feature_dim
        self.identifier = f"conv-tiny-d{feature_dim}-s{image_size}-seed{seed}"
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.stem = nn.Sequential(
                nn.Conv2d(3, feature_dim, 4, stride=4),
                nn.GELU(),
                nn.Conv2d(feature_dim, feature_dim, 2, stride=2),
            )
        mean, std = torch.tensor([0.5, 0.5, 0.5]), torch.tensor([0.25, 0.25, 0.25])
        self.register_buffer("mean", mean[:, None, None], persistent=False)
        self.register_buffer("std", std[:, None, None], persistent=False)
        freeze_module(self)

    def train(self, mode: bool = True):
        return super().train(False)  # frozen: always eval

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.ndim == 4:
            pixels = pixels[:, None]  # (B, 1, C, H, W)
        b, t = pixels.shape[:2]
        feats = self.stem(pixels.flatten(0, 1).to(self.stem[0].weight.dtype))  # (B*T, d, h, w)
        return feats.flatten(2).transpose(1, 2).reshape(b, t, -1, self.feature_dim)  # (B, T, S, d)

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        pooled = self.forward(pixels)[:, 0].mean(1)  # (B, d)
        return torch.nn.functional.normalize(pooled, dim=-1)

    def preprocess(self, image) -> torch.Tensor:
        import numpy as np

        image = image.convert("RGB").resize((self.image_size, self.image_size))
        x = torch.from_numpy(np.asarray(image, dtype="float32") / 255.0).permute(2, 0, 1)  # (C, H, W)
        return (x - self.mean) / self.std
