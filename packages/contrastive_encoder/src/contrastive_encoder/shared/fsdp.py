"""What both stages' FSDP2 training (``torch.distributed.fsdp.fully_shard``; Zhao et al., "PyTorch FSDP", arXiv
2304.11277) needs around ``fully_shard`` itself: the bf16 policy, a process group for a lone process, the checks
that turn FSDP's late failures into one line, and gradient clipping over parameters of which some are sharded
(DTensors) and some replicated.

Stage 1 shards the dual encoder (``contrastive_encoder.fsdp``), stage 2 Flamingo (``flamingo_core.train.fsdp``).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["check_shardable", "clip_grad_norm", "ensure_process_group", "full_norm", "local_tensor",
           "mixed_precision_policy"]


def mixed_precision_policy(mixed_precision: str):
    """accelerate's ``mixed_precision`` ("bf16" or "no") as FSDP2's policy: bf16 unsharded parameters (so bf16
    activations) with fp32 gradient reduction, or the parameters' own dtypes."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if mixed_precision == "bf16":
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()


def ensure_process_group(device: torch.device) -> None:
    """A one-process run (no torchrun) still needs a process group for the device mesh: one of size 1."""
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)


def check_shardable(model: nn.Module, groups: list[tuple[str, nn.Module]], what: str) -> None:
    """One-line errors for what FSDP2 would refuse later with a long trace: a model spread over several devices,
    a module already wrapped for DDP, trained parameters of mixed dtypes in one group.

    Args:
        groups: the FSDP groups, innermost first (the root's own parameters are those no inner group holds).
        what: the model the stage shards, for the message ("the Flamingo", "the DualEncoder").
    """
    devices = sorted({str(p.device) for p in model.parameters()})
    if len(devices) > 1:
        raise ValueError(f"--fsdp: the model's parameters are on {len(devices)} devices ({', '.join(devices)}); "
                         "FSDP shards a model placed on one device per process (no device_map)")
    if isinstance(model, nn.parallel.DistributedDataParallel) or hasattr(model, "module"):
        raise ValueError(f"--fsdp: the model is already wrapped for data parallelism; pass {what} itself")
    seen: set[int] = set()
    for name, module in groups:
        own = [p for p in module.parameters() if id(p) not in seen]
        seen.update(id(p) for p in module.parameters())
        dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in own if p.requires_grad})
        if len(dtypes) > 1:
            raise ValueError(f"--fsdp: cannot shard {name}: its trained parameters mix {' and '.join(dtypes)} "
                             "(an FSDP group reduces its gradients in one dtype); keep the trained parts in float32")


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    """This process's shard of a DTensor (the tensor itself otherwise)."""
    return t.to_local() if hasattr(t, "to_local") else t


def full_norm(t: torch.Tensor, **kwargs) -> torch.Tensor:
    """``torch.linalg.vector_norm`` of a whole tensor, a DTensor's reduced over its mesh (collective)."""
    norm = torch.linalg.vector_norm(t, **kwargs)
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


def clip_grad_norm(parameters: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_`` for parameters that mix whole tensors and DTensors, of one mesh or of
    several (FSDP2 with parameters it leaves replicated, tensor parallel): each DTensor gradient's norm is reduced
    over its own mesh, a replicated one counts once. Returns the total norm before clipping (collective over
    every mesh the gradients live on)."""
    squares = [full_norm(p.grad if hasattr(p.grad, "to_local") else p.grad.float()).float().pow(2)
               for p in parameters if p.grad is not None]
    total = torch.stack(squares).sum().sqrt() if squares else torch.zeros(())
    coef = float(max_norm) / (float(total) + 1e-6)
    if coef < 1.0 and math.isfinite(float(total)):
        for p in parameters:
            if p.grad is not None:
                p.grad.mul_(coef)
    return total
