"""Sequence packing: several short samples (image-text and video-text pairs) in one row, so the frozen LM runs
no padding. The paper's pair datasets have captions of 12-21 tokens on average in 32-64 token sequences
(Appendix A.3), and every padded position still runs through every frozen layer.

A packed row holds segments 1, 2, ... (``segment_ids``, 0 on padding). Each segment sees only itself: the
frozen LM's self-attention is block-diagonal causal (``segment_attention_mask``, a 4D mask the Hugging Face LMs
take as given), its positions restart at 0 (``segment_positions``), and its cross-attention sees only its own
media (``segment_phi``: phi counts media within the segment, 0 before its first one, so the immediate-media mask
of Figure 7 never reaches another sample's image). The first token of a segment predicts nothing across the
boundary (``pack_batch`` masks its label). The loss is then the unpacked batch's: the same label tokens with
the same contexts, summed and counted alike (equal up to float rounding of the shorter attention rows).
"""

from __future__ import annotations

from typing import Any

import torch

from .labels import IGNORE_INDEX

__all__ = ["pack_batch", "segment_attention_mask", "segment_phi", "segment_positions"]


def segment_attention_mask(segment_ids: torch.Tensor) -> torch.Tensor:
    """(B, L) segment ids -> (B, 1, L, L) bool, True where query i may attend key j: same segment and j <= i.
    A padding position attends to itself only, so no softmax row is empty."""
    length = segment_ids.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=segment_ids.device).tril()
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    own = torch.eye(length, dtype=torch.bool, device=segment_ids.device)
    return ((same & causal & (segment_ids > 0)[:, :, None]) | own)[:, None]


def _segment_starts(segment_ids: torch.Tensor) -> torch.Tensor:
    """(B, L) -> the index of the first token of each token's segment (segments are contiguous runs)."""
    index = torch.arange(segment_ids.shape[1], device=segment_ids.device).expand_as(segment_ids)
    is_start = torch.ones_like(segment_ids, dtype=torch.bool)
    is_start[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]
    return torch.where(is_start, index, torch.zeros_like(index)).cummax(dim=1).values


def segment_positions(segment_ids: torch.Tensor) -> torch.Tensor:
    """(B, L) -> positions counted from 0 within each segment (padding: 0)."""
    index = torch.arange(segment_ids.shape[1], device=segment_ids.device)
    return torch.where(segment_ids > 0, index - _segment_starts(segment_ids), torch.zeros_like(segment_ids))


def segment_phi(phi: torch.Tensor, segment_ids: torch.Tensor) -> torch.Tensor:
    """phi of a packed row (the index of the last media at or before each token, counted over the row) with the
    tokens of a segment before its own first media set to 0: they attend to no media, as in the sample alone."""
    starts = _segment_starts(segment_ids)
    before = torch.where(starts > 0, phi.gather(1, (starts - 1).clamp(min=0)), torch.zeros_like(phi))
    return torch.where(phi > before, phi, torch.zeros_like(phi))


def pack_batch(batch: dict[str, Any], window: int) -> dict[str, Any]:
    """Pack a collated batch of right-padded samples (one row each) into rows of at most ``window`` tokens,
    first fit in sample order; each sample's media stay with it, in order.

    Returns the batch with ``input_ids``, ``attention_mask``, ``labels``, ``segment_ids`` (R, W), ``media``
    (R, N, T, C, H, W), ``media_mask`` / ``media_frame_mask`` and ``packing`` = real tokens / (R * W).

    Raises:
        ValueError: a sample longer than ``window``.
    """
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    lengths = mask.sum(1).tolist()
    if max(lengths) > window:
        raise ValueError(f"packing window {window} is shorter than a sample of {max(lengths)} tokens: raise it to "
                         "the source's max tokens at least")
    rows: list[list[int]] = []
    room: list[int] = []
    for i, n in enumerate(lengths):
        slot = next((r for r, free in enumerate(room) if free >= n), None)
        if slot is None:
            rows.append([])
            room.append(window)
            slot = len(rows) - 1
        rows[slot].append(i)
        room[slot] -= n
    width = max(window - free for free in room)
    media, media_mask, frames = batch.get("media"), batch.get("media_mask"), batch.get("media_frame_mask")
    out_ids = ids.new_zeros(len(rows), width)
    out_mask, out_seg = mask.new_zeros(len(rows), width), mask.new_zeros(len(rows), width)
    out_labels = labels.new_full((len(rows), width), IGNORE_INDEX)
    per_row_media = []
    for r, members in enumerate(rows):
        at = 0
        for s, i in enumerate(members, 1):
            n = lengths[i]
            out_ids[r, at:at + n], out_mask[r, at:at + n], out_seg[r, at:at + n] = ids[i, :n], 1, s
            out_labels[r, at:at + n] = labels[i, :n]
            out_labels[r, at] = IGNORE_INDEX  # nothing predicts a segment's first token across the boundary
            at += n
        if media is not None:
            per_row_media.append([(i, k) for i in members for k in range(media.shape[1])
                                  if media_mask is None or bool(media_mask[i, k])])
    packed = {**batch, "input_ids": out_ids, "attention_mask": out_mask, "labels": out_labels,
              "segment_ids": out_seg, "packing": sum(lengths) / (len(rows) * width)}
    if media is not None:
        n_max = max(1, max(len(m) for m in per_row_media))
        out_media = media.new_zeros(len(rows), n_max, *media.shape[2:])
        out_media_mask = torch.zeros(len(rows), n_max, dtype=torch.bool)
        out_frames = None if frames is None else frames.new_zeros(len(rows), n_max, frames.shape[2])
        for r, slots in enumerate(per_row_media):
            for j, (i, k) in enumerate(slots):
                out_media[r, j], out_media_mask[r, j] = media[i, k], True
                if out_frames is not None:
                    out_frames[r, j] = frames[i, k]
        packed.update(media=out_media, media_mask=out_media_mask, media_frame_mask=out_frames)
    return packed
