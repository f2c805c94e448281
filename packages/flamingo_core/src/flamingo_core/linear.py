"""A linear layer that keeps every core busy when decoding.

At batch 1 a decoding step multiplies each weight by a single row, which MKL runs as a matrix-vector product on
one thread: the step is bound by reading the weights from memory, and one thread leaves the other cores' share of
the memory bandwidth unused. Viewing the weight's output rows as ``s`` equal blocks (no copy) and multiplying them
with ``bmm`` runs the blocks in parallel. ``Flamingo.compute_logits(decoding=True)`` applies it to the frozen head
as well, the largest single weight read per token. Larger inputs, GPUs and single-threaded runs take plain
``F.linear``. Figures: docs/design/stage2-speed.md (``benchmarks/bench_vs_openflamingo.py`` measures the whole
decode).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FEW_ROWS", "RowSplitLinear", "row_split_linear"]

FEW_ROWS = 8  # inputs of at most this many rows take the split product
MAX_SPLITS = 8  # a few threads already saturate memory bandwidth; more blocks only add overhead


def row_split_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``; on CPU with few rows, the weight's output rows are split across threads.

    The first ``s * (N // s)`` output rows form ``s`` equal blocks (a view) multiplied by one ``bmm``; the
    remaining ``N mod s`` rows (odd vocabularies) take ``F.linear``.
    """
    rows = x.numel() // max(x.shape[-1], 1)
    splits = min(torch.get_num_threads(), MAX_SPLITS)
    n_out = weight.shape[0]
    main = n_out - n_out % splits
    if x.device.type != "cpu" or rows > FEW_ROWS or rows == 0 or splits < 2 or main == 0 or not weight.is_contiguous():
        return F.linear(x, weight, bias)
    flat = x.reshape(rows, -1)
    blocks = weight[:main].view(splits, main // splits, weight.shape[1])  # (s, N/s, K), a view
    out = torch.bmm(blocks, flat.t().expand(splits, -1, -1)).permute(2, 0, 1).reshape(rows, main)  # (rows, main)
    if main < n_out:
        out = torch.cat([out, F.linear(flat, weight[main:])], dim=1)
    out = out.reshape(*x.shape[:-1], n_out)
    return out if bias is None else out + bias


class RowSplitLinear(nn.Linear):
    """``nn.Linear`` (same parameters and state dict) computed by ``row_split_linear``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return row_split_linear(x, self.weight, self.bias)
