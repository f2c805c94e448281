"""A linear layer that keeps every core busy when decoding.

At batch 1 a decoding step multiplies each weight by a single row, which MKL runs as a matrix-vector product on
one thread: on a 2-core machine a cold 5 MB weight streams at ~9 GB/s while the other core idles. Viewing the
weight's output rows as ``s`` equal blocks (no copy) and multiplying them with ``bmm`` runs the blocks in
parallel: the seven cross-attention blocks of SmolLM2 with ``cross_attn_every=4`` went from 16.6 to 10.9 ms per
token (benchmarks/bench_vs_openflamingo.py measures the whole decode). Larger inputs, GPUs and single-threaded
runs take plain ``F.linear``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FEW_ROWS", "RowSplitLinear", "row_split_linear"]

FEW_ROWS = 8  # inputs of at most this many rows take the split product
MAX_SPLITS = 8  # a few threads already saturate memory bandwidth; more blocks only add overhead


def row_split_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``; on CPU with few rows, the weight's output rows are split across threads."""
    rows = x.numel() // max(x.shape[-1], 1)
    splits = math.gcd(weight.shape[0], min(torch.get_num_threads(), MAX_SPLITS))
    if x.device.type != "cpu" or rows > FEW_ROWS or rows == 0 or splits < 2 or not weight.is_contiguous():
        return F.linear(x, weight, bias)
    blocks = weight.view(splits, weight.shape[0] // splits, weight.shape[1])  # (s, N/s, K), a view
    out = torch.bmm(blocks, x.reshape(rows, -1).t().expand(splits, -1, -1))  # (s, N/s, rows)
    out = out.permute(2, 0, 1).reshape(*x.shape[:-1], weight.shape[0])  # (..., N)
    return out if bias is None else out + bias


class RowSplitLinear(nn.Linear):
    """``nn.Linear`` (same parameters and state dict) computed by ``row_split_linear``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return row_split_linear(x, self.weight, self.bias)
