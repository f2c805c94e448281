"""ShapesWorld: a seeded synthetic multimodal world in the formats real users bring.

Flamingo (Alayrac et al., "Flamingo: a Visual Language Model for Few-Shot Learning", arXiv 2204.14198) trains
on image-text pairs (LTIP, ALIGN), video-text pairs (VTP) and interleaved web pages (M3W), and is evaluated
on COCO captioning, VQAv2, classification and video QA. This script writes a tiny stand-in for each, drawn
from coloured shapes, so every loader in the suite is exercised by real files and every caption can be checked
against the scene that produced it. The exact layout is in docs/formats.md.

Every record carries its ``scene``; the first object is the main one (the largest) and every caption names its
colour and shape. ``x`` grows rightwards and ``y`` downwards, so left/right wording follows the pixels.
Items are drawn from ``numpy.random.default_rng([seed, source, index])``, so output is byte-identical for
the same seed and options, and item i of a source does not depend on how many items the others have.

    python tools/shapesworld.py --out data/world --counts default
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "BACKGROUNDS",
    "COLOURS",
    "COLOUR_SYNONYMS",
    "NUMBER_WORDS",
    "PRESETS",
    "SHAPES",
    "SHAPE_SYNONYMS",
    "ShapesWorldError",
    "generate",
    "horizontal",
    "main",
    "relation",
    "render_scene",
    "render_video",
    "resolve_options",
    "sample_scene",
    "sample_video_scene",
]

FORMAT_VERSION = 2  # 2: M3W pages with in-context structure (m3w_pages)
MANIFEST = ".written.json"  # the files the generator wrote: --overwrite replaces or removes only those

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

# Items per source (per class for classify/colour; questions for vqa/videoqa).
PRESETS: dict[str, dict[str, int]] = {
    "small": {
        "ltip_train": 24, "ltip_val": 8, "align_train": 24, "vtp_train": 6, "vtp_val": 2, "m3w_train": 8,
        "coco_train": 8, "coco_val": 4, "coco_test": 4, "vqa_train": 24, "vqa_val": 12,
        "classify_train": 2, "classify_val": 1, "colour_train": 2, "colour_val": 1,
        "videoqa_train": 6, "videoqa_val": 4,
    },
    "default": {
        "ltip_train": 2000, "ltip_val": 200, "align_train": 2000, "vtp_train": 300, "vtp_val": 50,
        "m3w_train": 500, "coco_train": 300, "coco_val": 100, "coco_test": 100, "vqa_train": 1000,
        "vqa_val": 200, "classify_train": 40, "classify_val": 10, "colour_train": 40, "colour_val": 10,
        "videoqa_train": 200, "videoqa_val": 50,
    },
}
# Stable stream ids: adding a source never changes the items of another.
_STREAM = {"ltip": 1, "align": 2, "vtp": 3, "m3w": 4, "coco": 5, "vqa": 6, "classify": 7, "colour": 8,
           "videoqa": 9}
_SPLIT = {"train": 0, "val": 1, "test": 2}


class ShapesWorldError(ValueError):
    """A bad option or an output folder that cannot be used; the message says what to do."""


# --------------------------------------------------------------------------------------------- scenes


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


# ------------------------------------------------------------------------------------------ rendering


def _shape_mask(shape: str, cx: float, cy: float, R: float, side: int) -> Image.Image:
    mask = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(mask)
    if shape == "circle":
        draw.ellipse([cx - R, cy - R, cx + R, cy + R], fill=255)
    elif shape == "square":
        h = 0.85 * R
        draw.rectangle([cx - h, cy - h, cx + h, cy + h], fill=255)
    elif shape == "diamond":
        draw.polygon([(cx, cy - R), (cx + 0.8 * R, cy), (cx, cy + R), (cx - 0.8 * R, cy)], fill=255)
    elif shape == "triangle":  # equilateral, centroid at (cx, cy), apex up
        pts = [(cx + R * math.cos(a), cy + R * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
        draw.polygon(pts, fill=255)
    elif shape == "star":
        pts = [(cx + rr * math.cos(a), cy + rr * math.sin(a))
               for k in range(10) for rr, a in [((R if k % 2 == 0 else 0.45 * R), -math.pi / 2 + k * math.pi / 5)]]
        draw.polygon(pts, fill=255)
    elif shape == "cross":
        w = max(0.3 * R, 1.0)  # at least two pixels wide so the centre pixel is always filled
        draw.rectangle([cx - R, cy - w, cx + R, cy + w], fill=255)
        draw.rectangle([cx - w, cy - R, cx + w, cy + R], fill=255)
    else:
        raise ShapesWorldError(f"unknown shape {shape!r}; expected one of {', '.join(SHAPES)}")
    return mask


def _texture(obj: dict[str, Any], side: int) -> Image.Image | tuple[int, ...]:
    """The fill: a flat colour, or the colour with lighter stripes / dots (a lighter tint keeps the hue)."""
    rgb = tuple(obj["rgb"])
    if obj["texture"] == "plain":
        return rgb
    tint = tuple(int(round(c + 0.45 * (255 - c))) for c in rgb)
    layer = Image.new("RGB", (side, side), rgb)
    draw = ImageDraw.Draw(layer)
    period = max(4, round(obj["r"] * side / 2))
    if obj["texture"] == "striped":  # diagonal stripes
        for k in range(-side, 2 * side, period):
            draw.line([(k, 0), (k + side, side)], fill=tint, width=max(1, period // 2))
    else:
        dot = max(1.0, period / 4)
        for gy in range(period // 2, side, period):
            for gx in range(period // 2, side, period):
                draw.ellipse([gx - dot, gy - dot, gx + dot, gy + dot], fill=tint)
    return layer


def _draw_object(img: Image.Image, obj: dict[str, Any], x: float, y: float) -> None:
    side = img.size[0]
    mask = _shape_mask(obj["shape"], x * side, y * side, obj["r"] * side, side)
    img.paste(_texture(obj, side), (0, 0), mask)


def render_scene(scene: dict[str, Any], image_size: int) -> Image.Image:
    """Draw a still scene; the main object is drawn last so nothing covers it."""
    img = Image.new("RGB", (image_size, image_size), BACKGROUNDS[scene["background"]])
    for obj in reversed(scene["objects"]):
        _draw_object(img, obj, obj["x"], obj["y"])
    return img


def render_video(scene: dict[str, Any], image_size: int) -> list[Image.Image]:
    """Draw every frame of a clip from :func:`sample_video_scene`."""
    frames = []
    for t in range(scene["frames"]):
        img = Image.new("RGB", (image_size, image_size), BACKGROUNDS[scene["background"]])
        for obj, mo, t0 in reversed(list(zip(scene["objects"], scene["motion"], scene["appears"]))):
            if t >= t0:
                _draw_object(img, obj, obj["x"] + mo["dx"] * (t - t0), obj["y"] + mo["dy"] * (t - t0))
        frames.append(img)
    return frames


def _video_codec() -> tuple[str, str, dict[str, str]] | None:
    """(codec, pixel format, options) for near-lossless mp4, or None without PyAV."""
    try:
        import av
    except ImportError:
        return None
    if "libx264" in av.codecs_available:  # qp 0 in 4:4:4 is lossless up to RGB<->YUV rounding
        return "libx264", "yuv444p", {"qp": "0", "preset": "veryfast"}
    if "mpeg4" in av.codecs_available:
        return "mpeg4", "yuv420p", {"qscale": "1"}
    return None


def _write_video(frames: list[Image.Image], path: Path, fmt: str) -> None:
    if fmt == "frames":
        path.mkdir(parents=True, exist_ok=True)
        width = max(2, len(str(len(frames) - 1)))
        for t, frame in enumerate(frames):
            frame.save(path / f"{t:0{width}d}.png")
        return
    import av

    codec, pix_fmt, options = _video_codec()
    side = frames[0].size[0]
    # bitexact + one thread: no encoder/muxer version strings that vary, and byte-identical reruns
    with av.open(str(path), "w", format="mp4", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream(codec, rate=1)
        stream.width, stream.height, stream.pix_fmt, stream.options = side, side, pix_fmt, options
        stream.codec_context.thread_count = 1
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_image(frame)))
        container.mux(stream.encode())


# ------------------------------------------------------------------------------------------- language

_SIZE_WORDS = {"large": ["large", "big"], "small": ["small", "little"]}
_TEXTURE_ADJ = {"plain": ["", "", "solid ", "plain "], "striped": ["striped "], "dotted": ["dotted ", "spotted "]}
_TEXTURE_SUFFIX = {"plain": "", "striped": " with stripes", "dotted": " covered in dots"}
SHAPE_SYNONYMS = {"circle": ["circle", "disc", "round shape"], "square": ["square", "box"],
                   "triangle": ["triangle", "three-sided shape"], "diamond": ["diamond", "rhombus"],
                   "star": ["star", "five-pointed star"], "cross": ["cross", "plus sign"]}
COLOUR_SYNONYMS = {"red": ["red", "scarlet"], "orange": ["orange"], "yellow": ["yellow"], "green": ["green"],
                    "blue": ["blue"], "purple": ["purple", "violet"], "pink": ["pink"], "brown": ["brown"]}
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}
_DIRECTION_PHRASES = {"right": ["to the right", "towards the right", "rightwards"],
                      "left": ["to the left", "towards the left", "leftwards"],
                      "up": ["upwards", "up", "towards the top"], "down": ["downwards", "down", "towards the bottom"]}
_SPEED_ADVERBS = {"slow": ["slowly", "gently"], "fast": ["quickly", "fast", "rapidly"]}
_UNRELATED = ["free shipping on all orders", "click here to enlarge", "IMG_{n}.JPG", "best price guaranteed",
              "untitled design", "my holiday photos {n}", "stock photo", "download now", "banner ad 728x90",
              "share this post", "thumbnail", "image may contain: text", "page {n} of 12", "logo"]
_FILLER = ["I made this one last week.", "Thanks for reading!", "More pictures are coming soon.",
           "Let me know what you think in the comments.", "This post is part of a series.",
           "Drawing shapes is a relaxing hobby.", "The next one took longer to finish.",
           "Here is another one from the same set."]
_TITLES = ["My collection of shapes", "Notes from art class", "Shapes I drew this week", "A small gallery",
           "Learning colours with shapes", "Sticker sheet preview", "Geometry for kids", "Weekend doodles"]


def _pick(rng: np.random.Generator, options: list[str] | tuple[str, ...]) -> str:
    return str(options[int(rng.integers(len(options)))])


def _a(word: str) -> str:
    return ("an " if word[:1] in "aeiou" else "a ") + word


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def horizontal(x: float) -> str:
    """``left`` / ``middle`` / ``right`` from a centre x in [0, 1] (x grows rightwards)."""
    return "left" if x < 0.4 else "right" if x > 0.6 else "middle"


def vertical(y: float) -> str:
    """``top`` / ``middle`` / ``bottom`` from a centre y in [0, 1] (y grows downwards)."""
    return "top" if y < 0.4 else "bottom" if y > 0.6 else "middle"


def relation(main: dict[str, Any], other: dict[str, Any]) -> str:
    """Where ``other`` is relative to ``main``: "to the left of", "to the right of", "above", "below", "near"."""
    dx, dy = other["x"] - main["x"], other["y"] - main["y"]
    if abs(dx) >= 0.15 and abs(dx) >= abs(dy):
        return "to the right of" if dx > 0 else "to the left of"
    if abs(dy) >= 0.15:
        return "below" if dy > 0 else "above"
    return "near"


def _position(rng, obj: dict[str, Any]) -> str:
    h, v = horizontal(obj["x"]), vertical(obj["y"])
    if h == "middle" and v == "middle":
        return _pick(rng, ["in the centre", "in the middle"])
    if v == "middle":
        return _pick(rng, [f"on the {h}", f"on the {h} side", f"towards the {h}"])
    if h == "middle":
        return _pick(rng, [f"at the {v}", f"near the {v}"])
    return _pick(rng, [f"in the {v} {h} corner", f"at the {v} {h}", f"on the {h}, near the {v}"])


def _noun_phrase(rng, obj, synonyms: bool = False, size: bool = True) -> str:
    shape = _pick(rng, SHAPE_SYNONYMS[obj["shape"]]) if synonyms else obj["shape"]
    size_word = _pick(rng, _SIZE_WORDS[obj["size"]]) + " " if size else ""
    return f"{size_word}{_pick(rng, _TEXTURE_ADJ[obj['texture']])}{obj['colour']} {shape}"


def ltip_caption(rng: np.random.Generator, scene: dict[str, Any]) -> str:
    """A clean, long caption: main object (canonical colour and shape words), count, the others' places."""
    main, others = scene["objects"][0], scene["objects"][1:]
    np_main = _noun_phrase(rng, main, size=bool(rng.random() < 0.7))
    pos = _position(rng, main)
    first = _pick(rng, [
        f"{_cap(_a(np_main))} {pos}.",
        f"{_cap(pos)}, there is {_a(np_main)}.",
        f"The picture shows {_a(main['colour'] + ' ' + main['shape'])}{_TEXTURE_SUFFIX[main['texture']]} {pos}.",
        f"This image contains {_a(np_main)} {pos}.",
    ])
    n = len(scene["objects"])
    count = (_pick(rng, ["It is the only shape in the image.", "No other shapes are present."]) if n == 1 else
             _pick(rng, [f"There are {NUMBER_WORDS[n]} shapes in total.", f"{_cap(NUMBER_WORDS[n])} shapes are visible."]))
    rest = []
    for other in others:
        rel, np_other = relation(main, other), _noun_phrase(rng, other, synonyms=True)
        if rel in ("to the left of", "to the right of") and rng.random() < 0.4:
            rest.append(f"To its {rel.split()[-2]} is {_a(np_other)}.")
        else:
            rest.append(_pick(rng, [f"{_cap(_a(np_other))} is {rel} it.", f"{_cap(rel)} it, {_a(np_other)} can be seen."]))
    if rng.random() < 0.3:
        rest.append(f"The background is {scene['background']}.")
    order = int(rng.integers(3))
    sentences = [first, *rest, count] if order == 0 else [count, first, *rest] if order == 1 else [first, count, *rest]
    return " ".join(sentences)


def _typo(rng, word: str) -> str:
    if len(word) < 3:
        return word
    i = int(rng.integers(len(word) - 1))
    kind = int(rng.integers(3))
    if kind == 0:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind == 1:
        return word[:i] + word[i + 1:]
    return word[:i] + word[i] + word[i:]


def align_caption(rng: np.random.Generator, scene: dict[str, Any]) -> tuple[str, str]:
    """A short noisy alt-text and the noise applied ("clean", "unrelated", or e.g. "dropped+typo")."""
    if rng.random() < 0.15:
        return _pick(rng, _UNRELATED).format(n=int(rng.integers(1000, 9999))), "unrelated"
    main = scene["objects"][0]
    colour, shape = _pick(rng, COLOUR_SYNONYMS[main["colour"]]), _pick(rng, SHAPE_SYNONYMS[main["shape"]])
    size = _pick(rng, _SIZE_WORDS[main["size"]])
    words = _pick(rng, [f"{colour} {shape}", f"{size} {colour} {shape} icon", f"{colour} {shape} clipart png",
                        f"photo of {_a(colour)} {shape}", f"{colour} {shape} on {scene['background']} background",
                        f"{shape} {colour} vector", f"{size} {colour} {shape} sticker"]).split()
    noise = []
    if len(words) > 2 and rng.random() < 0.3:
        del words[int(rng.integers(len(words)))]
        noise.append("dropped")
    if rng.random() < 0.3:
        i = int(rng.integers(len(words)))
        words[i] = _typo(rng, words[i])
        noise.append("typo")
    text = " ".join(words)
    if rng.random() < 0.3:
        text = _pick(rng, [text.upper(), text.title(), text.replace(" ", "_"), text + " | shop"])
        noise.append("style")
    return text, "+".join(noise) or "clean"


def short_caption(rng: np.random.Generator, scene: dict[str, Any]) -> str:
    """One COCO-style sentence; naming the main object's colour and shape."""
    main, n = scene["objects"][0], len(scene["objects"])
    np_main, pos = _noun_phrase(rng, main, size=bool(rng.random() < 0.5)), _position(rng, main)
    options = [f"{_cap(_a(np_main))} {pos}.",
               f"{_cap(_a(np_main))} on {_a(scene['background'])} background.",
               f"There is {_a(main['colour'] + ' ' + main['shape'])}{_TEXTURE_SUFFIX[main['texture']]} in this picture.",
               f"A picture of {_a(main['colour'] + ' ' + main['shape'])} {pos}."]
    if n > 1:
        other = scene["objects"][1]
        options += [f"{_cap(NUMBER_WORDS[n])} shapes; the largest is {_a(main['colour'] + ' ' + main['shape'])}.",
                    f"{_cap(_a(np_main))} with {_a(other['colour'] + ' ' + other['shape'])} {relation(main, other)} it."]
    else:
        options.append(f"A single {main['colour']} {main['shape']} {pos}.")
    return _pick(rng, options)


def _m3w_description(rng: np.random.Generator, scene: dict[str, Any], k: int) -> str:
    """The text after the k-th image of a page: a caption, or a web-page style mention of the main object."""
    kind = int(rng.integers(3))
    if kind == 0:
        return short_caption(rng, scene)
    if kind == 1:
        return ltip_caption(rng, scene)
    lead = _pick(rng, ["This is", "Here you can see", "Above is", f"Number {k + 1} is"])
    return f"{lead} {_a(_noun_phrase(rng, scene['objects'][0]))} {_position(rng, scene['objects'][0])}."


def video_caption(rng: np.random.Generator, scene: dict[str, Any]) -> str:
    """Colour, shape and motion of the main object, then what the second object does."""
    main, mo = scene["objects"][0], scene["motion"][0]
    speed, way = _pick(rng, _SPEED_ADVERBS[mo["speed"]]), _pick(rng, _DIRECTION_PHRASES[mo["direction"]])
    name = f"{main['colour']} {main['shape']}"
    parts = [_pick(rng, [f"{_cap(_a(name))} moves {speed} {way}.", f"The {name} slides {way} {speed}.",
                         f"{_cap(_a(name))} travels {way}, moving {speed}."])]
    if len(scene["objects"]) > 1:
        other, t0 = scene["objects"][1], scene["appears"][1]
        np_other = f"{other['colour']} {other['shape']}"
        if t0 > 0:
            parts.append(_pick(rng, [f"Midway through the clip, {_a(np_other)} appears {_position(rng, other)}.",
                                     f"Then {_a(np_other)} appears."]))
        else:
            parts.append(_pick(rng, [f"{_cap(_a(np_other))} stays still {_position(rng, other)}.",
                                     f"A small {np_other} does not move."]))
    return " ".join(parts)


# ---------------------------------------------------------------------------------- answers (VQA style)

_CONFUSIONS = {
    "red": ["orange", "dark red", "pink"], "orange": ["yellow", "red", "dark orange"],
    "yellow": ["orange", "gold", "light yellow"], "green": ["dark green", "lime", "teal"],
    "blue": ["dark blue", "purple", "navy"], "purple": ["violet", "blue", "pink"],
    "pink": ["purple", "magenta", "light pink"], "brown": ["orange", "dark brown", "red"],
    "circle": ["round", "oval", "ball"], "square": ["rectangle", "box", "diamond"],
    "triangle": ["pyramid", "arrow", "star"], "diamond": ["square", "rhombus", "kite"],
    "star": ["flower", "cross", "triangle"], "cross": ["plus", "x", "star"],
    "yes": ["no"], "no": ["yes"], "left": ["right", "middle", "center"], "right": ["left", "middle", "center"],
    "up": ["down", "right", "left"], "down": ["up", "left", "right"],
    "slow": ["fast", "slowly", "medium"], "fast": ["slow", "quickly", "very fast"],
}


def human_answers(rng: np.random.Generator, answer: str) -> list[str]:
    """Ten annotator answers with realistic disagreement.

    At least 6 of the 10 give ``answer`` (a number may be spelled out, as VQA annotators do); the rest pick
    plausible confusions, so ``answer`` is always the clear majority after VQA's number normalisation.
    """
    if answer.isdigit():
        confusers = [str(int(answer) + d) for d in (-1, 1) if int(answer) + d >= 0]
    else:
        confusers = _CONFUSIONS.get(answer, ["i don't know"])
    wrong = min(4, int(rng.binomial(10, rng.uniform(0.0, 0.3))))
    answers = [answer] * (10 - wrong) + [_pick(rng, confusers) for _ in range(wrong)]
    if answer.isdigit() and int(answer) in NUMBER_WORDS:  # some annotators spell numbers out
        for i in range(10 - wrong):
            if rng.random() < 0.15 and i > 0:
                answers[i] = NUMBER_WORDS[int(answer)]
    order = rng.permutation(10)
    return [answers[i] for i in order]


def image_questions(rng: np.random.Generator, scene: dict[str, Any]) -> list[dict[str, str]]:
    """VQAv2-style questions whose answers follow from the scene, in random order."""
    objs = scene["objects"]
    shapes = [o["shape"] for o in objs]
    colours = [o["colour"] for o in objs]
    qs = []
    unique_shape = [o for o in objs if shapes.count(o["shape"]) == 1]
    if unique_shape:
        o = unique_shape[int(rng.integers(len(unique_shape)))]
        qs.append({"question": f"What color is the {o['shape']}?", "answer": o["colour"],
                   "question_type": "what color is the", "answer_type": "other"})
    unique_colour = [o for o in objs if colours.count(o["colour"]) == 1]
    if unique_colour:
        o = unique_colour[int(rng.integers(len(unique_colour)))]
        qs.append({"question": f"What shape is the {o['colour']} object?", "answer": o["shape"],
                   "question_type": "what shape is the", "answer_type": "other"})
    qs.append({"question": _pick(rng, ["How many shapes are there?", "How many shapes are in the picture?"]),
               "answer": str(len(objs)), "question_type": "how many", "answer_type": "number"})
    if rng.random() < 0.5:
        o = objs[int(rng.integers(len(objs)))]
        colour, shape, ans = o["colour"], o["shape"], "yes"
    else:
        colour, shape = str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES))
        ans = "yes" if any(o["colour"] == colour and o["shape"] == shape for o in objs) else "no"
    qs.append({"question": f"Is there {_a(colour)} {shape}?", "answer": ans, "question_type": "is there a",
               "answer_type": "yes/no"})
    sided = [o for o in objs if horizontal(o["x"]) != "middle"]
    if sided:
        o = sided[int(rng.integers(len(sided)))]
        qs.append({"question": f"Is the {o['colour']} {o['shape']} on the left or the right?",
                   "answer": horizontal(o["x"]), "question_type": "is the", "answer_type": "other"})
    return [qs[i] for i in rng.permutation(len(qs))]


def video_questions(rng: np.random.Generator, scene: dict[str, Any]) -> list[dict[str, str]]:
    """Video QA questions (direction, speed, colour, appearing shape) in random order."""
    main, mo = scene["objects"][0], scene["motion"][0]
    name = f"{main['colour']} {main['shape']}"
    qs = [{"question": f"In which direction does the {name} move?", "answer": mo["direction"],
           "question_type": "direction"},
          {"question": f"Does the {name} move fast or slowly?", "answer": mo["speed"], "question_type": "speed"},
          {"question": "What color is the moving shape?", "answer": main["colour"], "question_type": "color"}]
    if len(scene["objects"]) > 1 and scene["appears"][1] > 0:
        qs.append({"question": "What shape appears during the video?", "answer": scene["objects"][1]["shape"],
                   "question_type": "appears"})
    return [qs[i] for i in rng.permutation(len(qs))]


# -------------------------------------------------------------------------------------------- writers


class _Writer:
    """Shared state for one generation run: output root, options, item generators, counters."""

    def __init__(self, root: Path, seed: int, image_size: int, frames: int, video_format: str, bar):
        self.root, self.seed, self.image_size, self.frames = root, seed, image_size, frames
        self.video_format, self.bar = video_format, bar
        self.n_images = self.n_videos = 0

    def rng(self, stream: str, split: str, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, _STREAM[stream], _SPLIT[split], index])

    def image(self, scene: dict[str, Any], path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        render_scene(scene, self.image_size).save(path)
        self.n_images += 1

    def video(self, scene: dict[str, Any], stem: Path) -> str:
        stem.parent.mkdir(parents=True, exist_ok=True)
        path = stem.with_suffix(".mp4") if self.video_format == "mp4" else stem
        _write_video(render_video(scene, self.image_size), path, self.video_format)
        self.n_videos += 1
        return path.name

    def jsonl(self, path: Path, records: list[dict[str, Any]]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            for rec in records:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")

    def json(self, path: Path, obj: Any) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

    def pairs(self, source: str, split: str, n: int, caption: Callable) -> None:
        records = []
        self.bar.set_description_str(f"{source}/{split}")
        for i in range(n):
            self.bar.update(1)
            rng = self.rng(source, split, i)
            scene = sample_scene(rng)
            name = f"images/{split}_{i:06d}.png"
            self.image(scene, self.root / source / name)
            if source == "align":
                text, noise = caption(rng, scene)
                records.append({"image": name, "text": text, "noise": noise, "scene": scene})
            else:
                records.append({"image": name, "text": caption(rng, scene), "scene": scene})
        self.jsonl(self.root / source / f"{split}.jsonl", records)

    def vtp(self, split: str, n: int) -> None:
        records = []
        self.bar.set_description_str(f"vtp/{split}")
        for i in range(n):
            self.bar.update(1)
            rng = self.rng("vtp", split, i)
            scene = sample_video_scene(rng, self.frames)
            name = self.video(scene, self.root / "vtp" / "videos" / f"{split}_{i:06d}")
            records.append({"video": f"videos/{name}", "text": video_caption(rng, scene), "scene": scene})
        self.jsonl(self.root / "vtp" / f"{split}.jsonl", records)

    def m3w(self, split: str, n: int, structured: float) -> None:
        from m3w_pages import m3w_page  # beside this file; imported here, as it uses this module's scenes

        records = []
        self.bar.set_description_str(f"m3w/{split}")
        for i in range(n):
            self.bar.update(1)
            rng = self.rng("m3w", split, i)
            items, page = m3w_page(rng, structured, sample_scene, _m3w_description, _TITLES, _FILLER,
                                   list(COLOURS), SHAPES)
            texts, images, scenes, k = [], [], [], 0
            for text, scene in items:
                name = None
                if scene is not None:
                    name = f"images/{split}_{i:06d}_{k}.png"
                    self.image(scene, self.root / "m3w" / name)
                    k += 1
                texts.append(text)
                images.append(name)
                scenes.append(scene)
            records.append({"texts": texts, "images": images, "scenes": scenes, "page": page})
        self.jsonl(self.root / "m3w" / f"{split}.jsonl", records)

    def coco(self, counts: dict[str, int]) -> None:
        entries, sentid = [], 0
        for split in ("train", "val", "test"):
            self.bar.set_description_str(f"coco/{split}")
            for i in range(counts[f"coco_{split}"]):
                self.bar.update(1)
                rng = self.rng("coco", split, i)
                scene = sample_scene(rng)
                imgid = len(entries)
                name = f"{split}_{i:06d}.png"
                self.image(scene, self.root / "eval" / "coco" / "images" / name)
                raws: list[str] = []
                for _attempt in range(50):  # five distinct captions where the templates allow
                    raw = short_caption(rng, scene)
                    if raw not in raws or _attempt >= 40:
                        raws.append(raw)
                    if len(raws) == 5:
                        break
                sentences = [{"raw": r, "tokens": re.findall(r"[a-z0-9]+", r.lower()), "imgid": imgid,
                              "sentid": sentid + k} for k, r in enumerate(raws)]
                entries.append({"filepath": "images", "filename": name, "imgid": imgid, "cocoid": imgid + 1,
                                "split": split, "sentids": [s["sentid"] for s in sentences],
                                "sentences": sentences, "scene": scene})
                sentid += 5
        self.json(self.root / "eval" / "coco" / "dataset_coco.json", {"images": entries, "dataset": "coco"})

    def vqa(self, split: str, n_questions: int) -> None:
        base = 1 if split == "train" else 1_000_001
        questions, annotations, scenes, i = [], [], [], 0
        self.bar.set_description_str(f"vqav2/{split}")
        while len(questions) < n_questions:
            rng = self.rng("vqa", split, i)
            scene, image_id = sample_scene(rng), base + i
            name = f"images/{image_id:012d}.png"
            self.image(scene, self.root / "eval" / "vqav2" / name)
            scenes.append({"image_id": image_id, "image": name, "scene": scene})
            for k, q in enumerate(image_questions(rng, scene)[:3]):
                if len(questions) == n_questions:
                    break
                qid = image_id * 10 + k
                answers = human_answers(rng, q["answer"])
                questions.append({"image_id": image_id, "question": q["question"], "question_id": qid})
                annotations.append({
                    "question_id": qid, "image_id": image_id, "question_type": q["question_type"],
                    "answer_type": q["answer_type"], "multiple_choice_answer": q["answer"],
                    "answers": [{"answer": a, "answer_confidence": "yes" if a == q["answer"] else
                                 _pick(rng, ["yes", "maybe"]), "answer_id": j + 1} for j, a in enumerate(answers)]})
                self.bar.update(1)
            i += 1
        info = {"task_type": "Open-Ended", "data_type": "shapesworld", "data_subtype": f"{split}2014"}
        self.json(self.root / "eval" / "vqav2" / f"{split}_questions.json", {**info, "questions": questions})
        self.json(self.root / "eval" / "vqav2" / f"{split}_annotations.json", {**info, "annotations": annotations})
        self.jsonl(self.root / "eval" / "vqav2" / f"{split}_scenes.jsonl", scenes)

    def class_folders(self, task: str, split: str, per_class: int) -> None:
        classes = sorted(SHAPES) if task == "classify" else sorted(COLOURS)  # ImageFolder's index order
        records, index = [], 0
        self.bar.set_description_str(f"{task}/{split}")
        for label in classes:
            for _ in range(per_class):
                self.bar.update(1)
                rng = self.rng(task, split, index)
                scene = sample_scene(rng, **({"main_shape": label} if task == "classify" else {"main_colour": label}))
                name = f"{label}/{index:06d}.png"
                self.image(scene, self.root / "eval" / task / split / name)
                records.append({"image": f"{split}/{name}", "label": label, "scene": scene})
                index += 1
        self.json(self.root / "eval" / task / "classes.json", classes)
        self.jsonl(self.root / "eval" / task / f"{split}.jsonl", records)

    def videoqa(self, split: str, n_questions: int) -> None:
        records, i = [], 0
        self.bar.set_description_str(f"videoqa/{split}")
        while len(records) < n_questions:
            rng = self.rng("videoqa", split, i)
            scene = sample_video_scene(rng, self.frames)
            name = self.video(scene, self.root / "eval" / "videoqa" / "videos" / f"{split}_{i:06d}")
            for k, q in enumerate(video_questions(rng, scene)[:2]):
                if len(records) == n_questions:
                    break
                records.append({"video": f"videos/{name}", "question": q["question"],
                                "answers": human_answers(rng, q["answer"]), "answer": q["answer"],
                                "question_id": i * 10 + k, "question_type": q["question_type"], "scene": scene})
                self.bar.update(1)
            i += 1
        self.jsonl(self.root / "eval" / "videoqa" / f"{split}.jsonl", records)


# ------------------------------------------------------------------------------------------- generate


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_description_str(self, desc: str) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(enabled: bool, total: int):
    """One tqdm bar over every item on stderr when enabled (and tqdm is installed), else a no-op."""
    if enabled:
        try:
            from tqdm import tqdm

            return tqdm(total=total, unit="item", file=sys.stderr, leave=False)
        except ImportError:
            pass
    return _NoBar()


def resolve_options(
    seed: int = 0,
    image_size: int = 64,
    sizes: dict[str, int] | None = None,
    counts: str = "small",
    video_frames: int = 8,
    video_format: str = "auto",
    m3w_structured: float = 0.5,
) -> dict[str, Any]:
    """Validate the options and return them in the form stored in world.json."""
    if counts not in PRESETS:
        raise ShapesWorldError(f"unknown counts preset {counts!r}; expected one of {', '.join(PRESETS)}")
    resolved = dict(PRESETS[counts])
    for key, value in (sizes or {}).items():
        if key not in resolved:
            raise ShapesWorldError(f"unknown count {key!r}; expected one of {', '.join(resolved)}")
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ShapesWorldError(f"count {key}={value!r} must be a non-negative integer")
        resolved[key] = int(value)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ShapesWorldError(f"seed={seed!r} must be a non-negative integer")
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or not 16 <= image_size <= 1024:
        raise ShapesWorldError(f"image_size={image_size!r} must be an integer in [16, 1024]")
    if isinstance(video_frames, bool) or not isinstance(video_frames, (int, np.integer)) or not 2 <= video_frames <= 256:
        raise ShapesWorldError(f"video_frames={video_frames!r} must be an integer in [2, 256]")
    if isinstance(m3w_structured, bool) or not isinstance(m3w_structured, (int, float)) \
            or not 0.0 <= m3w_structured <= 1.0:
        raise ShapesWorldError(f"m3w_structured={m3w_structured!r} must be a fraction in [0, 1]")
    if video_format not in ("auto", "mp4", "frames"):
        raise ShapesWorldError(f"video_format={video_format!r}; expected auto, mp4 or frames")
    if video_format == "auto":
        video_format = "mp4" if _video_codec() is not None else "frames"
    elif video_format == "mp4" and _video_codec() is None:
        raise ShapesWorldError("video_format='mp4' needs PyAV with an mp4 encoder (pip install av); "
                               "or use video_format='frames'")
    if video_format == "mp4" and _video_codec()[1] == "yuv420p" and image_size % 2:
        raise ShapesWorldError(f"image_size={image_size} must be even for mp4 with this PyAV (no libx264); "
                               "or use video_format='frames'")
    return {"seed": int(seed), "image_size": int(image_size), "video_frames": int(video_frames),
            "video_format": video_format, "m3w_structured": float(m3w_structured), "counts": resolved}


def _written(root: Path) -> set[str] | None:
    """The files (relative paths) the generator wrote into ``root``, from its manifest; None without one."""
    try:
        return set(json.loads((root / MANIFEST).read_text(encoding="utf-8"))["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _check_existing(out: Path, options: dict[str, Any], overwrite: bool = False) -> bool:
    """True when ``out`` already holds this exact world; raise when it holds something else, unless
    ``overwrite`` and the generator can tell its own files from the others there."""
    if out.exists() and not out.is_dir():
        raise ShapesWorldError(f"{out} is a file, expected a folder; pick another --out")
    marker = out / "world.json"
    if marker.is_file():
        try:
            stored = json.loads(marker.read_text(encoding="utf-8"))["options"]
        except (ValueError, KeyError, TypeError) as e:
            raise ShapesWorldError(f"{marker} is unreadable ({e}); delete {out} and generate again") from e
        if stored == options:
            return True
        flat = {f"counts.{k}": v for k, v in options["counts"].items()} | {k: v for k, v in options.items() if k != "counts"}
        there = stored if isinstance(stored, dict) else {}
        there = {f"counts.{k}": v for k, v in (there.get("counts") or {}).items()} | there
        diff = ", ".join(f"{k}: {there.get(k)!r} there vs {v!r} asked" for k, v in flat.items() if there.get(k) != v)
        if not overwrite:
            raise ShapesWorldError(f"{out} holds a ShapesWorld generated with other options ({diff}); "
                                   "delete the folder or pick another --out (or give --overwrite to replace it)")
        if _written(out) is None:  # its files cannot be told from others: replacing could delete someone's
            raise ShapesWorldError(f"{out} holds a ShapesWorld generated with other options ({diff}) by an older "
                                   f"generator that kept no list of its files ({MANIFEST}); delete the folder "
                                   "or pick another --out")
        return False
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ShapesWorldError(f"{out} exists and is not an empty folder or a ShapesWorld (no world.json); "
                               "delete it or pick another --out (or give --overwrite to write the world beside "
                               "its files)")
    return False


def _merge_world(partial: Path, out: Path) -> None:
    """Move a finished world into a non-empty ``out`` (``--overwrite``): its files replace the generator's
    files there, the previous world's files it does not have are removed, everything else is kept."""
    new = {p.relative_to(partial).as_posix() for p in partial.rglob("*") if p.is_file()}
    old = _written(out) or set()
    for rel in sorted(new):  # refuse before moving anything: a folder of someone's where a file goes, or the reverse
        dest = out / rel
        folders = [out / q for q in Path(rel).parents if q != Path(".")]
        blocker = dest if dest.is_dir() else next((p for p in folders if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            raise ShapesWorldError(f"{blocker} is in the way of the world's {rel}; move it or pick another --out")
    (out / "world.json").unlink(missing_ok=True)  # until the end the folder is not a complete world
    # every file the generator has ever written here is listed first, so an interrupted merge loses track of none
    (out / MANIFEST).write_text(json.dumps({"by": "shapesworld", "files": sorted(old | new)}, indent=1) + "\n")
    for rel in sorted(new - {"world.json", MANIFEST}):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(partial / rel, out / rel)
    for rel in sorted(old - new):
        (out / rel).unlink(missing_ok=True)
        for parent in (out / rel).parents:  # folders the previous world made and left empty
            if parent == out or not parent.is_dir() or any(parent.iterdir()):
                break
            parent.rmdir()
    os.replace(partial / MANIFEST, out / MANIFEST)
    os.replace(partial / "world.json", out / "world.json")
    shutil.rmtree(partial)


def _write_world(root: Path, options: dict[str, Any], progress: bool) -> dict[str, Any]:
    """Write every source into ``root``, then world.json (last: its presence marks a complete world)."""
    n = options["counts"]
    total = sum(v * {"classify": len(SHAPES), "colour": len(COLOURS)}.get(k.split("_")[0], 1) for k, v in n.items())
    bar = _progress_bar(progress, total)
    w = _Writer(root, options["seed"], options["image_size"], options["video_frames"], options["video_format"], bar)
    for split in ("train", "val"):
        w.pairs("ltip", split, n[f"ltip_{split}"], ltip_caption)
    w.pairs("align", "train", n["align_train"], align_caption)
    for split in ("train", "val"):
        w.vtp(split, n[f"vtp_{split}"])
    w.m3w("train", n["m3w_train"], options["m3w_structured"])
    w.coco(n)
    for split in ("train", "val"):
        w.vqa(split, n[f"vqa_{split}"])
        w.class_folders("classify", split, n[f"classify_{split}"])
        w.class_folders("colour", split, n[f"colour_{split}"])
        w.videoqa(split, n[f"videoqa_{split}"])
    world = {"generator": "shapesworld", "format_version": FORMAT_VERSION, "options": options,
             "vocabulary": {"colours": {k: list(v) for k, v in COLOURS.items()}, "shapes": list(SHAPES),
                            "sizes": list(SIZES), "textures": list(TEXTURES), "directions": list(DIRECTIONS),
                            "speeds": list(SPEEDS), "backgrounds": {k: list(v) for k, v in BACKGROUNDS.items()}},
             "totals": {"images": w.n_images, "videos": w.n_videos, "video_format": w.video_format}}
    bar.close()
    (root / ".shapesworld-partial").unlink()
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    w.json(root / MANIFEST, {"by": "shapesworld", "files": [*files, MANIFEST, "world.json"]})
    w.json(root / "world.json", world)
    return world["totals"]


def generate(
    out_dir: str | os.PathLike,
    seed: int = 0,
    image_size: int = 64,
    sizes: dict[str, int] | None = None,
    counts: str = "small",
    video_frames: int = 8,
    video_format: str = "auto",
    progress: bool = False,
    overwrite: bool = False,
    m3w_structured: float = 0.5,
) -> Path:
    """Write a ShapesWorld to ``out_dir`` (layout in docs/formats.md) and return the folder.

    The world is written to ``<out_dir>.partial`` and moved into place once ``world.json`` (written last) is
    there, so ``out_dir`` is either absent or complete. Asking again with the same options does nothing.

    Args:
        out_dir: the world folder; must be absent, empty, or a world generated with the same options (or, with
            ``overwrite``, any folder: see below).
        seed: the seed; same seed and options give byte-identical files.
        image_size: side of the square images and video frames, in pixels.
        sizes: per-source counts overriding the ``counts`` preset (keys of ``PRESETS["small"]``).
        counts: the counts preset: ``"small"`` (about a second, for tests) or ``"default"`` (the demo,
            about 15 s of one core).
        video_frames: frames per clip (1 fps).
        video_format: ``"mp4"`` (PyAV), ``"frames"`` (folders of PNGs) or ``"auto"`` (mp4 when PyAV can).
        m3w_structured: share of M3W pages with in-context structure (``m3w_pages``); the rest describe their
            images one by one.
        progress: show a tqdm progress bar on stderr.
        overwrite: replace a world made with other options, or write into a non-empty folder that is not a
            world; only the generator's files (listed in ``.written.json``) are replaced or removed, others kept.

    Raises:
        ShapesWorldError: bad options, or an output folder that cannot be used.
    """
    options = resolve_options(seed, image_size, sizes, counts, video_frames, video_format, m3w_structured)
    out = Path(out_dir).expanduser().absolute()
    if _check_existing(out, options, overwrite):
        return out
    partial = out.with_name(out.name + ".partial")
    try:
        if partial.exists():
            if not (partial / ".shapesworld-partial").is_file():
                raise ShapesWorldError(f"{partial} exists and was not left by this generator; delete it")
            shutil.rmtree(partial)
        partial.mkdir(parents=True)
        (partial / ".shapesworld-partial").touch()
    except OSError as e:
        raise ShapesWorldError(f"cannot write the output folder {out} ({e.strerror or e}); "
                               "pick a writable --out") from e
    try:
        _write_world(partial, options, progress)
        if out.is_dir() and any(out.iterdir()):  # --overwrite, checked above
            _merge_world(partial, out)
            return out
    except OSError as e:
        raise ShapesWorldError(f"writing {partial} failed ({e}); free space or pick another --out, then run "
                               "again (the partial folder is cleared)") from e
    if out.is_dir():
        out.rmdir()  # empty, checked above
    os.replace(partial, out)
    return out


# ------------------------------------------------------------------------------------------------ CLI


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="shapesworld", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output folder (absent, empty, or a world made with the same options)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed and options give identical files")
    p.add_argument("--image-size", type=int, default=64, help="image and frame side in pixels")
    p.add_argument("--counts", default="small", help=f"counts preset: {' or '.join(PRESETS)}")
    p.add_argument("--count", action="append", default=[], metavar="KEY=N",
                   help=f"override one count (repeatable); keys: {', '.join(PRESETS['small'])}")
    p.add_argument("--video-frames", type=int, default=8, help="frames per video clip (1 fps)")
    p.add_argument("--video-format", default="auto", choices=["auto", "mp4", "frames"],
                   help="mp4 (needs PyAV), frame folders of PNGs, or auto (mp4 when PyAV is installed)")
    p.add_argument("--m3w-structured", type=float, default=0.5, metavar="P",
                   help="share of M3W pages with in-context structure: page-local names, formats, quizzes "
                        "(tools/m3w_pages.py); the rest describe their images one by one")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a world made with other options, or write into a non-empty folder that is not a "
                        "world (only the generator's own files are replaced or removed)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        sizes = {}
        for item in args.count:
            key, sep, value = item.partition("=")
            if not sep or not value.strip().lstrip("-").isdigit():
                raise ShapesWorldError(f"--count {item!r} must look like KEY=N, e.g. ltip_train=100")
            sizes[key.strip()] = int(value)
        done_before = (Path(args.out) / "world.json").is_file()
        start = time.perf_counter()
        out = generate(args.out, seed=args.seed, image_size=args.image_size, sizes=sizes, counts=args.counts,
                       video_frames=args.video_frames, video_format=args.video_format, progress=not args.quiet,
                       overwrite=args.overwrite, m3w_structured=args.m3w_structured)
    except ShapesWorldError as e:
        print(f"shapesworld: error: {e}", file=sys.stderr)
        return 2
    if not args.quiet:
        if done_before:
            print(f"ShapesWorld already complete at {out} (same options); nothing to do.")
        else:
            totals = json.loads((out / "world.json").read_text(encoding="utf-8"))["totals"]
            print(f"ShapesWorld written to {out}: {totals['images']} images and {totals['videos']} videos "
                  f"({totals['video_format']}) in {time.perf_counter() - start:.1f} s "
                  f"(seed {args.seed}, {args.image_size} px, counts {args.counts}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
