"""Media of evaluation examples: checking that every file is there (and readable) before long work starts,
and decoding images and videos (``contrastive_encoder.shared.media``), each file once per run. Videos are read
with the evaluation frame policy ``evenly_spaced`` (``contrastive_encoder.shared.frames`` says why training
uses another one)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from PIL import Image

from contrastive_encoder.shared.media import IMAGE_SUFFIXES, MediaError, load_image, load_video
from fewshot_eval.datasets import DataError, Example

__all__ = ["check_media", "load_media"]


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
def _load_cached(path: Path, max_frames: int):
    if path.is_dir() or path.suffix.lower() not in IMAGE_SUFFIXES:
        return load_video(path, max_frames, policy="evenly_spaced")  # the evaluation frame policy
    return load_image(path)


def load_media(example: Example, max_frames: int = 8) -> Image.Image | list[Image.Image]:
    """Decode an example's image (RGB) or video (list of RGB frames); each file is decoded once per run."""
    try:
        return _load_cached(example.media, max_frames)
    except MediaError as e:
        raise DataError(f"{example.media}: cannot read media ({e})") from None
