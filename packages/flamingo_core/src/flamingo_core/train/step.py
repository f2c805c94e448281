"""One optimizer step of the dataset mixture (collective under DDP)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from flamingo_core.data import IGNORE_INDEX
from flamingo_core.mixture import SourceSchedule, accumulate_gradients


def _to(batch: dict[str, Any], device) -> dict[str, Any]:
    return {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}


# what a source's summed NLL is divided by (paper Eq. 2): its label tokens, or its sequences
LOSS_NORMALISATIONS = ("tokens", "sequences")


def sequence_count(batch: dict[str, Any]) -> int:
    """The sequences (samples) in a collated batch: one per row, or per segment of a packed row."""
    if batch.get("segment_ids") is not None:
        return int(batch["segment_ids"].amax(dim=1).sum())  # segments are numbered 1..k in each row
    return int(batch["labels"].shape[0])


@dataclass
class StepResult:
    losses: dict[str, float]  # per-source NLL over the global batch, per token or per sequence
    loss: float  # sum_m lambda_m * loss_m (round-robin: the one source's loss)
    grad_norm: float  # before clipping
    finite: bool  # False: the update was NOT applied
    tokens: int  # label tokens in the global batch


def train_step(model, optimizer, batches: dict[str, dict[str, Any]], weights: dict[str, float], *,
               accelerator=None, scheduler=None, grad_clip: float = 1.0, trained: list | None = None,
               strategy: str = "accumulation", fsdp: bool = False, loss_normalisation: str = "tokens") -> StepResult:
    """One optimizer step of the mixture: accumulate ``lambda_m * loss_m`` over the sources' batches, clip,
    and step, unless the loss or gradient norm is non-finite (then gradients are dropped and ``finite`` is False).

    With ``strategy="round-robin"`` ``batches`` holds the one source whose turn it is (``DatasetMixture``) and
    its loss gets weight 1: the weights already chose how often that source's turn comes (``SourceSchedule``).

    ``fsdp``: the model is sharded with FSDP2 (``train/fsdp.py``), whose module calls are collectives: a source's
    batch that has media on some processes and none on others (which would run the cross-attention on some only)
    is refused on every process, naming it.

    ``loss_normalisation``: each source's summed token NLL over the global batch is divided by its label tokens
    (``tokens``, a per-token mean) or by its sequences (``sequences``: Eq. 2's sum of per-sequence NLLs, averaged
    over the batch's sequences so its scale does not grow with the batch size).

    Collective under DDP (every process must call it). Used by ``train`` and by
    ``benchmarks/bench_train_flamingo.py``.
    """
    from accelerate import Accelerator

    if loss_normalisation not in LOSS_NORMALISATIONS:
        raise ValueError(f"loss_normalisation {loss_normalisation!r}: expected one of "
                         f"{', '.join(LOSS_NORMALISATIONS)}")
    accelerator = accelerator or Accelerator(cpu=not torch.cuda.is_available())
    world = accelerator.num_processes
    device = accelerator.device
    names = [n for n in batches if weights.get(n, 0.0) > 0]
    if strategy == "round-robin" and len(names) != 1:
        raise ValueError(f"a round-robin step trains on one source, got batches of {names}")
    weights = SourceSchedule(weights, strategy).loss_weights(names)  # the factor on each source's loss
    trained = trained if trained is not None else [p for p in model.parameters() if p.requires_grad]
    tokens = [float((batches[n]["labels"][:, 1:] != IGNORE_INDEX).sum()) for n in names]
    sequences = [float(sequence_count(batches[n])) for n in names] if loss_normalisation == "sequences" else []
    with_media = [float(batches[n].get("media") is not None) for n in names] if fsdp else []
    agreed = torch.tensor(tokens + sequences + with_media, dtype=torch.float64, device=device)
    agreed = accelerator.reduce(agreed, reduction="sum") if world > 1 else agreed
    m = len(names)
    token_counts = {n: int(agreed[i]) for i, n in enumerate(names)}
    # the divisor of each source's summed NLL, in the loss value and in its gradient alike
    global_counts = {n: int(agreed[m + i]) for i, n in enumerate(names)} if sequences else token_counts
    for n, k in zip(names, agreed[m + len(sequences):].tolist()):
        if 0 < k < world:
            raise ValueError(f"--fsdp: this step's {n} batch has media on {int(k)} of {world} processes; FSDP runs "
                             "the same modules on every process (give every sequence of that source an image, or "
                             "train it without --fsdp)")
    losses = accumulate_gradients(
        model, batches, weights, global_counts=global_counts, world_size=world,
        backward=accelerator.backward, no_sync=lambda: accelerator.no_sync(model), autocast=accelerator.autocast)
    grad_norm = float(accelerator.clip_grad_norm_(trained, grad_clip if grad_clip > 0 else float("inf")))
    sums = torch.tensor([losses[n].sum_nll for n in names], dtype=torch.float64, device=device)
    sums = accelerator.reduce(sums, reduction="sum") if world > 1 else sums
    per_source = {n: float(sums[i]) / max(global_counts[n], 1) for i, n in enumerate(names)}
    total = sum(weights[n] * per_source[n] for n in names)
    finite = math.isfinite(total) and math.isfinite(grad_norm)
    if finite:
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return StepResult(per_source, total, grad_norm, finite, sum(token_counts.values()))
