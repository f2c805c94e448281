"""Files dropped on the web demo's page, decoded by the suite's one media decoder (``shared.media``): images
with a stated pixel limit checked on the header before any pixel is decoded, videos as evenly spaced frames (the
evaluation policy, arXiv 2204.14198 Section 3: video frames sampled at 1 FPS and read by the resampler)."""

from __future__ import annotations

from pathlib import Path

from contrastive_encoder.shared.media import MediaError, load_image, load_video

from ..cli import UserError

__all__ = ["DEFAULT_MAX_IMAGE_PIXELS", "VIDEO_SUFFIXES", "load_upload"]

DEFAULT_MAX_IMAGE_PIXELS = 16_777_216  # 4096 x 4096: a photo fits, a decompression bomb does not
VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".avi", ".mkv")


def _check_pixels(width: int, height: int, limit: int, name: str) -> None:
    if width * height > limit:
        raise UserError(f"refusing {name}: {width} x {height} = {width * height:,} pixels, over the demo's limit "
                        f"of {limit:,} pixels (--max-image-pixels)")


def _image(path: Path, name: str, limit: int):
    from PIL import Image, UnidentifiedImageError

    try:  # the header only: a small file claiming a huge size is refused before decoding
        with Image.open(path) as probe:
            _check_pixels(*probe.size, limit, name)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        pass  # load_image names what is wrong with the file
    return load_image(path, name=name)


def _video(path: Path, name: str, limit: int, num_frames: int) -> list:
    frames = load_video(path, num_frames=num_frames, policy="evenly_spaced", name=name)
    _check_pixels(*frames[0].size, limit, name)
    return frames


def load_upload(path: str | Path, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, video_frames: int = 8,
                name: str | None = None):
    """An uploaded file as the processor takes it: a PIL image, or a video as a list of PIL frames.

    Args:
        path: the file (Gradio's copy of the upload).
        max_pixels: the most pixels an image or a video frame may have.
        video_frames: at most this many frames, evenly spaced over the clip (the model's ``max_frames``).
        name: what to call the file in errors (the name the user uploaded).

    Raises:
        UserError: a file that is not an image or a video, cannot be decoded, or is over ``max_pixels``.
    """
    path = Path(path)
    name = name or path.name
    try:
        if path.suffix.lower() in VIDEO_SUFFIXES:
            return _video(path, name, max_pixels, video_frames)
        return _image(path, name, max_pixels)
    except MediaError as e:
        raise UserError(f"{e} (expected an image: PNG, JPEG, WebP, ...; or a video: "
                        f"{', '.join(VIDEO_SUFFIXES)})") from e
