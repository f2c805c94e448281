"""The training loss through the frozen LM head, without the (positions, vocabulary) logits as autograd tensors.

Flamingo's loss is the next-token NLL over text (Equation 1). The head is frozen and the loss ends the graph,
so the gradient with respect to the last hidden states (and the two new token rows, which have their own
logits) can be taken while the loss is computed, and backward only scales it. Two implementations:

- ``LinearHeadNLL``: the usual case, a bias-free linear head (``nn.Linear`` or tied input embeddings) in fp32
  with the new token ids appended after its vocabulary. Logits, their softmax and their gradient share one
  (chunk, V + n) buffer, written in place, and the frozen matrix is multiplied in tiles of ``VOCAB_TILE`` rows,
  each used by every position of the chunk while it is in cache;
- ``ChunkedHeadNLL``: any head (``logits_fn``), with autograd run chunk by chunk inside the forward pass.

Both give the gradients of cross-entropy over the full logits (tests: tied and untied heads, several chunks).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["ChunkedHeadNLL", "LinearHeadNLL", "VOCAB_TILE"]

VOCAB_TILE = 1024  # rows of the head per matrix product: 1024 x 576 fp32 is 2.4 MB, an L2/L3-sized tile


class LinearHeadNLL(torch.autograd.Function):
    """Summed NLL of ``targets`` under the logits ``hidden @ cat([weight, rows]).T``.

    Args (of ``apply``):
        hidden: (P, D) last hidden states at the positions that predict a label.
        targets: (P,) ids in ``[0, V + n)``.
        weight: (V, D) the frozen head (no gradient is computed for it).
        chunk: positions per buffer; the buffer is (chunk, V + n) floats.
        rows: (n, D) the new tokens' output rows (their logits follow the head's vocabulary).
    """

    @staticmethod
    def forward(ctx, hidden, targets, weight, chunk, rows):
        if weight.requires_grad:
            raise ValueError("LinearHeadNLL: the head weight must be frozen (it gets no gradient)")
        n_old, n_new = weight.shape[0], rows.shape[0]
        rows = rows.detach()
        grad_h = torch.empty_like(hidden)
        grad_rows = torch.zeros_like(rows)
        total = hidden.new_zeros((), dtype=torch.float32)
        for start in range(0, hidden.shape[0], chunk):
            h, t = hidden[start : start + chunk], targets[start : start + chunk, None]
            buf = hidden.new_empty(h.shape[0], n_old + n_new)
            for v in range(0, n_old, VOCAB_TILE):
                end = min(v + VOCAB_TILE, n_old)  # the buffer's last n_new columns are the new rows'
                torch.mm(h, weight[v:end].t(), out=buf[:, v:end])
            torch.mm(h, rows.t(), out=buf[:, n_old:])
            picked = buf.gather(1, t)
            top = buf.amax(1, keepdim=True)
            probs = buf.sub_(top).exp_()  # in place: the buffer now holds exp(logit - max)
            norm = probs.sum(1, keepdim=True)
            total += (norm.log() + top - picked).sum()
            grad = probs.div_(norm).scatter_add_(1, t, torch.full_like(picked, -1.0))  # softmax - one-hot
            torch.mm(grad[:, :n_old], weight, out=grad_h[start : start + chunk])
            grad_h[start : start + chunk].addmm_(grad[:, n_old:], rows)
            grad_rows.addmm_(grad[:, n_old:].t(), h)
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
