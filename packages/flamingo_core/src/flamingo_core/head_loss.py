"""The training loss through the frozen LM head, without the (positions, vocabulary) logits as autograd tensors.

Flamingo's loss is the next-token NLL over text (Equation 1). The head is frozen and the loss ends the graph,
so the gradient with respect to the last hidden states (and the two new token rows, which have their own
logits) can be taken while the loss is computed, and backward only scales it. Two implementations:

- ``LinearHeadNLL``: the usual case, a bias-free linear head (``nn.Linear`` or tied input embeddings) in fp32
  with the new token ids appended after its vocabulary. One pass over the frozen matrix in tiles of
  ``VOCAB_TILE`` rows, each used for the logits and, still in cache, for the gradient (online softmax);
- ``ChunkedHeadNLL``: any head (``logits_fn``), with autograd run chunk by chunk inside the forward pass.

Both give the gradients of cross-entropy over the full logits (tests: tied and untied heads, several chunks).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["ChunkedHeadNLL", "LINEAR_HEAD_CHUNK", "LOGITS_CHUNK", "LinearHeadNLL", "VOCAB_TILE", "default_chunks",
           "vocab_tile"]

# On the CPU the tiles are sized for the cache (docs/design/stage2-speed.md):
VOCAB_TILE = 1024  # rows of the head per matrix product: 1024 x 576 fp32 is 2.4 MB, an L2/L3-sized tile
LINEAR_HEAD_CHUNK = 1024  # positions per pass of LinearHeadNLL over the head (a 4 MB (1024, VOCAB_TILE) buffer)
LOGITS_CHUNK = 128  # positions per (chunk, vocabulary) logits block elsewhere (SmolLM2: 25 MB)
# On an accelerator the CPU's tiles are too small: a (1024, 1024) product is 64 output blocks of 128 x 128, fewer
# than an H100's 132 SMs, and each tile costs ~8 kernel launches, so there the tiles hold 8192 rows and a pass
# 4096 positions (a 128 MB buffer).
ACCEL_VOCAB_TILE, ACCEL_LINEAR_HEAD_CHUNK, ACCEL_LOGITS_CHUNK = 8192, 4096, 1024


def vocab_tile(device: torch.device) -> int:
    """Head rows per matrix product in ``LinearHeadNLL`` on ``device``."""
    return VOCAB_TILE if device.type == "cpu" else ACCEL_VOCAB_TILE


def default_chunks(device: torch.device) -> tuple[int, int]:
    """Positions per pass on ``device``: (``LinearHeadNLL``, paths that hold (chunk, vocabulary) logits)."""
    if device.type == "cpu":
        return LINEAR_HEAD_CHUNK, LOGITS_CHUNK
    return ACCEL_LINEAR_HEAD_CHUNK, ACCEL_LOGITS_CHUNK


class LinearHeadNLL(torch.autograd.Function):
    """Summed NLL of ``targets`` under the logits ``hidden @ cat([weight, rows]).T``.

    One pass over the head per ``chunk`` positions, in tiles of ``vocab_tile(device)`` rows: each tile's logits are
    exponentiated against a running maximum (rescaling the sums when it grows, as in online softmax) and the
    same tile, still in cache, accumulates ``sum_v exp(logit_v - max) * W_v``; the gradient with respect to
    the hidden states is then that sum over the normaliser minus the target's row. Only a (chunk, tile)
    buffer exists, and the 113 MB SmolLM2 head is read once per chunk instead of twice.

    Args (of ``apply``):
        hidden: (P, D) last hidden states at the positions that predict a label.
        targets: (P,) ids in ``[0, V + n)``.
        weight: (V, D) the frozen head (no gradient is computed for it).
        chunk: positions per pass over the head.
        rows: (n, D) the new tokens' output rows (their logits follow the head's vocabulary).
    """

    @staticmethod
    def forward(ctx, hidden, targets, weight, chunk, rows):
        if weight.requires_grad:
            raise ValueError("LinearHeadNLL: the head weight must be frozen (it gets no gradient)")
        n_old = weight.shape[0]
        rows = rows.detach()
        size = vocab_tile(hidden.device)
        tiles = [weight[v : v + size] for v in range(0, n_old, size)]
        tiles += [rows[v : v + size] for v in range(0, rows.shape[0], size)]
        grad_h = torch.empty_like(hidden)
        grad_rows = torch.zeros_like(rows)
        total = hidden.new_zeros((), dtype=torch.float32)
        for start in range(0, hidden.shape[0], chunk):
            h, t = hidden[start : start + chunk], targets[start : start + chunk]
            top = h.new_full((h.shape[0], 1), float("-inf"))  # running max of the logits seen so far
            norm = h.new_zeros((h.shape[0], 1))  # sum of exp(logit - top)
            acc = torch.zeros_like(h)  # sum of exp(logit_v - top) * row_v
            buf = h.new_empty(h.shape[0], max(size, rows.shape[0]))
            for tile in tiles:
                logits = torch.mm(h, tile.t(), out=buf[:, : tile.shape[0]])
                new_top = torch.maximum(top, logits.amax(1, keepdim=True))
                scale = (top - new_top).exp_()  # 0 on the first tile, where top is -inf
                probs = logits.sub_(new_top).exp_()
                norm.mul_(scale).add_(probs.sum(1, keepdim=True))
                acc.mul_(scale).addmm_(probs, tile)
                top = new_top
            is_new = t >= n_old
            target_rows = weight[t.clamp(max=n_old - 1)]
            if rows.shape[0]:
                target_rows = torch.where(is_new[:, None], rows[(t - n_old).clamp(min=0)], target_rows)
            picked = (h * target_rows).sum(1, keepdim=True)
            total += (norm.log() + top - picked).sum()
            torch.sub(acc.div_(norm), target_rows, out=grad_h[start : start + chunk])  # softmax - one-hot, times W
            probs_new = torch.mm(h, rows.t(), out=buf[:, : rows.shape[0]]).sub_(top).exp_().div_(norm)
            probs_new[is_new, t[is_new] - n_old] -= 1.0
            grad_rows.addmm_(probs_new.t(), h)
        ctx.save_for_backward(grad_h, grad_rows)
        return total

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_rows = ctx.saved_tensors
        scale = grad_out.to(grad_h.dtype)
        return grad_h * scale, None, None, None, (grad_rows * scale if ctx.needs_input_grad[4] else None)


class ChunkedHeadNLL(torch.autograd.Function):
    """Summed NLL of ``targets`` under ``logits_fn(hidden)``, computed ``chunk`` rows at a time.

    The gradients with respect to ``hidden`` and the trainable ``params`` inside ``logits_fn`` (the new token
    rows) are taken chunk by chunk during the forward pass and only scaled in backward. At most one chunk of
    (rows, vocabulary) logits, their softmax and their gradient is alive, instead of all of them (with SmolLM2's
    49k-token head and 252 label positions, about 150 MB), for the same arithmetic. Used for heads that
    ``LinearHeadNLL`` does not cover (a bias, another dtype, new ids inside the vocabulary).
    """

    @staticmethod
    def forward(ctx, hidden, targets, logits_fn, chunk, *params):
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_h = torch.zeros_like(hidden)
        grad_p = [torch.zeros_like(p) for p in params]
        for start in range(0, hidden.shape[0], chunk):
            with torch.enable_grad():
                h = hidden[start : start + chunk].detach().requires_grad_(True)
                nll = F.cross_entropy(logits_fn(h).float(), targets[start : start + chunk], reduction="sum")
                grads = torch.autograd.grad(nll, [h, *params], allow_unused=True)
            grad_h[start : start + chunk] = grads[0]
            for acc, g in zip(grad_p, grads[1:]):
                if g is not None:
                    acc += g
            total += nll.detach()
        ctx.save_for_backward(grad_h, *grad_p)
        return total

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, *grad_p = ctx.saved_tensors
        return (grad_h * grad_out.to(grad_h.dtype), None, None, None, *(g * grad_out.to(g.dtype) for g in grad_p))
