"""Which frames of a video a stage reads: the frame policies, named once.

Training and evaluation sample differently, on purpose:

- ``random_window`` (training, ``shared.media.load_video``): ``num_frames`` frames ``1/fps``
  seconds apart from a random start. Flamingo trains on clips sampled at 1 frame per second (Alayrac et al.,
  2022, arXiv 2204.14198, appendix A.3.3, VTP); the random start is augmentation over clip positions, and it is
  drawn from the sample's seeded rng, so a resumed run reads the same frames.
- ``evenly_spaced`` (evaluation, ``fewshot_eval.media.load_media``, through the same ``load_video``): frames spread evenly over the whole clip,
  first and last kept. An evaluation must be deterministic and see the whole clip (a caption or an answer may
  depend on any part of it), whatever its length. It ignores time: its frames are not a known rate apart.
- ``fixed_rate`` (evaluation, the paper's: 30 frames at 3 FPS, Appendix B.1.2): ``num_frames`` frames ``1/fps``
  seconds apart from the start, fewer when the clip ends first. Its frames carry their times (``Clip.times``),
  so the model can place them on the time axis it was trained on (the Perceiver Resampler interpolates its time
  embeddings between the 1-FPS trained ones).
"""

from __future__ import annotations

import random

__all__ = ["Clip", "evenly_spaced", "fixed_rate", "random_window"]


class Clip(list):
    """A video's frames (a list of images) with ``times``: each frame's time in seconds from the clip's start."""

    def __init__(self, frames, times):
        super().__init__(frames)
        self.times = [float(t) for t in times]
        if len(self.times) != len(self):
            raise ValueError(f"a clip of {len(self)} frames needs {len(self)} times, got {len(self.times)}")


def random_window(duration_s: float, num_frames: int, fps: float, rng: random.Random) -> list[float]:
    """Training policy: timestamps of ``num_frames`` frames ``1/fps`` seconds apart, starting at a random time
    when the clip is longer than the window (else at 0; the caller pads a short clip)."""
    span = (num_frames - 1) / fps
    start = rng.uniform(0.0, duration_s - span) if duration_s > span else 0.0
    return [start + i / fps for i in range(num_frames)]


def evenly_spaced(count: int, num_frames: int) -> list[int]:
    """Evaluation policy: indices of at most ``num_frames`` of ``count`` frames, evenly spaced with the first and
    last kept; every frame when there are no more than ``num_frames``."""
    if count <= num_frames:
        return list(range(count))
    step = (count - 1) / (num_frames - 1) if num_frames > 1 else 0
    return [round(i * step) for i in range(num_frames)]


def fixed_rate(duration_s: float, num_frames: int, fps: float) -> list[float]:
    """The paper's evaluation policy: timestamps of up to ``num_frames`` frames ``1/fps`` seconds apart from 0,
    those before the clip's end (at least the first)."""
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    return [i / fps for i in range(num_frames) if i == 0 or i / fps < duration_s]
