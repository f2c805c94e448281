"""ShapesWorld's pixels: still scenes and video frames drawn with PIL, and clips written as mp4 or frame folders."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from .scene import BACKGROUNDS, SHAPES, ShapesWorldError


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
