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


@dataclass
class StepResult:
    losses: dict[str, float]  # per-source mean NLL over the global batch
    loss: float  # sum_m lambda_m * loss_m (round-robin: the one source's loss)
    grad_norm: float  # before clipping
    finite: bool  # False: the update was NOT applied
    tokens: int  # label tokens in the global batch


def train_step(model, optimizer, batches: dict[str, dict[str, Any]], weights: dict[str, float], *,
               accelerator=None, scheduler=None, grad_clip: float = 1.0, trained: list | None = None,
               strategy: str = "accumulation", fsdp: bool = False) -> StepResult:
    """One optimizer step of the mixture: accumulate ``lambda_m * loss_m`` over the sources' batches, clip,
    and step, unless the loss or gradient norm is non-finite (then gradients are dropped and ``finite`` is False).

    With ``strategy="round-robin"`` ``batches`` holds the one source whose turn it is (``DatasetMixture``) and
    its loss gets weight 1: the weights already chose how often that source's turn comes (``SourceSchedule``).

    ``fsdp``: the model is sharded with FSDP2 (``train/fsdp.py``), whose module calls are collectives: a source's
    batch that has media on some processes and none on others (which would run the cross-attention on some only)
    is refused on every process, naming it.

    Collective under DDP (every process must call it). Used by ``train`` and by
    ``benchmarks/bench_train_flamingo.py``.
    """
    from accelerate import Accelerator

    accelerator = accelerator or Accelerator(cpu=not torch.cuda.is_available())
    world = accelerator.num_processes
    device = accelerator.device
    names = [n for n in batches if weights.get(n, 0.0) > 0]
    if strategy == "round-robin" and len(names) != 1:
        raise ValueError(f"a round-robin step trains on one source, got batches of {names}")
    weights = SourceSchedule(weights, strategy).loss_weights(names)  # the factor on each source's loss
    trained = trained if trained is not None else [p for p in model.parameters() if p.requires_grad]
    local = [float((batches[n]["labels"][:, 1:] != IGNORE_INDEX).sum()) for n in names]
    with_media = [float(batches[n].get("media") is not None) for n in names] if fsdp else []
    agreed = torch.tensor(local + with_media, dtype=torch.float64, device=device)
    agreed = accelerator.reduce(agreed, reduction="sum") if world > 1 else agreed
    global_counts = {n: int(agreed[i]) for i, n in enumerate(names)}
    for n, k in zip(names, agreed[len(names):].tolist()):
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
    return StepResult(per_source, total, grad_norm, finite, sum(global_counts.values()))
