"""Decoding the media every stage reads: images (anything PIL opens) and videos (mp4 through PyAV, or a folder of
frames holding one frame per second), with the frame policies of ``shared.frames`` named at the call.

One decoder for all stages, so an image that trains also evaluates, and a bad one fails the same way
everywhere: every failure raises ``MediaError`` naming the file (the readers skip and count the sample, or
re-raise it in strict mode). Decompression bombs are refused before they are decoded.
"""

from __future__ import annotations

import io
import random
import warnings
from pathlib import Path
from typing import Any

from PIL import Image

from .frames import Clip, evenly_spaced, fixed_rate, random_window

__all__ = ["FRAME_POLICIES", "IMAGE_SUFFIXES", "MediaError", "is_image_file", "load_image", "load_video"]

# what PIL decodes and the suite's writers and readers accept as an image file (also the member extensions of
# a WebDataset sample that hold its image)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
FRAME_POLICIES = ("random_window", "evenly_spaced", "fixed_rate")


class MediaError(ValueError):
    """A missing or undecodable image or video; the message names the file."""


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


def load_image(source: Any, name: str | None = None) -> Image.Image:
    """Open an image fully (a truncated file fails here, not later in a worker) and convert it to RGB.

    An image over PIL's ``Image.MAX_IMAGE_PIXELS`` is refused before it is decoded: PIL only warns between that
    limit and twice it, and decoding a small file that claims 30000x30000 pixels would take gigabytes.

    Args:
        source: a path, encoded bytes (a WebDataset member), a ``{"bytes" | "path"}`` dict (an undecoded
            ``datasets`` Image column) or an already decoded PIL image.
        name: what to call the image in error messages when ``source`` is not a path.
    """
    if isinstance(source, Image.Image):
        return source.convert("RGB")
    if isinstance(source, dict):
        source = source.get("bytes") or source.get("path") or b""
    where = name or str(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if isinstance(source, (bytes, bytearray)):
                img = Image.open(io.BytesIO(source))
            else:
                path = Path(source)
                if not path.is_file():
                    raise MediaError(f"image file not found: {path}")
                img = Image.open(path)
            img.load()
        return img.convert("RGB")
    except MediaError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise MediaError(f"refusing image {where}: {e}") from e
    except Exception as e:  # PIL raises many types for corrupt data
        raise MediaError(f"cannot decode image {where}: {type(e).__name__}: {e}") from e


def _pad(frames: list[Image.Image], num_frames: int, where: str) -> list[Image.Image]:
    if not frames:
        raise MediaError(f"video has no decodable frames: {where}")
    # short clips repeat their last frame, so every training video in a batch has num_frames frames
    return frames + [frames[-1]] * (num_frames - len(frames))


def _frame_folder(path: Path, num_frames: int, policy: str, fps: float, rng: random.Random) -> list[Image.Image]:
    # a frame folder holds one frame per second (docs/formats.md), so 1 FPS sampling is consecutive frames
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise MediaError(f"video frame folder has no images: {path}")
    if policy == "evenly_spaced":
        return [load_image(files[i]) for i in evenly_spaced(len(files), num_frames)]
    if policy == "fixed_rate":  # frame i of the folder shows second i: a faster rate shows each one several times
        times = fixed_rate(float(len(files)), num_frames, fps)
        loaded = {i: load_image(files[i]) for i in dict.fromkeys(min(int(t), len(files) - 1) for t in times)}
        return Clip([loaded[min(int(t), len(files) - 1)] for t in times], times)
    stride = max(1, round(1.0 / fps))
    times = random_window(float(len(files)), num_frames, 1.0 / stride, rng)
    picked = [files[min(int(t), len(files) - 1)] for t in times]
    return _pad([load_image(p) for p in dict.fromkeys(picked)], num_frames, str(path))


def _mp4(source: str | Path | bytes, num_frames: int, policy: str, fps: float, rng: random.Random, where: str):
    try:
        import av
    except ImportError as e:  # pragma: no cover - av is an optional dependency of the stages that read video
        raise MediaError(f"reading {where} needs PyAV: pip install av (or the [video] extra)") from e
    try:
        container = av.open(io.BytesIO(source) if isinstance(source, bytes) else str(source))
        with container:
            stream = container.streams.video[0]
            rate = float(stream.average_rate or fps)
            decoded = [(float(f.pts * stream.time_base) if f.pts is not None else i / rate, f)
                       for i, f in enumerate(container.decode(stream))]
    except Exception as e:
        raise MediaError(f"cannot decode video {where}: {type(e).__name__}: {e}") from e
    if not decoded:
        raise MediaError(f"video has no decodable frames: {where}")
    if policy == "evenly_spaced":
        return [decoded[i][1].to_image().convert("RGB") for i in evenly_spaced(len(decoded), num_frames)]
    t0 = decoded[0][0]
    duration = decoded[-1][0] - t0 + 1.0 / rate
    if policy == "fixed_rate":  # the decoded frame nearest to each time; a clip slower than fps repeats frames
        times = fixed_rate(duration, num_frames, fps)
        nearest = [min(decoded, key=lambda tf: abs(tf[0] - t0 - t))[1] for t in times]
        images = {id(f): f.to_image().convert("RGB") for f in nearest}
        return Clip([images[id(f)] for f in nearest], times)
    frames = []
    for t in random_window(duration, num_frames, fps, rng):
        if t > duration:
            break
        _, frame = min(decoded, key=lambda tf: abs(tf[0] - t0 - t))  # the decoded frame nearest to t
        frames.append(frame.to_image().convert("RGB"))
    return _pad(frames, num_frames, where)


def load_video(
    source: str | Path | bytes,
    num_frames: int = 8,
    policy: str = "random_window",
    fps: float = 1.0,
    rng: random.Random | None = None,
    name: str | None = None,
) -> list[Image.Image]:
    """Frames of an mp4 file (or its bytes) or of a folder of frames, chosen by a frame policy.

    Args:
        source: mp4 path, mp4 bytes, or a folder of frame images sorted by name (one frame per second).
        num_frames: frames to return.
        policy: ``random_window`` (training: ``num_frames`` frames at ``fps`` from a start drawn from ``rng``,
            a short clip padded by repeating its last frame), ``evenly_spaced`` (evaluation: at most
            ``num_frames`` frames spread over the whole clip, never padded) or ``fixed_rate`` (evaluation, the
            paper's: at most ``num_frames`` frames at ``fps`` from the start, never padded; returns a
            ``shared.frames.Clip`` with the frames' times). ``shared.frames`` says why they differ.
        fps: sampling rate of ``random_window`` (the paper trains at 1) and ``fixed_rate`` (the paper: 3).
        rng: ``random_window``'s start (seeded per sample for an exact resume).
        name: what to call the video in error messages when ``source`` is bytes.
    """
    if policy not in FRAME_POLICIES:
        raise ValueError(f"frame policy {policy!r}: expected one of {', '.join(FRAME_POLICIES)}")
    rng = rng or random.Random(0)
    where = name or str(source)
    if isinstance(source, bytes):
        return _mp4(source, num_frames, policy, fps, rng, where)
    path = Path(source)
    if path.is_dir():
        return _frame_folder(path, num_frames, policy, fps, rng)
    if not path.is_file():
        raise MediaError(f"video not found: {path}")
    return _mp4(path, num_frames, policy, fps, rng, where)
