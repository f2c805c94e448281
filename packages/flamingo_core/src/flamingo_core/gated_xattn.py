"""GATED XATTN-DENSE layer of Flamingo (arXiv 2204.14198, Section 2.2, Figure 5 and its pseudo-code) with the
masked cross-attention of Section 2.3 / Figure 7.

    y = y + tanh(alpha_xattn) * attention(q=y, kv=x)
    y = y + tanh(alpha_dense) * ffw(y)

``alpha_xattn`` and ``alpha_dense`` are per-layer scalars initialised at 0, so at initialisation the frozen LM is
unchanged. ``phi`` gives, for every text token, the 1-based index of the last image/video at or before it (0 when
there is none): a token attends only to the R visual tokens of media ``phi`` (or, with
``only_attend_immediate_media=False``, to those of every media ``<= phi``); tokens with ``phi = 0`` receive no
visual signal at all (their attention output is exactly zero).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .linear import RowSplitLinear
from .perceiver import FeedForward

__all__ = ["GatedCrossAttentionBlock", "MaskedCrossAttention", "media_attention_mask"]


def media_attention_mask(phi: torch.Tensor, num_media: int, num_latents: int, only_immediate: bool) -> torch.Tensor:
    """Boolean (B, 1, L, N*R) mask of the visual tokens each text token may attend to.

    Rows with ``phi == 0`` are left fully open (their output is zeroed by the caller), which keeps
    ``scaled_dot_product_attention`` from producing NaN on all-masked rows.
    """
    media_index = torch.arange(1, num_media + 1, device=phi.device).repeat_interleave(num_latents)  # (N*R,)
    phi = phi[:, :, None]  # (B, L, 1)
    allowed = media_index == phi if only_immediate else media_index <= phi  # (B, L, N*R)
    allowed = allowed | (phi == 0)
    return allowed[:, None]  # (B, 1, L, N*R)


class MaskedCrossAttention(nn.Module):
    """Text queries attend to the visual tokens of the media selected by phi."""

    def __init__(self, dim: int, dim_visual: int, heads: int = 8, dim_head: int = 64, only_immediate: bool = True):
        super().__init__()
        self.heads, self.dim_head, self.only_immediate = heads, dim_head, only_immediate
        inner = heads * dim_head
        self.norm = nn.LayerNorm(dim)
        self.to_q = RowSplitLinear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim_visual, 2 * inner, bias=False)
        self.to_out = RowSplitLinear(inner, dim, bias=False)

    def media_kv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of the visual tokens, computed once per prompt and cached by the caller.

        Args:
            x: (B, N, R, d_visual) visual tokens of N media per sample.

        Returns:
            k, v of shape (B, H, N*R, dh).
        """
        b, n, r, _ = x.shape
        k, v = self.to_kv(x.reshape(b, n * r, -1).to(self.to_kv.weight.dtype)).chunk(2, dim=-1)  # (B, N*R, inner)
        return tuple(t.view(b, n * r, self.heads, self.dim_head).transpose(1, 2) for t in (k, v))

    def forward(
        self,
        y: torch.Tensor,
        phi: torch.Tensor,
        kv: tuple[torch.Tensor, torch.Tensor],
        num_latents: int,
        mask: torch.Tensor | None = None,
    ):
        """y (B, L, dim), phi (B, L), kv from ``media_kv`` -> (B, L, dim), zero where phi == 0.

        ``mask``: this call's ``media_attention_mask`` when the caller shares one between blocks.
        """
        b, length, _ = y.shape
        k, v = kv
        num_media = k.shape[2] // num_latents
        q = self.to_q(self.norm(y)).view(b, length, self.heads, self.dim_head).transpose(1, 2)  # (B, H, L, dh)
        if mask is None:
            mask = media_attention_mask(phi, num_media, num_latents, self.only_immediate)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, L, dh)
        out = self.to_out(out.transpose(1, 2).reshape(b, length, -1))  # (B, L, dim)
        return out * (phi > 0)[:, :, None].to(out.dtype)


class GatedCrossAttentionBlock(nn.Module):
    """GATED XATTN-DENSE: tanh-gated masked cross-attention, then a tanh-gated feed-forward (Figure 5).

    Args:
        dim: hidden size of the language model.
        dim_visual: width of the visual tokens (the vision encoder's feature dim).
        heads, dim_head: cross-attention heads.
        ff_mult: feed-forward width multiplier.
        only_attend_immediate_media: True (paper default) = attend only to the last preceding media.
        ffw_activation: the feed-forward's activation, "gelu" or the paper's "squared_relu" (Table 4).
    """

    def __init__(
        self,
        dim: int,
        dim_visual: int,
        heads: int = 8,
        dim_head: int = 64,
        ff_mult: int = 4,
        only_attend_immediate_media: bool = True,
        ffw_activation: str = "gelu",
    ):
        super().__init__()
        self.attn = MaskedCrossAttention(dim, dim_visual, heads, dim_head, only_attend_immediate_media)
        # shape (1,), not 0-dim: FSDP refuses 0-dim parameters ("doesn't support scalar parameters")
        self.alpha_xattn = nn.Parameter(torch.zeros(1))
        self.ffw = FeedForward(dim, ff_mult, ffw_activation)
        self.alpha_dense = nn.Parameter(torch.zeros(1))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("alpha_xattn", "alpha_dense"):  # weights saved before the gates were (1,): 0-dim
            value = state_dict.get(prefix + name)
            if value is not None and value.dim() == 0:
                state_dict[prefix + name] = value.reshape(1)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def media_kv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.attn.media_kv(x)

    def forward(
        self,
        y: torch.Tensor,
        phi: torch.Tensor,
        kv: tuple[torch.Tensor, torch.Tensor],
        num_latents: int,
        mask: torch.Tensor | None = None,
    ):
        """Apply the block to the language features ``y`` (B, L, dim); returns the same shape and dtype."""
        dtype = y.dtype
        h = y.to(self.alpha_xattn.dtype)
        h = h + torch.tanh(self.alpha_xattn) * self.attn(h, phi, kv, num_latents, mask)
        h = h + torch.tanh(self.alpha_dense) * self.ffw(h)
        return h.to(dtype)
