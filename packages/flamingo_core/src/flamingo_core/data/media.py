"""Decoding of the media a training sample names: images (anything PIL opens) and videos (mp4 or frame folders).

Flamingo (Alayrac et al., 2022, arXiv 2204.14198) trains on video clips of 8 frames sampled at 1 frame per
second (Appendix A.3.3 / VTP). ``load_video`` implements that sampling for mp4 files (through PyAV) and for
folders of frames that already hold one frame per second (what the ShapesWorld generator writes without PyAV),
with the training frame policy ``random_window`` (``contrastive_encoder.shared.frames`` says why evaluation
uses another one).

Every failure raises ``MediaError`` naming the file, so the data sources can skip and count the sample (or
re-raise it in strict mode).
"""

from __future__ import annotations

import io
import random
import warnings
from pathlib import Path

from PIL import Image

from contrastive_encoder.shared.frames import random_window

__all__ = ["IMAGE_EXTENSIONS", "MediaError", "load_image", "load_video"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")


class MediaError(ValueError):
    """A missing or undecodable image or video; the message names the file."""


def load_image(source: str | Path | bytes, name: str | None = None) -> Image.Image:
    """Open an image fully (so truncated files fail here, not later in a worker) and convert it to RGB.

    An image over PIL's ``Image.MAX_IMAGE_PIXELS`` is refused before it is decoded: PIL only warns between that
    limit and twice it, and decoding a small file that claims 30000x30000 pixels would take gigabytes.

    Args:
        source: a path, or the encoded bytes (WebDataset members).
        name: what to call the image in error messages when ``source`` is bytes.
    """
    where = name or str(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if isinstance(source, bytes):
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


def _pad_frames(frames: list[Image.Image], num_frames: int, where: str) -> list[Image.Image]:
    if not frames:
        raise MediaError(f"video has no decodable frames: {where}")
    # Short clips repeat their last frame so every video in a batch has num_frames frames.
    return frames + [frames[-1]] * (num_frames - len(frames))


def _load_frame_folder(path: Path, num_frames: int, fps: float, rng: random.Random) -> list[Image.Image]:
    # A frame folder holds one frame per second (docs/formats.md), so 1 FPS sampling is consecutive frames.
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise MediaError(f"video frame folder has no images: {path}")
    stride = max(1, round(1.0 / fps))
    times = random_window(float(len(files)), num_frames, 1.0 / stride, rng)
    picked = [files[min(int(t), len(files) - 1)] for t in times]
    frames = [load_image(p) for p in dict.fromkeys(picked)]
    return _pad_frames(frames, num_frames, str(path))


def _load_mp4(source: str | Path | bytes, num_frames: int, fps: float, rng: random.Random, where: str):
    try:
        import av
    except ImportError as e:  # pragma: no cover - av is a declared optional dependency
        raise MediaError(f"reading {where} needs PyAV: pip install 'flamingo-core[video]'") from e
    try:
        container = av.open(io.BytesIO(source) if isinstance(source, bytes) else str(source))
        with container:
            stream = container.streams.video[0]
            decoded = [(float(f.pts * stream.time_base) if f.pts is not None else i / float(stream.average_rate or 1),
                        f) for i, f in enumerate(container.decode(stream))]
    except Exception as e:
        raise MediaError(f"cannot decode video {where}: {type(e).__name__}: {e}") from e
    if not decoded:
        raise MediaError(f"video has no decodable frames: {where}")
    t0 = decoded[0][0]
    duration = decoded[-1][0] - t0 + 1.0 / float(stream.average_rate or fps)
    frames = []
    for t in random_window(duration, num_frames, fps, rng):
        if t > duration:
            break
        # the decoded frame whose timestamp is nearest to t
        _, frame = min(decoded, key=lambda tf: abs(tf[0] - t0 - t))
        frames.append(frame.to_image().convert("RGB"))
    return _pad_frames(frames, num_frames, where)


def load_video(
    source: str | Path | bytes,
    num_frames: int = 8,
    fps: float = 1.0,
    rng: random.Random | None = None,
    name: str | None = None,
) -> list[Image.Image]:
    """Sample ``num_frames`` frames at ``fps`` from an mp4 file (or its bytes) or a folder of frames.

    Args:
        source: mp4 path, mp4 bytes, or a folder of frame images sorted by name (one frame per second).
        num_frames: frames to return; shorter clips repeat their last frame.
        fps: sampling rate in frames per second (the paper uses 1).
        rng: chooses the start of the clip in longer videos (seeded per sample for exact resume): the training
            frame policy ``random_window``.
        name: what to call the video in error messages when ``source`` is bytes.
    """
    rng = rng or random.Random(0)
    where = name or str(source)
    if isinstance(source, bytes):
        return _load_mp4(source, num_frames, fps, rng, where)
    path = Path(source)
    if path.is_dir():
        return _load_frame_folder(path, num_frames, fps, rng)
    if not path.is_file():
        raise MediaError(f"video not found: {path}")
    return _load_mp4(path, num_frames, fps, rng, where)
