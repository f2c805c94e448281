"""ZeRO stage 1 (optimizer-state sharding, Rajbhandari et al. 2020, arXiv 1910.02054) for the DDP trainer.

Each process keeps AdamW moments only for its shard of the trained parameters, steps that shard, and
broadcasts the updated values; gradients stay all-reduced by DDP. ``torch.distributed.optim.
ZeroRedundancyOptimizer`` does the work and runs on CPU with gloo. The helpers here choose it when there is
more than one process, and give every optimizer the same checkpoint format: the full (consolidated) AdamW
state dict, so a ZeRO run resumes with a different number of processes, or without ZeRO.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.optim import ZeroRedundancyOptimizer

__all__ = ["build_adamw", "is_zero", "load_optimizer_state", "optimizer_state_dict"]


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def build_adamw(param_groups: list[dict[str, Any]], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                eps: float = 1e-8, zero: bool = True) -> torch.optim.Optimizer:
    """AdamW over ``param_groups``; sharded with ZeRO-1 when ``zero`` and more than one process is running.

    The fused kernel (one kernel over all trained tensors instead of a Python loop per tensor) is used when every
    parameter is a floating-point CPU or CUDA tensor.
    """
    groups = [g for g in param_groups if g["params"]]
    params = [p for g in groups for p in g["params"]]
    fused = bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    kwargs = {"lr": lr, "betas": betas, "eps": eps, "fused": fused or None}
    if zero and _distributed():
        return ZeroRedundancyOptimizer(groups, optimizer_class=torch.optim.AdamW, **kwargs)
    return torch.optim.AdamW(groups, **kwargs)


def is_zero(optimizer: Any) -> bool:
    return isinstance(getattr(optimizer, "optimizer", optimizer), ZeroRedundancyOptimizer)


def optimizer_state_dict(optimizer: Any) -> dict[str, Any] | None:
    """The full optimizer state. Collective for ZeRO (call on every process); None on non-zero ranks."""
    opt = getattr(optimizer, "optimizer", optimizer)  # unwrap accelerate's AcceleratedOptimizer
    if isinstance(opt, ZeroRedundancyOptimizer):
        opt.consolidate_state_dict(to=0)
        return opt.state_dict() if dist.get_rank() == 0 else None
    return opt.state_dict()


def load_optimizer_state(optimizer: Any, state: dict[str, Any]) -> None:
    """Load a full state dict (from ``optimizer_state_dict``) into a plain or ZeRO optimizer."""
    opt = getattr(optimizer, "optimizer", optimizer)
    opt.load_state_dict(copy.deepcopy(state))  # ZeRO's loader edits the dict it is given
    for group in opt.param_groups:  # moments saved for 0-dim gates (before they were (1,)) take the new shape
        for p in group["params"]:
            for key, value in opt.state.get(p, {}).items():
                if key != "step" and torch.is_tensor(value) and value.shape != p.shape and value.numel() == p.numel():
                    opt.state[p][key] = value.reshape(p.shape)
