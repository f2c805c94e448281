"""Language-modelling labels: which token positions the next-token loss counts."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["IGNORE_INDEX", "make_labels"]

IGNORE_INDEX = -100  # torch's cross_entropy default ignore_index


def make_labels(input_ids: torch.Tensor, attention_mask: torch.Tensor, media_token_ids: Sequence[int]) -> torch.Tensor:
    """Labels for next-token NLL: the input ids with padding and media tokens set to IGNORE_INDEX.

    Padding is found through the attention mask, never by token id: SmolLM2 pads with its EOS token, and the EOS
    that ends a text must stay in the loss.
    """
    labels = input_ids.clone()
    labels[attention_mask == 0] = IGNORE_INDEX
    for t in media_token_ids:
        labels[input_ids == t] = IGNORE_INDEX
    return labels
