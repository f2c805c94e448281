"""ShapesWorld's scenes: the vocabulary (colours, shapes, sizes, textures, backgrounds, motions) and the seeded
sampling of still scenes and video clips.

Every scene lists its objects with the main one (the largest) first; ``x`` grows rightwards and ``y``
downwards, as fractions of the image side, so left/right wording follows the pixels.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# Well-separated RGB anchors; each object jitters its colour by a few levels so images are not flat palettes.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 25, 30),
    "orange": (250, 140, 0),
    "yellow": (240, 215, 0),
    "green": (30, 150, 50),
    "blue": (30, 70, 220),
    "purple": (125, 40, 170),
    "pink": (250, 120, 200),
    "brown": (115, 65, 20),
}
COLOUR_JITTER = 10
SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross")
SIZES = ("small", "large")
TEXTURES = ("plain", "striped", "dotted")
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255),
    "cream": (250, 246, 232),
    "light grey": (236, 236, 236),
    "pale blue": (234, 242, 252),
}
DIRECTIONS = ("left", "right", "up", "down")
SPEEDS = ("slow", "fast")
CLIP_TRAVEL = {"slow": 0.25, "fast": 0.5}  # fraction of the frame crossed over the whole clip


class ShapesWorldError(ValueError):
    """A bad option or an output folder that cannot be used; the message says what to do."""




def _rgb(rng: np.random.Generator, colour: str) -> list[int]:
    jitter = rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, size=3)
    return [int(v) for v in np.clip(np.array(COLOURS[colour]) + jitter, 0, 255)]


def _make_object(rng, colour, shape, size, x, y, r) -> dict[str, Any]:
    texture = str(rng.choice(TEXTURES, p=[0.5, 0.25, 0.25]))
    return {"colour": colour, "shape": shape, "size": size, "texture": texture,
            "x": round(float(x), 4), "y": round(float(y), 4), "r": round(float(r), 4), "rgb": _rgb(rng, colour)}


def _radius(rng: np.random.Generator, size: str, video: bool = False) -> float:
    lo, hi = {("large", False): (0.17, 0.22), ("small", False): (0.09, 0.12),
              ("large", True): (0.12, 0.15), ("small", True): (0.08, 0.10)}[(size, video)]
    return float(rng.uniform(lo, hi))


def _fresh_identity(rng, taken: set[tuple[str, str]]) -> tuple[str, str]:
    """A (colour, shape) not yet in the scene, so "the red circle" always names one object."""
    while True:
        pair = (str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES)))
        if pair not in taken:
            taken.add(pair)
            return pair


def sample_scene(
    rng: np.random.Generator,
    n_objects: int | None = None,
    main_colour: str | None = None,
    main_shape: str | None = None,
) -> dict[str, Any]:
    """Draw a still scene of 1-3 non-overlapping objects; ``objects[0]`` is the main (largest) one.

    Args:
        rng: the item's generator.
        n_objects: how many objects (1-3); drawn when None. Fewer are placed if they do not fit.
        main_colour: force the main object's colour (class-folder sets).
        main_shape: force the main object's shape.

    Returns:
        ``{"objects": [...], "background": name}`` with x, y, r as fractions of the image side.
    """
    n = int(rng.integers(1, 4)) if n_objects is None else n_objects
    colour, shape = main_colour or str(rng.choice(list(COLOURS))), main_shape or str(rng.choice(SHAPES))
    taken = {(colour, shape)}
    size = str(rng.choice(SIZES)) if n == 1 else "large"
    r = _radius(rng, size)
    objects = [_make_object(rng, colour, shape, size, *rng.uniform(r + 0.02, 0.98 - r, size=2), r)]
    for _ in range(n - 1):
        r2 = min(_radius(rng, "small"), objects[0]["r"] - 0.02)
        for _attempt in range(100):
            x, y = rng.uniform(r2 + 0.02, 0.98 - r2, size=2)
            if all(math.hypot(x - o["x"], y - o["y"]) > o["r"] + r2 + 0.04 for o in objects):
                colour2, shape2 = _fresh_identity(rng, taken)
                objects.append(_make_object(rng, colour2, shape2, "small", x, y, r2))
                break
    return {"objects": objects, "background": str(rng.choice(list(BACKGROUNDS)))}


def _point_segment_distance(px, py, ax, ay, bx, by) -> float:
    dx, dy = bx - ax, by - ay
    t = max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / max(dx * dx + dy * dy, 1e-12)))
    return math.hypot(px - ax - t * dx, py - ay - t * dy)


def sample_video_scene(rng: np.random.Generator, frames: int) -> dict[str, Any]:
    """A clip: the main object moves (direction, speed); a second one may stay still or appear mid-clip.

    ``motion[i]`` / ``appears[i]`` belong to ``objects[i]``; x, y are the position at the first frame the
    object is visible, dx, dy the step per frame (fractions of the side).
    """
    colour, shape = str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES))
    direction, speed = str(rng.choice(DIRECTIONS)), str(rng.choice(SPEEDS))
    travel, r = CLIP_TRAVEL[speed], _radius(rng, "large", video=True)
    step = travel / max(frames - 1, 1)
    along = rng.uniform(r + 0.02, 0.98 - r - travel)  # start so the whole path stays in frame
    across = rng.uniform(r + 0.02, 0.98 - r)
    sign = 1.0 if direction in ("right", "down") else -1.0
    start = along if sign > 0 else 1.0 - along
    x, y = (start, across) if direction in ("left", "right") else (across, start)
    dx, dy = (sign * step, 0.0) if direction in ("left", "right") else (0.0, sign * step)
    objects = [_make_object(rng, colour, shape, "large", x, y, r)]
    motion = [{"direction": direction, "speed": speed, "dx": round(dx, 5), "dy": round(dy, 5)}]
    appears = [0]
    kind = str(rng.choice(["alone", "still", "appears"], p=[0.3, 0.3, 0.4]))
    if kind != "alone" and frames >= 3:
        r2 = _radius(rng, "small", video=True)
        end = (x + dx * (frames - 1), y + dy * (frames - 1))
        for _attempt in range(100):
            x2, y2 = rng.uniform(r2 + 0.02, 0.98 - r2, size=2)
            if _point_segment_distance(x2, y2, x, y, *end) > r + r2 + 0.04:
                colour2, shape2 = _fresh_identity(rng, {(colour, shape)})
                objects.append(_make_object(rng, colour2, shape2, "small", x2, y2, r2))
                motion.append({"direction": "none", "speed": "none", "dx": 0.0, "dy": 0.0})
                appears.append(int(rng.integers(frames // 3, 2 * frames // 3 + 1)) if kind == "appears" else 0)
                break
    return {"objects": objects, "background": str(rng.choice(list(BACKGROUNDS))), "motion": motion,
            "appears": appears, "fps": 1, "frames": frames}
