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

# the primitives stage 1 shares (contrastive_encoder.shared.fsdp); mesh.py and loop.py import them from here
from contrastive_encoder.shared.fsdp import (
    check_shardable,
    ensure_process_group,
    local_tensor,
    mixed_precision_policy,
)

__all__ = ["fsdp_groups", "local_tensor", "mixed_precision_policy", "shard_flamingo"]


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
    check_shardable(model, groups, "the Flamingo")
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
