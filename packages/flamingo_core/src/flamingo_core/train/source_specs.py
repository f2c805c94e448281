"""Which training sources a run reads: the ShapesWorld layout, ``--source NAME=KIND:SPEC`` overrides, per-source
batch sizes, token limits and preprocessing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flamingo_core.data import Stage2Augmentation, build_source
from flamingo_core.train.config import TrainConfig, parse_source_lengths

SOURCE_KINDS = {"m3w": "interleaved", "ltip": "pairs", "align": "pairs", "vtp": "video"}

# sequence lengths (paper Appendix A.3): M3W 256, LTIP 64, ALIGN 32 (its alt-texts are short), VTP 32; a source
# of another name (or of another kind under one of these names) gets its kind's
SOURCE_MAX_TOKENS = {"m3w": 256, "ltip": 64, "align": 32, "vtp": 32}
MAX_TOKENS = {"interleaved": 256, "pairs": 64, "video": 32}


def default_sources(root: str | Path) -> dict[str, tuple[str, str]]:
    """The ShapesWorld layout: name -> (kind, path) for M3W, LTIP, ALIGN and VTP training files."""
    root = Path(root)
    return {
        "m3w": ("interleaved", str(root / "m3w" / "train.jsonl")),
        "ltip": ("pairs", str(root / "ltip" / "train.jsonl")),
        "align": ("pairs", str(root / "align" / "train.jsonl")),
        "vtp": ("video", str(root / "vtp" / "train.jsonl")),
    }


def parse_source_specs(specs: list[str], root: str) -> dict[str, tuple[str, str]]:
    """Default layout under ``root`` plus ``NAME=KIND:SPEC`` entries (``ltip=pairs:shards/{00..09}.tar``)."""
    sources = default_sources(root)
    for s in specs:
        name, sep, rest = s.partition("=")
        kind, sep2, spec = rest.partition(":")
        if not sep or not sep2 or not name or kind not in ("interleaved", "pairs", "video"):
            raise ValueError(f"--source {s!r}: expected NAME=KIND:SPEC with KIND interleaved|pairs|video")
        sources[name] = (kind, spec)
    return sources


def source_batch_sizes(cfg: TrainConfig, names: list[str]) -> dict[str, int]:
    """Per-source batch sizes. By default sources get about the same token budget per step: an M3W sequence
    (256 tokens, up to 5 images) counts as four captions, a video clip (8 frames) as two."""
    kinds = parse_source_specs(cfg.sources, cfg.data)
    ratio = {"interleaved": 4, "video": 2, "pairs": 1}
    sizes = {n: max(1, cfg.batch_size // ratio[kinds[n][0]]) for n in names}
    if cfg.batch_sizes:
        for part in cfg.batch_sizes.split(","):
            name, sep, value = part.partition("=")
            if not sep or not value.strip().isdigit() or int(value) < 1:
                raise ValueError(f"--batch-sizes entry {part!r}: expected NAME=N with N >= 1, e.g. m3w=2")
            if name.strip() not in kinds:
                raise ValueError(f"--batch-sizes names unknown source {name.strip()!r}; sources are {list(kinds)}")
            sizes[name.strip()] = int(value)
    return sizes


def source_max_tokens(cfg: TrainConfig) -> dict[str, int]:
    """Each source's sequence length: ``--max-tokens`` entries, else ``SOURCE_MAX_TOKENS``, else by kind.

    Raises:
        ValueError: a malformed entry, or one naming no source.
    """
    kinds = parse_source_specs(cfg.sources, cfg.data)
    given = parse_source_lengths(cfg.max_tokens)
    unknown = sorted(set(given) - set(kinds))
    if unknown:
        raise ValueError(f"--max-tokens names unknown source(s) {unknown}; sources are {list(kinds)}")
    return {n: given.get(n, SOURCE_MAX_TOKENS[n] if SOURCE_KINDS.get(n) == kind else MAX_TOKENS[kind])
            for n, (kind, _) in kinds.items()}


def check_sources(cfg: TrainConfig, weights: dict[str, float]) -> None:
    """Fail early (before loading models) when a source with weight > 0 does not exist, or ``--max-tokens``
    is bad."""
    source_max_tokens(cfg)
    for name, (_, spec) in parse_source_specs(cfg.sources, cfg.data).items():
        if weights.get(name, 0.0) > 0 and not (spec.startswith("hf:") or any(c in spec for c in "*?{")
                                               or Path(spec).exists()):
            raise FileNotFoundError(f"training source {name!r} not found: {spec} (give --weights {name}=0 to "
                                    f"train without it, or --data / --source to point at it)")


def build_sources(cfg: TrainConfig, weights: dict[str, float], skipped, video_frames: int = 8) -> dict[str, Any]:
    """The training sources with weight > 0, with the run's sequence lengths, stage-2 augmentation (Appendix
    B.1.2), pair leading spaces and M3W next-image probability."""
    check_sources(cfg, weights)
    lengths = source_max_tokens(cfg)
    augment = (Stage2Augmentation(pad=cfg.pad_to_square, augment=cfg.augment, swap_lr=cfg.swap_lr)
               if cfg.pad_to_square or cfg.augment else None)
    out = {}
    for name, (kind, spec) in parse_source_specs(cfg.sources, cfg.data).items():
        if weights.get(name, 0.0) <= 0:
            continue
        opts: dict[str, Any] = {"max_tokens": lengths[name], "augment": augment}
        if kind == "interleaved":
            opts["p_next"] = cfg.p_next
        else:
            opts["p_leading_space"] = cfg.p_leading_space
        if kind == "video":
            opts["num_frames"] = cfg.video_frames or video_frames
        out[name] = build_source(name, kind, spec, strict=cfg.strict, skipped=skipped, **opts)
    return out
