"""Which frames of a video a stage reads: the two frame policies, named once.

Training and evaluation sample differently, on purpose:

- ``random_window`` (training, ``shared.media.load_video``): ``num_frames`` frames ``1/fps``
  seconds apart from a random start. Flamingo trains on clips sampled at 1 frame per second (Alayrac et al.,
  2022, arXiv 2204.14198, appendix A.3.3, VTP); the random start is augmentation over clip positions, and it is
  drawn from the sample's seeded rng, so a resumed run reads the same frames.
- ``evenly_spaced`` (evaluation, ``fewshot_eval.media.load_media``, through the same ``load_video``): frames spread evenly over the whole clip,
  first and last kept. An evaluation must be deterministic and see the whole clip (a caption or an answer may
  depend on any part of it), whatever its length.
"""

from __future__ import annotations

import random

__all__ = ["evenly_spaced", "random_window"]


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
