"""Media of evaluation examples: checking that every file is there (and readable) before long work starts,
and decoding images and videos (``contrastive_encoder.shared.media``), each file once per run.

Videos are read as the paper reads them at inference (Appendix B.1.2): 30 frames at 3 FPS from the start
(``VideoSampling``; the frame policy ``fixed_rate``), each frame with its time, which the model turns into a place
on the 1-FPS time axis its time embeddings were trained on. ``VideoSampling(frames, fps=None)`` spreads
``frames`` frames evenly over the whole clip instead (``evenly_spaced``, the suite's earlier default: the whole
clip of any length is seen, at no known rate). ``contrastive_encoder.shared.frames`` says why training samples
otherwise."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

from PIL import Image

from contrastive_encoder.shared.media import IMAGE_SUFFIXES, MediaError, load_image, load_video
from fewshot_eval.datasets import DataError, Example

__all__ = ["PAPER_VIDEO", "VideoSampling", "check_media", "load_media"]


class VideoSampling(NamedTuple):
    """Which frames of an evaluation video are read: at most ``frames``, ``fps`` apart from the start, or spread
    evenly over the whole clip when ``fps`` is None."""

    frames: int = 30
    fps: float | None = 3.0

    def check(self) -> VideoSampling:
        if not isinstance(self.frames, int) or self.frames < 1:
            raise ValueError(f"video frames must be a positive integer, got {self.frames!r}")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"video fps must be > 0 (or None: evenly spaced), got {self.fps!r}")
        return self


PAPER_VIDEO = VideoSampling(30, 3.0)  # Appendix B.1.2: 30 frames at 3 FPS


def check_media(examples: Sequence[Example], source: Path | str, open_images: bool = False) -> None:
    """Raise one ``DataError`` naming the first missing (or, with ``open_images``, unreadable) media file.

    Args:
        examples: the examples whose media will be used.
        source: the file they came from, for the message.
        open_images: also open each image's header with PIL (cheap; catches truncated or non-image files).
    """
    missing = [ex.media for ex in examples if not ex.media.exists()]
    if missing:
        raise DataError(
            f"{len(missing)} of {len(examples)} media files named in {source} are missing, e.g. {missing[0]}"
        )
    if open_images:
        for ex in examples:
            if ex.media.is_file() and ex.media.suffix.lower() in IMAGE_SUFFIXES:
                try:
                    with Image.open(ex.media) as im:
                        im.verify()
                except Exception as e:  # noqa: BLE001 - PIL raises many types for bad files
                    raise DataError(f"{ex.media} (named in {source}) is not a readable image ({e})") from None


@lru_cache(maxsize=4096)
def _load_cached(path: Path, video: VideoSampling):
    if path.is_dir() or path.suffix.lower() not in IMAGE_SUFFIXES:
        if video.fps is None:
            return load_video(path, video.frames, policy="evenly_spaced")
        return load_video(path, video.frames, policy="fixed_rate", fps=video.fps)
    return load_image(path)


def load_media(example: Example, video: VideoSampling = PAPER_VIDEO) -> Image.Image | list[Image.Image]:
    """Decode an example's image (RGB) or video (a list of RGB frames; a ``Clip`` with their times when read at
    a rate); each file is decoded once per run."""
    try:
        return _load_cached(example.media, VideoSampling(*video).check())
    except MediaError as e:
        raise DataError(f"{example.media}: cannot read media ({e})") from None
