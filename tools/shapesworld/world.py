"""ShapesWorld's entry point: the count presets, option checks, and ``generate``, which writes a whole world
into a partial folder and moves it into place once complete."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .language import align_caption, ltip_caption
from .render import _video_codec
from .scene import BACKGROUNDS, COLOURS, DIRECTIONS, SHAPES, SIZES, SPEEDS, TEXTURES, ShapesWorldError
from .writers import MANIFEST, _check_existing, _merge_world, _Writer

FORMAT_VERSION = 2  # 2: M3W pages with in-context structure (m3w_pages)

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
