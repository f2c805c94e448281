"""Image transforms of stage 1: resize, colour augmentation and a caption-aware horizontal flip.

Flamingo's contrastive pretraining (arXiv 2204.14198, appendix B.1.3) uses colour augmentation and random
horizontal flips. Flipping an image whose caption says "on the left" makes the pair wrong, so the flip can swap
left/right words in the caption too (on by default for ShapesWorld, whose captions describe positions).
Randomness comes from an explicit ``torch.Generator`` so a sample's augmentation is a function of its seed:
multi-process runs and resumed runs see exactly the same pixels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

__all__ = ["EvalTransform", "TrainTransform", "swap_left_right", "to_tensor_normalised"]

_LR = re.compile(r"\b(left|right|Left|Right|LEFT|RIGHT)\b")
_SWAP = {"left": "right", "right": "left", "Left": "Right", "Right": "Left", "LEFT": "RIGHT", "RIGHT": "LEFT"}


def swap_left_right(text: str) -> str:
    """Exchange the words left and right (keeping their case), for captions of flipped images."""
    return _LR.sub(lambda m: _SWAP[m.group(1)], text)


def to_tensor_normalised(image: Image.Image, size: int, mean, std) -> torch.Tensor:
    """RGB, resize to ``size x size`` (bicubic, antialiased), scale to [0, 1], normalise: ``(3, size, size)``."""
    image = image.convert("RGB")
    x = TF.pil_to_tensor(image)  # (3, H, W) uint8
    if x.shape[-2:] != (size, size):
        x = TF.resize(x, [size, size], interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
    x = x.float().div_(255.0).clamp_(0.0, 1.0)
    return TF.normalize(x, list(mean), list(std))


@dataclass
class EvalTransform:
    """Resize and normalise (no randomness)."""

    size: int
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return to_tensor_normalised(image, self.size, self.mean, self.std)


@dataclass
class TrainTransform:
    """Resize, colour jitter and random horizontal flip; applied to an (image, caption) pair.

    Args:
        size: output resolution.
        brightness / contrast / saturation: jitter strengths (factors drawn in [1 - s, 1 + s]).
        hue: hue jitter in [-hue, hue] (0 keeps colour names true; ShapesWorld captions name colours).
        flip_p: probability of a horizontal flip.
        swap_lr: swap left/right words in the caption when the image is flipped.
    """

    size: int
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.0
    flip_p: float = 0.5
    swap_lr: bool = True

    def __call__(self, image: Image.Image, text: str, generator: torch.Generator) -> tuple[torch.Tensor, str]:
        u = torch.rand(5, generator=generator).tolist()
        image = image.convert("RGB")
        x = TF.pil_to_tensor(image)
        if x.shape[-2:] != (self.size, self.size):
            x = TF.resize(x, [self.size, self.size], interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
        x = x.float().div_(255.0)
        if self.brightness:
            x = TF.adjust_brightness(x, 1 + self.brightness * (2 * u[0] - 1))
        if self.contrast:
            x = TF.adjust_contrast(x, 1 + self.contrast * (2 * u[1] - 1))
        if self.saturation:
            x = TF.adjust_saturation(x, 1 + self.saturation * (2 * u[2] - 1))
        if self.hue:
            x = TF.adjust_hue(x, self.hue * (2 * u[3] - 1))
        if u[4] < self.flip_p:
            x = TF.horizontal_flip(x)
            if self.swap_lr:
                text = swap_left_right(text)
        return TF.normalize(x.clamp_(0.0, 1.0), list(self.mean), list(self.std)), text
