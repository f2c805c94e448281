"""A small ShapesWorld (written by tools/shapesworld) shared by the training-side tests, plus checks that the
default training layout is found in it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COUNTS = {"ltip_train": 16, "ltip_val": 8, "align_train": 12, "vtp_train": 4, "vtp_val": 2, "m3w_train": 8,
          "coco_train": 1, "coco_val": 1, "coco_test": 1, "vqa_train": 1, "vqa_val": 1, "classify_train": 1,
          "classify_val": 1, "colour_train": 1, "colour_val": 1, "videoqa_train": 1, "videoqa_val": 1}
_CACHE: dict[str, Path] = {}


def make_world(base: Path, video_format: str = "mp4") -> Path:
    """Generate (once per session and format) a 32 px world with a few samples of every source."""
    if video_format in _CACHE:
        return _CACHE[video_format]
    out = base / f"world-{video_format}"
    cmd = [sys.executable, str(ROOT / "tools" / "shapesworld"), "--out", str(out), "--image-size", "32",
           "--video-format", video_format, "--quiet", "--seed", "3"]
    for k, v in COUNTS.items():
        cmd += ["--count", f"{k}={v}"]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    _CACHE[video_format] = out
    return out


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> Path:
    return make_world(tmp_path_factory.getbasetemp())


def test_world_has_the_default_training_layout(world):
    from flamingo_core.train import default_sources

    for name, (kind, path) in default_sources(world).items():
        assert Path(path).is_file(), (name, kind, path)
    assert (world / "ltip" / "val.jsonl").is_file()
