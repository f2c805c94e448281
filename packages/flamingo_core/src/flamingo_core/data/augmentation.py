"""Stage-2 image preprocessing and augmentation of Flamingo (arXiv 2204.14198, Appendix B.1.2): images are
brought to a square keeping their aspect ratio, the border padded with the image's mean colour, and during
training randomly flipped horizontally and colour-augmented.

The square is what the vision encoder's own transform then resizes to its input size, so a wide image keeps its
proportions instead of being squashed. The random part is drawn once per sample from the sample's seeded RNG
(``loader.sample_rng``) and applied to every image and frame of that sample, so resumed and multi-process runs
see the same pixels; a flip can swap the words left and right in the sample's texts (on by default, as in stage
1: ShapesWorld captions name positions).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageStat

from contrastive_encoder.transforms import swap_left_right

__all__ = ["AugmentDraw", "Stage2Augmentation", "pad_to_square"]


def pad_to_square(image: Image.Image) -> Image.Image:
    """The RGB image centred on a square canvas of its longer side, the border filled with its mean colour."""
    image = image.convert("RGB")
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    fill = tuple(int(round(c)) for c in ImageStat.Stat(image).mean)
    canvas = Image.new("RGB", (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


@dataclass(frozen=True)
class AugmentDraw:
    """One sample's random choices: a horizontal flip and the colour-jitter factors."""

    flip: bool
    brightness: float
    contrast: float
    saturation: float
    hue: float


@dataclass
class Stage2Augmentation:
    """Pad to square, then (``augment``) flip with ``flip_p`` and jitter colours, as one draw per sample.

    Args:
        pad: pad every image to a square with its mean colour (aspect-preserving; deterministic).
        augment: draw flips and colour jitter; False leaves the padded image as it is.
        flip_p: probability of a horizontal flip.
        brightness / contrast / saturation: jitter strengths, factors drawn in [1 - s, 1 + s] (stage 1's).
        hue: hue shift in [-hue, hue] of the colour wheel (0 keeps colour names true; ShapesWorld names colours).
        swap_lr: on a flip, swap the words left and right in the sample's texts.
    """

    pad: bool = True
    augment: bool = True
    flip_p: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.0
    swap_lr: bool = True

    def draw(self, rng: random.Random) -> AugmentDraw | None:
        """This sample's choices from its RNG, or None without ``augment``."""
        if not self.augment:
            return None
        u = [rng.random() for _ in range(5)]  # always five draws: the stream does not depend on the strengths
        return AugmentDraw(u[0] < self.flip_p, 1 + self.brightness * (2 * u[1] - 1),
                           1 + self.contrast * (2 * u[2] - 1), 1 + self.saturation * (2 * u[3] - 1),
                           self.hue * (2 * u[4] - 1))

    def image(self, image: Image.Image, draw: AugmentDraw | None) -> Image.Image:
        """One image (or video frame) padded and augmented by ``draw``."""
        image = pad_to_square(image) if self.pad else image.convert("RGB")
        if draw is None:
            return image
        # the jitter of stage 1's TrainTransform (torchvision's functions), here on the PIL image before the
        # encoder's own transform
        import torchvision.transforms.v2.functional as TF

        if draw.flip:
            image = TF.horizontal_flip(image)
        image = TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(image, draw.brightness), draw.contrast),
                                     draw.saturation)
        return TF.adjust_hue(image, draw.hue) if draw.hue else image

    def text(self, text: str, draw: AugmentDraw | None) -> str:
        """A text of the sample, with left and right swapped when ``draw`` flipped its images and ``swap_lr``."""
        return swap_left_right(text) if draw is not None and draw.flip and self.swap_lr else text
