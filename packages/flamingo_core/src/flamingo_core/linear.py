"""A linear layer that keeps every core busy when decoding.

At batch 1 a decoding step multiplies each weight by a single row, which MKL runs as a matrix-vector product on
one thread: the step is bound by reading the weights from memory, and one thread leaves the other cores' share of
the memory bandwidth unused. Viewing the weight's output rows as ``s`` equal blocks (no copy) and multiplying them
with ``bmm`` runs the blocks in parallel. ``Flamingo.compute_logits(decoding=True)`` applies it to the frozen head
as well, the largest single weight read per token. Larger inputs, GPUs and single-threaded runs take plain
``F.linear``. Figures: docs/design/stage2-speed.md (``benchmarks/bench_vs_openflamingo.py`` measures the whole
decode).

Whether the split pays depends on the CPU (it won on an AMD EPYC and cost a third of the decode time on an Intel
Xeon with AVX-512), so it is chosen by measurement on the machine it runs on: the first decoding product of each
weight shape times both on that weight (interleaved, median of a few calls) and keeps the faster; the choice is
cached per machine (CPU model, threads, torch version) in ``kernel_choices.json`` under ``$FLAMINGO_CACHE_DIR``
(default ``~/.cache/flamingo_core``), so later runs do not measure again. ``FLAMINGO_ROW_SPLIT=always|never``
(or ``SPLIT_POLICY``) skips the measurement.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FEW_ROWS", "SPLIT_POLICY", "RowSplitLinear", "row_split_linear", "split_pays"]

FEW_ROWS = 8  # inputs of at most this many rows take the split product
MAX_SPLITS = 8  # a few threads already saturate memory bandwidth; more blocks only add overhead
SPLIT_POLICY = os.environ.get("FLAMINGO_ROW_SPLIT", "auto")  # auto (measured), always, never
MARGIN = 0.95  # the split must be at least 5% faster to be chosen: a tie keeps the plain product
_decisions: dict[str, bool] = {}
_loaded = False


def _machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            model = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), model)
    except OSError:
        pass
    return f"{model}|{os.cpu_count()} cpus|torch {torch.__version__}"


def _cache_file() -> Path:
    root = os.environ.get("FLAMINGO_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return Path(root) / ("" if os.environ.get("FLAMINGO_CACHE_DIR") else "flamingo_core") / "kernel_choices.json"


def _read_cache() -> dict:
    try:
        data = json.loads(_cache_file().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _remember(key: str, split: bool) -> None:
    _decisions[key] = split
    data = _read_cache()
    data.setdefault(_machine(), {})[key] = split
    path = _cache_file()
    try:  # atomic: a concurrent reader sees the old file or the new one
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home: the choice holds for this process


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


@torch.no_grad()
def _measure(weight: torch.Tensor, splits: int) -> bool:
    x = torch.randn(1, weight.shape[1], dtype=weight.dtype)
    plain, split = (lambda: F.linear(x, weight)), (lambda: _split_product(x, weight, splits))
    for fn in (plain, split):  # warm-up: first-call allocations and thread start-up
        fn()
    rounds = [(_median_seconds(plain, 5), _median_seconds(split, 5)) for _ in range(3)]  # interleaved
    ratio = sorted(s / p for p, s in rounds)[1]
    return ratio < MARGIN


def split_pays(weight: torch.Tensor, splits: int) -> bool:
    """Whether the split product is faster than ``F.linear`` for one row through ``weight`` on this machine:
    ``SPLIT_POLICY``, else the cached measurement, else a measurement now (cached)."""
    global _loaded
    if SPLIT_POLICY in ("always", "never"):
        return SPLIT_POLICY == "always"
    key = f"{tuple(weight.shape)}|{weight.dtype}|{splits} threads"
    if key not in _decisions:
        if not _loaded:
            _decisions.update({k: bool(v) for k, v in _read_cache().get(_machine(), {}).items()})
            _loaded = True
        if key not in _decisions:
            _remember(key, _measure(weight, splits))
    return _decisions[key]


def _split_product(flat: torch.Tensor, weight: torch.Tensor, splits: int) -> torch.Tensor:
    n_out = weight.shape[0]
    main = n_out - n_out % splits
    blocks = weight[:main].view(splits, main // splits, weight.shape[1])  # (s, N/s, K), a view
    out = torch.bmm(blocks, flat.t().expand(splits, -1, -1)).permute(2, 0, 1).reshape(flat.shape[0], main)
    return torch.cat([out, F.linear(flat, weight[main:])], dim=1) if main < n_out else out


def row_split_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``; on CPU with few rows, the weight's output rows are split across threads.

    The first ``s * (N // s)`` output rows form ``s`` equal blocks (a view) multiplied by one ``bmm``; the
    remaining ``N mod s`` rows (odd vocabularies) take ``F.linear``.
    """
    rows = x.numel() // max(x.shape[-1], 1)
    splits = min(torch.get_num_threads(), MAX_SPLITS)
    main = weight.shape[0] - weight.shape[0] % splits
    if (x.device.type != "cpu" or rows > FEW_ROWS or rows == 0 or splits < 2 or main == 0
            or not weight.is_contiguous() or not split_pays(weight, splits)):
        return F.linear(x, weight, bias)
    out = _split_product(x.reshape(rows, -1), weight, splits).reshape(*x.shape[:-1], weight.shape[0])
    return out if bias is None else out + bias


class RowSplitLinear(nn.Linear):
    """``nn.Linear`` (same parameters and state dict) computed by ``row_split_linear``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return row_split_linear(x, self.weight, self.bias)
