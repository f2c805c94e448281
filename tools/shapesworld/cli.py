"""ShapesWorld's command line: ``python tools/shapesworld --out data/world [--counts default] ...``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .scene import ShapesWorldError
from .world import PRESETS, generate

# the first paragraph of the package docstring
_DESCRIPTION = "ShapesWorld: a seeded synthetic multimodal world in the formats real users bring."


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="shapesworld", description=_DESCRIPTION)
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
                        "(tools/shapesworld/m3w_pages.py); the rest describe their images one by one")
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

