"""Frozen features computed once: a cache of the vision encoder's outputs (B.1: the encoder is frozen, so an
image's features never change while its pixels and the encoder do not).

An entry is keyed by the encoder's ``identifier`` (which fingerprints its weights) and the bytes of the item's
preprocessed pixels, so a changed file, another preprocessing or another encoder is a different key - a stale
entry cannot be read. Augmented pixels (a random crop or flip per step) would only ever miss: the cache pays for
training without augmentation (stage 2's default processor) and for evaluation, where the same demonstration
images recur in many prompts. In memory (``directory=None``) or on disk, one safetensors file per item under a
folder whose ``manifest.json`` names the encoder; a folder written for another encoder is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from torch import nn

__all__ = ["FrozenFeatureCache"]

MANIFEST = "manifest.json"


class FrozenFeatureCache:
    """Vision-encoder features per media item, computed on a miss.

    Args:
        encoder_identifier: the frozen encoder's ``identifier`` (part of every key).
        directory: a folder to keep the entries in (created; reused by later runs), or None for memory only.
    """

    def __init__(self, encoder_identifier: str, directory: str | Path | None = None):
        self.identifier = str(encoder_identifier)
        self.directory = None if directory is None else Path(directory)
        self.memory: dict[str, torch.Tensor] = {}
        self.hits = self.misses = 0
        if self.directory is not None:
            self._claim(self.directory)

    def _claim(self, folder: Path) -> None:
        manifest = folder / MANIFEST
        if manifest.is_file():
            try:
                written_for = json.loads(manifest.read_text()).get("encoder")
            except (OSError, ValueError, AttributeError):
                written_for = None
            if written_for != self.identifier:
                raise ValueError(f"feature cache {folder} holds features of vision encoder {written_for!r}, not "
                                 f"{self.identifier!r}: pass another folder or delete this one")
            return
        if folder.exists() and any(folder.iterdir()):
            raise ValueError(f"feature cache {folder} is a non-empty folder without {MANIFEST}: pass an empty or "
                             "new folder")
        folder.mkdir(parents=True, exist_ok=True)
        manifest.write_text(json.dumps({"format": "flamingo-feature-cache", "encoder": self.identifier}) + "\n")

    def key(self, pixels: torch.Tensor) -> str:
        """The entry of one item's pixels (T, C, H, W)."""
        digest = hashlib.sha1(f"{self.identifier}|{tuple(pixels.shape)}|{pixels.dtype}".encode())
        digest.update(pixels.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.safetensors"

    def _get(self, key: str, device: torch.device) -> torch.Tensor | None:
        if key in self.memory:
            return self.memory[key].to(device)
        if self.directory is not None and self._path(key).is_file():
            from safetensors.torch import load_file

            features = load_file(str(self._path(key)))["features"]
            self.memory[key] = features
            return features.to(device)
        return None

    def _put(self, key: str, features: torch.Tensor) -> None:
        self.memory[key] = features
        if self.directory is not None:
            from safetensors.torch import save_file

            path = self._path(key)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}")
            save_file({"features": features.cpu().contiguous()}, str(tmp))
            os.replace(tmp, path)  # atomic: another process reads the whole entry or none

    @torch.no_grad()
    def features(self, encoder: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
        """``encoder(pixels)`` for (M, T, C, H, W) pixels, the items seen before read from the cache: (M, T, S, d).

        The missing items are encoded together in one call, in their order.
        """
        keys = [self.key(item) for item in pixels]
        found = [self._get(k, pixels.device) for k in keys]
        missing = [i for i, f in enumerate(found) if f is None]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            computed = encoder(pixels[missing])
            for i, features in zip(missing, computed):
                self._put(keys[i], features.detach())
                found[i] = features.detach()
        return torch.stack(found)
