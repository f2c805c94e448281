"""Fully sharded data parallel training of stage 2 with FSDP2 (``torch.distributed.fsdp.fully_shard``; Zhao et
al., "PyTorch FSDP", arXiv 2304.11277), the sharding the paper's ZeRO-1 + Megatron setup (arXiv 2204.14198,
Appendix B.1.2) is replaced by here.

Every part of Flamingo is sharded over the processes, the frozen ones too, one FSDP group per module that runs
as a unit: the vision encoder, the Perceiver Resampler, each GATED XATTN-DENSE block, each frozen decoder layer,
and the root (the LM's embeddings, final norm and head, with the new token rows). Groups of trained parameters
keep fp32 master weights; the frozen parts keep the dtype they were built with (``--frozen-dtype bfloat16``
halves them, as the paper trains). ``--precision bf16`` all-gathers and computes in bf16 and reduce-scatters the
gradients in fp32 (``MixedPrecisionPolicy``), the paper's bf16 activations with fp32 parameters.

FSDP needs every process to run the same modules in the same order in each step (each module call is an
all-gather). Two things could break that, and are handled here: with a feature cache (a cache hit skips the
vision encoder on one process only) the vision encoder joins the root group, gathered once per forward with
the embeddings, instead of having its own; a source's batch with media on some processes and none on others is
refused by ``train_step`` naming the source. Works on CPU processes with gloo as on GPUs with NCCL.

With ``--tensor-parallel`` the groups are sharded over the data-parallel dimension of a 2-D mesh
(``train/mesh.py``) after tensor parallelism split the matrices over the other (``train/tensor_parallel.py``).
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["fsdp_groups", "local_tensor", "mixed_precision_policy", "shard_flamingo"]


def mixed_precision_policy(mixed_precision: str):
    """accelerate's ``mixed_precision`` ("bf16" or "no") as FSDP2's policy: bf16 unsharded parameters (so bf16
    activations) with fp32 gradient reduction, or the parameters' own dtypes."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if mixed_precision == "bf16":
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()


def fsdp_groups(model: nn.Module, feature_cache: bool = False) -> list[tuple[str, nn.Module]]:
    """The modules ``shard_flamingo`` makes FSDP groups of, innermost first (the root, ``model`` itself, last).

    Raises:
        ValueError: ``model`` is not a Flamingo (no resampler, cross-attention blocks or decoder layers to shard).
    """
    from flamingo_core.lm_adapter import find_decoder_layers

    missing = [a for a in ("perceiver", "xattn_layers", "lm", "vision_encoder") if not hasattr(model, a)]
    if missing:
        raise ValueError(f"--fsdp: cannot shard a {type(model).__name__}: expected a Flamingo model "
                         f"(it has no {', '.join(missing)})")
    _, attr, layers = find_decoder_layers(model.lm)
    groups = [(f"xattn_layers.{i}", block) for i, block in enumerate(model.xattn_layers)]
    groups += [(f"decoder layer {i}", layer) for i, layer in enumerate(layers)]
    groups.append(("perceiver", model.perceiver))
    if not feature_cache and any(True for _ in model.vision_encoder.parameters()):
        groups.append(("vision_encoder", model.vision_encoder))
    return groups + [("root (embeddings, head, new token rows)", model)]


def _check_shardable(model: nn.Module, groups: list[tuple[str, nn.Module]]) -> None:
    """One-line errors for what FSDP2 would refuse later with a long trace: a model spread over several devices,
    a module already wrapped for DDP, trained parameters of mixed dtypes in one group."""
    devices = sorted({str(p.device) for p in model.parameters()})
    if len(devices) > 1:
        raise ValueError(f"--fsdp: the model's parameters are on {len(devices)} devices ({', '.join(devices)}); "
                         "FSDP shards a model placed on one device per process (no device_map)")
    if isinstance(model, nn.parallel.DistributedDataParallel) or hasattr(model, "module"):
        raise ValueError("--fsdp: the model is already wrapped for data parallelism; pass the Flamingo itself")
    seen: set[int] = set()
    for name, module in groups:  # innermost first: the root's own parameters are those no inner group holds
        own = [p for p in module.parameters() if id(p) not in seen]
        seen.update(id(p) for p in module.parameters())
        dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in own if p.requires_grad})
        if len(dtypes) > 1:
            raise ValueError(f"--fsdp: cannot shard {name}: its trained parameters mix {' and '.join(dtypes)} "
                             "(an FSDP group reduces its gradients in one dtype); keep the trained parts in float32")


def ensure_process_group(device: torch.device) -> None:
    """A one-process run (no torchrun) still needs a process group for the device mesh: one of size 1."""
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)


def shard_flamingo(model: nn.Module, device: torch.device, mixed_precision: str = "no",
                   feature_cache: bool = False, mesh=None) -> nn.Module:
    """Shard ``model`` in place with ``fully_shard`` over all processes (a 1-D device mesh) or over ``mesh``;
    returns it.

    Args:
        model: a Flamingo on ``device`` (or on the CPU: it is moved), frozen parts in their final dtype.
        device: this process's device.
        mixed_precision: "bf16" (bf16 compute, fp32 gradient reduction) or "no".
        feature_cache: the vision encoder's outputs will come from a feature cache: it joins the root group.
        mesh: the data-parallel dimension of a 2-D mesh (``train/mesh.py``) whose tensor-parallel dimension
            already split the model (``train/tensor_parallel.py``); default: every process.

    Raises:
        ValueError: the model cannot be sharded (named in the message).
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    groups = fsdp_groups(model, feature_cache)
    _check_shardable(model, groups)
    ensure_process_group(device)
    model.to(device)
    mesh = mesh if mesh is not None else init_device_mesh(device.type, (dist.get_world_size(),))
    policy = mixed_precision_policy(mixed_precision)
    for _, module in groups:
        # the root stays unsharded between its forward and backward (it is needed again first in backward)
        fully_shard(module, mesh=mesh, mp_policy=policy, reshard_after_forward=module is not model,
                    shard_placement_fn=_placement)
    for block in model.xattn_layers:
        # the media keys/values are computed by a call other than forward (FlamingoDecoderLayer): it gathers too
        register_fsdp_forward_method(block, "media_kv")
    # media_kv returns (B, H, N*R, dh) views that only attention reads (no in-place op could drop FSDP's hook)
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module \(FSDPGatedCrossAttentionBlock\) returned a "
                            "view tensor")
    model.fused_head_loss = False  # the head's gradient by autograd: an in-forward one would bypass the shards
    return model


def _placement(param: nn.Parameter):
    """FSDP's shard dimension of a parameter: rows (the default) unless tensor parallelism split the rows in
    strides (a fused [keys; values] projection, ``train/tensor_parallel.py``); those are sharded by column, since
    FSDP's row shards of strided TP rows do not compose into the tensor's global layout."""
    from torch.distributed.tensor import Shard
    from torch.distributed.tensor.placement_types import _StridedShard

    strided = any(isinstance(p, _StridedShard) for p in getattr(param, "placements", ()))
    return Shard(1) if strided and param.ndim > 1 else None


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    """This process's shard of a DTensor (the tensor itself otherwise)."""
    return t.to_local() if hasattr(t, "to_local") else t
