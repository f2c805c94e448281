"""Perceiver Resampler of Flamingo (Alayrac et al., "Flamingo: a Visual Language Model for Few-Shot Learning",
arXiv 2204.14198, Section 2.1 and Figure 4 / Appendix pseudo-code).

Maps a variable-size grid of spatio-temporal visual features ``x_f`` of shape (T, S, d) to a fixed number R of
visual tokens: learned ``time_embeddings`` are added per frame, the grid is flattened, and R learned ``latents``
attend with ``q = latents`` and ``kv = concat(x_f, latents)``, each layer followed by a feed-forward; all
residual, with layer norms on the attention and feed-forward inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .linear import RowSplitLinear

__all__ = ["FeedForward", "PerceiverAttention", "PerceiverResampler"]


class FeedForward(nn.Sequential):
    """Pre-norm MLP: LayerNorm -> Linear(dim, mult*dim) -> GELU -> Linear(mult*dim, dim)."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__(
            nn.LayerNorm(dim),
            RowSplitLinear(dim, dim * mult, bias=False),
            nn.GELU(),
            RowSplitLinear(dim * mult, dim, bias=False),
        )


class PerceiverAttention(nn.Module):
    """One attention of the resampler: queries from the latents, keys/values from [x_f, latents]."""

    def __init__(self, dim: int, heads: int = 8, dim_head: int = 64):
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        inner = heads * dim_head
        self.norm_media = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x_f: torch.Tensor, latents: torch.Tensor, kv_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x_f (B, N_f, d), latents (B, R, d), kv_mask (B, N_f) bool (True = keep) -> (B, R, d)."""
        b, r, _ = latents.shape
        x_f = self.norm_media(x_f)
        latents = self.norm_latents(latents)
        q = self.to_q(latents)
        k, v = self.to_kv(torch.cat([x_f, latents], dim=1)).chunk(2, dim=-1)  # (B, N_f + R, inner)
        q, k, v = (t.view(b, -1, self.heads, self.dim_head).transpose(1, 2) for t in (q, k, v))  # (B, H, *, dh)
        mask = None
        if kv_mask is not None:
            # the latents are always valid keys, so no query row is ever fully masked
            keep = torch.cat([kv_mask, kv_mask.new_ones(b, r)], dim=1)  # (B, N_f + R)
            mask = keep[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, R, dh)
        return self.to_out(out.transpose(1, 2).reshape(b, r, -1))


class PerceiverResampler(nn.Module):
    """(B, T, S, d) visual features -> (B, R, d) visual tokens, for any T <= max_frames and any S.

    Args:
        dim: feature dimension d of the vision encoder (the resampler works at this width).
        depth: number of attention + feed-forward layers.
        heads, dim_head: attention heads and their width.
        num_latents: R, the number of output tokens per image or video (64 in the paper).
        max_frames: number of learned time embeddings (videos may have at most this many frames).
        ff_mult: hidden width multiplier of the feed-forward.
    """

    def __init__(
        self,
        dim: int,
        depth: int = 6,
        heads: int = 8,
        dim_head: int = 64,
        num_latents: int = 64,
        max_frames: int = 8,
        ff_mult: int = 4,
    ):
        super().__init__()
        self.max_frames = max_frames
        self.latents = nn.Parameter(torch.randn(num_latents, dim) * 0.02)  # x in the paper's pseudo-code
        self.time_embeddings = nn.Parameter(torch.randn(max_frames, 1, dim) * 0.02)  # (T_max, 1, d)
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(dim, heads, dim_head), FeedForward(dim, ff_mult)]) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x_f: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Resample visual features.

        Args:
            x_f: (B, T, S, d) features of B images/videos, T frames of S positions each.
            frame_mask: optional (B, T) bool, False for padding frames (videos shorter than T).

        Returns:
            (B, R, d) visual tokens.
        """
        if x_f.ndim != 4:
            raise ValueError(f"x_f must have shape (B, T, S, d), got {tuple(x_f.shape)}")
        b, t, s, d = x_f.shape
        if t > self.max_frames:
            raise ValueError(f"got {t} frames but the resampler has time embeddings for at most {self.max_frames}")
        x_f = x_f + self.time_embeddings[:t].to(x_f.dtype)  # (B, T, S, d)
        x_f = x_f.reshape(b, t * s, d)  # flatten: (B, T*S, d)
        kv_mask = None
        if frame_mask is not None:
            kv_mask = frame_mask.to(torch.bool)[:, :, None].expand(b, t, s).reshape(b, t * s)  # (B, T*S)
        latents = self.latents.to(x_f.dtype).expand(b, -1, -1)  # (B, R, d)
        for attn, ffw in self.layers:
            latents = latents + attn(x_f, latents, kv_mask)
            latents = latents + ffw(latents)
        return self.norm(latents)
