"""Perceiver Resampler of Flamingo (Alayrac et al., "Flamingo: a Visual Language Model for Few-Shot Learning",
arXiv 2204.14198, Section 2.1 and Figure 4 / Appendix pseudo-code).

Maps a variable-size grid of spatio-temporal visual features ``x_f`` of shape (T, S, d) to a fixed number R of
visual tokens: learned ``time_embeddings`` are added per frame, the grid is flattened, and R learned ``latents``
attend with ``q = latents`` and ``kv = concat(x_f, latents)``, each layer followed by a feed-forward; all
residual, with layer norms on the attention and feed-forward inputs.

Videos are trained with ``max_frames`` frames (the paper: 8 at 1 FPS) and may be read at inference with more (30
at 3 FPS, Appendix B.1.2): the time embeddings are then linearly interpolated between the trained ones, at frame
positions counted in trained frames (at 3 FPS frame 3 sits at position 1 and gets trained embedding 1 exactly,
frame 4 at 4/3 gets 2/3 of embedding 1 and 1/3 of embedding 2); past the last trained frame the last embedding
holds (``numpy.interp``'s rule), as a 30-frame clip at 3 FPS lasts longer than 8 frames at 1 FPS.
The feed-forwards use GELU or, as the paper (Table 4), Squared ReLU (So et al., "Primer", arXiv 2109.08668).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .linear import RowSplitLinear

__all__ = ["FFW_ACTIVATIONS", "FeedForward", "PerceiverAttention", "PerceiverResampler", "SquaredReLU"]

FFW_ACTIVATIONS = ("gelu", "squared_relu")  # the feed-forwards' nonlinearity: ours before, the paper's (Table 4)


class SquaredReLU(nn.Module):
    """relu(x)^2, the activation of the paper's resampler and GATED XATTN-DENSE feed-forwards (Table 4)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.square(F.relu(x))


def ffw_activation_module(name: str) -> nn.Module:
    """The activation named by ``name`` (one of ``FFW_ACTIVATIONS``)."""
    if name == "gelu":
        return nn.GELU()
    if name == "squared_relu":
        return SquaredReLU()
    raise ValueError(f"ffw_activation {name!r}: expected one of {', '.join(FFW_ACTIVATIONS)}")


class FeedForward(nn.Sequential):
    """Pre-norm MLP: LayerNorm -> Linear(dim, mult*dim) -> activation -> Linear(mult*dim, dim).

    The activation has no parameters, so checkpoints index the same layers (0, 1, 3) whichever it is.
    """

    def __init__(self, dim: int, mult: int = 4, activation: str = "gelu"):
        super().__init__(
            nn.LayerNorm(dim),
            RowSplitLinear(dim, dim * mult, bias=False),
            ffw_activation_module(activation),
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
    """(B, T, S, d) visual features -> (B, R, d) visual tokens, for any T and any S.

    Args:
        dim: feature dimension d of the vision encoder (the resampler works at this width).
        depth: number of attention + feed-forward layers.
        heads, dim_head: attention heads and their width.
        num_latents: R, the number of output tokens per image or video (64 in the paper).
        max_frames: number of learned time embeddings, one per trained frame; longer videos interpolate them.
        ff_mult: hidden width multiplier of the feed-forward.
        ffw_activation: the feed-forwards' activation, one of ``FFW_ACTIVATIONS``.
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
        ffw_activation: str = "gelu",
    ):
        super().__init__()
        self.max_frames = max_frames
        self.latents = nn.Parameter(torch.randn(num_latents, dim) * 0.02)  # x in the paper's pseudo-code
        self.time_embeddings = nn.Parameter(torch.randn(max_frames, 1, dim) * 0.02)  # (T_max, 1, d)
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(dim, heads, dim_head), FeedForward(dim, ff_mult, ffw_activation)])
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def frame_positions(self, num_frames: int, frame_spacing: float | None = None) -> torch.Tensor:
        """Where ``num_frames`` frames sit on the trained time axis, in trained frames (T,).

        Args:
            num_frames: T.
            frame_spacing: time between two of these frames in trained frame intervals: the trained frame rate
                over this one (1/3 for 3 FPS on embeddings trained at 1 FPS). None: 1 up to ``max_frames``
                frames, beyond that the frames spread evenly from the first to the last trained frame.
        """
        if frame_spacing is not None:
            if not frame_spacing > 0:
                raise ValueError(f"frame_spacing must be > 0, got {frame_spacing}")
            return torch.arange(num_frames, dtype=torch.float32) * frame_spacing
        if num_frames <= self.max_frames:
            return torch.arange(num_frames, dtype=torch.float32)
        return torch.linspace(0, self.max_frames - 1, num_frames)

    def _default_positions(self, t: int, frame_mask: torch.Tensor | None) -> torch.Tensor:
        """(T,) positions of T frames, or (B, T) with padding frames: each video's own frames (the first ones, as
        the processor pads) placed by its own length."""
        if frame_mask is None:
            return self.frame_positions(t)
        positions = torch.zeros(frame_mask.shape[0], t)
        for i, n in enumerate(frame_mask.to(torch.bool).sum(1).tolist()):
            positions[i, :n] = self.frame_positions(n)
        return positions

    def time_embeddings_at(self, positions: torch.Tensor) -> torch.Tensor:
        """Time embeddings at frame ``positions`` (..., T) in trained frames, linearly interpolated: (..., T, 1, d).

        A whole position p is trained embedding p exactly; between two, the weighted mean of both; past the last
        trained frame, the last embedding.
        """
        positions = torch.as_tensor(positions, dtype=torch.float32, device=self.time_embeddings.device)
        if not torch.isfinite(positions).all() or positions.min() < 0:
            raise ValueError(f"frame_positions must be finite and >= 0 (trained frames), got {positions.tolist()}")
        last = self.max_frames - 1
        lo = positions.floor().long().clamp(max=last)
        hi = (lo + 1).clamp(max=last)  # past the last trained frame lo = hi = last: that embedding holds
        w = (positions - lo).to(self.time_embeddings.dtype)[..., None, None]  # (..., T, 1, 1)
        return torch.lerp(self.time_embeddings[lo], self.time_embeddings[hi], w)  # (..., T, 1, d)

    def forward(self, x_f: torch.Tensor, frame_mask: torch.Tensor | None = None,
                frame_positions: torch.Tensor | None = None) -> torch.Tensor:
        """Resample visual features.

        Args:
            x_f: (B, T, S, d) features of B images/videos, T frames of S positions each.
            frame_mask: optional (B, T) bool, False for padding frames (videos shorter than T).
            frame_positions: optional (T,) or (B, T) float, each frame's place on the trained time axis in
                trained frames (30 frames at 3 FPS on embeddings trained at 1 FPS: 0, 1/3, 2/3, ...); default
                ``frame_positions`` of each video's length.

        Returns:
            (B, R, d) visual tokens.
        """
        if x_f.ndim != 4:
            raise ValueError(f"x_f must have shape (B, T, S, d), got {tuple(x_f.shape)}")
        b, t, s, d = x_f.shape
        if frame_positions is None and t <= self.max_frames:
            time_embeddings = self.time_embeddings[:t]  # the trained ones, no arithmetic
        else:
            positions = self._default_positions(t, frame_mask) if frame_positions is None else frame_positions
            positions = torch.as_tensor(positions)
            if positions.shape not in ((t,), (b, t)):
                raise ValueError(f"frame_positions must have shape ({t},) or ({b}, {t}) for x_f of shape "
                                 f"{tuple(x_f.shape)}, got {tuple(positions.shape)}")
            time_embeddings = self.time_embeddings_at(positions)  # (T, 1, d) or (B, T, 1, d)
        x_f = x_f + time_embeddings.to(x_f.dtype)  # (B, T, S, d)
        x_f = x_f.reshape(b, t * s, d)  # flatten: (B, T*S, d)
        kv_mask = None
        if frame_mask is not None:
            kv_mask = frame_mask.to(torch.bool)[:, :, None].expand(b, t, s).reshape(b, t * s)  # (B, T*S)
        latents = self.latents.to(x_f.dtype).expand(b, -1, -1)  # (B, R, d)
        for attn, ffw in self.layers:
            latents = latents + attn(x_f, latents, kv_mask)
            latents = latents + ffw(latents)
        return self.norm(latents)
