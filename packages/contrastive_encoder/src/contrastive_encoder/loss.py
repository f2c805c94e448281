"""The contrastive loss of the dual encoder: symmetric InfoNCE with a learnable temperature.

Flamingo (arXiv 2204.14198, appendix B.1.3, equation 4) pretrains its vision encoder with the two-way
contrastive loss of CLIP (Radford et al., arXiv 2103.00020): for a batch of N pairs with L2-normalised image
features x and text features y and temperature tau,

    L = -1/N sum_i [ log softmax_j(x_i . y_j / tau)_i + log softmax_j(y_i . x_j / tau)_i ] / 2.

With label smoothing eps (the paper's recipe: 0.1) each row's target puts 1 - eps on its pair and spreads eps
evenly over all M columns, pair included: a row's term -log p_i becomes
-(1 - eps) log p_i - eps/M sum_j log p_j (``F.cross_entropy(label_smoothing=eps)``).

Across processes the features are gathered *with gradients*, so each process scores its examples against the
global batch and a run on W processes is the same optimisation as a run on one with the same global batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

__all__ = ["ClipLoss", "gather_features"]


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums each rank's gradient for the local slice (gloo-safe: all_reduce)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.world = dist.get_rank(), dist.get_world_size()
        parts = [torch.empty_like(tensor) for _ in range(ctx.world)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)  # (W * B, D)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)  # every rank's loss depends on this rank's features
        return grad.chunk(ctx.world)[ctx.rank]


def gather_features(
    image_features: torch.Tensor, text_features: torch.Tensor, with_grad: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate the features of all processes in rank order, ``(W * B, D)`` each.

    Args:
        with_grad: keep the autograd graph through the gather (required for the 1-process equivalence);
            without it only the local slice carries gradients.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return image_features, text_features
    if with_grad:
        return _GatherWithGrad.apply(image_features), _GatherWithGrad.apply(text_features)
    rank, world = dist.get_rank(), dist.get_world_size()
    out = []
    for feats in (image_features, text_features):
        parts = [torch.empty_like(feats) for _ in range(world)]
        dist.all_gather(parts, feats.contiguous())
        parts[rank] = feats  # the local slice keeps its graph
        out.append(torch.cat(parts))
    return out[0], out[1]


class ClipLoss(nn.Module):
    """Symmetric InfoNCE over the global batch.

    Args:
        local_loss: each process scores only its own images/texts (rows) against the global batch (columns):
            W times less compute for the logits; the summed gradient is the same.
        gather_with_grad: gather features with gradients (keep True for exact multi-process equivalence).
        label_smoothing: eps in [0, 1) of the targets (module docstring); 0 is equation 4 as written.
    """

    def __init__(self, local_loss: bool = False, gather_with_grad: bool = True, label_smoothing: float = 0.0):
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.local_loss = local_loss
        self.gather_with_grad = gather_with_grad
        self.label_smoothing = float(label_smoothing)

    @staticmethod
    def _rank_world() -> tuple[int, int]:
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def get_logits(
        self, image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Image->text and text->image logits: ``(B, W*B)`` with local_loss, else ``(W*B, W*B)``."""
        all_image, all_text = gather_features(image_features, text_features, self.gather_with_grad)
        if self.local_loss:
            return logit_scale * image_features @ all_text.T, logit_scale * text_features @ all_image.T
        logits_per_image = logit_scale * all_image @ all_text.T
        return logits_per_image, logits_per_image.T

    def get_ground_truth(self, num_logits: int, device: torch.device) -> torch.Tensor:
        """Index of the positive for each row: the diagonal, shifted by the rank's offset with local_loss."""
        labels = torch.arange(num_logits, device=device)
        if self.local_loss:
            labels = labels + num_logits * self._rank_world()[0]
        return labels

    def forward(
        self, image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor
    ) -> torch.Tensor:
        """The loss of equation 4. With local_loss each process returns its share (its mean over its rows);
        the processes' gradients averaged (as DDP does) equal the global loss's gradient in both modes."""
        logits_per_image, logits_per_text = self.get_logits(image_features, text_features, logit_scale)
        labels = self.get_ground_truth(logits_per_image.shape[0], logits_per_image.device)
        eps = self.label_smoothing
        return (F.cross_entropy(logits_per_image.float(), labels, label_smoothing=eps)
                + F.cross_entropy(logits_per_text.float(), labels, label_smoothing=eps)) / 2
