"""Builders for stage-1 tests: a tiny image-text world written to a folder (no generator needed)."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 30), "blue": (30, 60, 220)}
SHAPES = ("circle", "square")


def draw(colour: str, shape: str, left: bool, size: int = 40) -> Image.Image:
    img = Image.new("RGB", (size, size), (255, 255, 255))
    d = ImageDraw.Draw(img)
    cx = size * (0.3 if left else 0.7)
    r = size * 0.25
    box = [cx - r, size / 2 - r, cx + r, size / 2 + r]
    (d.ellipse if shape == "circle" else d.rectangle)(box, fill=COLOURS[colour])
    return img


def write_pairs(root: Path, n: int = 24, name: str = "train.jsonl") -> Path:
    """``n`` pairs cycling through colours x shapes x sides, as the ShapesWorld JSONL layout."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        colour = list(COLOURS)[i % 3]
        shape = SHAPES[(i // 3) % 2]
        left = (i // 6) % 2 == 0
        file = f"images/{name.split('.')[0]}_{i:04d}.png"
        draw(colour, shape, left).save(root / file)
        rows.append({"image": file, "text": f"A {colour} {shape} on the {'left' if left else 'right'}."})
    path = root / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_class_folders(root: Path, per_class: int = 2) -> Path:
    for colour in COLOURS:
        (root / colour).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            draw(colour, SHAPES[i % 2], i % 2 == 0).save(root / colour / f"{i}.png")
    return root
