"""Fully sharded data parallel training of stage 1 with FSDP2 (``torch.distributed.fsdp.fully_shard``; Zhao et
al., "PyTorch FSDP", arXiv 2304.11277): ``contrastive-encoder train --fsdp``.

The dual encoder (arXiv 2204.14198, B.1.3) is sharded over all processes (a 1-D device mesh), one FSDP group per
module that runs as a unit: each NFNet stage, the NFNet trunk's stem and final convolution, each layer of the
BERT-family text encoder, its embeddings, and the root (the two projections). Parameters keep fp32 master
weights; ``--precision bf16`` all-gathers and computes in bf16 and reduces gradients in fp32
(``shared.fsdp.mixed_precision_policy``). The learnable temperature is a scalar, which FSDP2 cannot shard: it
stays replicated, its gradient averaged over the processes as DDP would (``average_replicated_grads``).

The contrastive loss is unchanged: each process's embeddings are all-gathered with their gradients
(``loss.gather_features``), so every process scores its pairs against the global batch. The towers are also
called on their own - by zero-shot evaluation (``encode_image``, ``encode_captions``) and by the cache of a
frozen text encoder - and under FSDP each such call is a collective: every process makes it, with the same
inputs (evaluation) or with the union of every process's captions (the cache, ``train._PooledTextCache``).

Checkpoints are sharded (``torch.distributed.checkpoint``, the suite's layout: ``shared.sharded_checkpoint``)
and resume with another number of processes.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn

from .model import DualEncoder
from .shared.checkpoint import MODEL_DIR, RNG_FILE, STATE_FILE, checkpoint_dir, write_training_state
from .shared.fsdp import (
    check_shardable,
    ensure_process_group,
    full_norm,
    local_tensor,
    mixed_precision_policy,
)
from .shared.sharded_checkpoint import (
    DCP_DIR,
    barrier,
    check_sharded_checkpoint,
    gathered_rng_states,
    gathered_state_dict,
    is_sharded_checkpoint,
    read_shards,
    restore_rank_rng,
    set_sharded_state,
    sharded_save_dir,
    sharded_state,
)

__all__ = ["adaptive_clip_grad_sharded", "average_replicated_grads", "check_resume_layout", "fsdp_groups",
           "load_sharded_checkpoint", "save_gathered", "save_sharded_checkpoint", "shard_dual_encoder",
           "split_replicated"]


def _text_layers(encoder: nn.Module) -> nn.ModuleList | None:
    """The text encoder's list of transformer layers (BERT's ``encoder.layer``, DistilBERT's
    ``transformer.layer``, ...): the ModuleList with one module per ``num_hidden_layers``."""
    n = getattr(getattr(encoder, "config", None), "num_hidden_layers", None)
    lists = [m for m in encoder.modules() if isinstance(m, nn.ModuleList) and len(m) == n]
    return lists[0] if lists else None


def fsdp_groups(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules ``shard_dual_encoder`` makes FSDP groups of, innermost first (the root, ``model``, last).

    Raises:
        ValueError: ``model`` is not a dual encoder of an NFNet-like trunk and a transformer text encoder.
    """
    missing = [a for a in ("vision", "text", "logit_scale") if not hasattr(model, a)]
    if missing:
        raise ValueError(f"--fsdp: cannot shard a {type(model).__name__}: expected a DualEncoder "
                         f"(it has no {', '.join(missing)})")
    trunk = getattr(model.vision, "trunk", None)
    if not isinstance(getattr(trunk, "stages", None), nn.Sequential) or not hasattr(trunk, "forward_features"):
        raise ValueError(f"--fsdp: cannot shard the vision tower's {type(trunk).__name__}: expected an NFNet "
                         "trunk (timm NormFreeNet: forward_features and a Sequential of stages)")
    encoder = getattr(model.text, "encoder", None)
    layers = _text_layers(encoder) if encoder is not None else None
    if layers is None:
        raise ValueError(f"--fsdp: cannot shard the text tower's {type(encoder).__name__}: expected a "
                         "transformer encoder with a list of config.num_hidden_layers layers")
    groups = [(f"vision stage {i}", stage) for i, stage in enumerate(trunk.stages)]
    groups.append(("vision trunk (stem, final conv)", trunk))
    groups += [(f"text layer {i}", layer) for i, layer in enumerate(layers)]
    groups.append(("text encoder (embeddings)", encoder))
    return groups + [("root (projections)", model)]


def shard_dual_encoder(model: DualEncoder, device: torch.device, mixed_precision: str = "no") -> DualEncoder:
    """Shard ``model`` in place with ``fully_shard`` over every process (a 1-D device mesh); returns it.

    Args:
        model: a DualEncoder (on any device: it is moved to ``device``), frozen parts already frozen.
        device: this process's device.
        mixed_precision: "bf16" (bf16 compute, fp32 gradient reduction) or "no".

    Raises:
        ValueError: the model cannot be sharded (named in the message).
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    groups = fsdp_groups(model)
    check_shardable(model, groups, "the DualEncoder")
    ensure_process_group(device)
    model.to(device)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    policy = mixed_precision_policy(mixed_precision)
    scalars = {p for p in model.parameters() if p.ndim == 0}  # the temperature: FSDP2 shards no 0-d tensor
    for _, module in groups:
        # the root stays unsharded between its forward and backward (it is needed again first in backward)
        fully_shard(module, mesh=mesh, mp_policy=policy, reshard_after_forward=module is not model,
                    ignored_params=scalars if module is model else None)
    # the towers run through methods other than forward: the trunk's forward_features (VisionTower) and the
    # DualEncoder's own encode_image / encode_captions (zero-shot evaluation); each gathers its group too
    register_fsdp_forward_method(model.vision.trunk, "forward_features")
    for method in ("encode_image", "encode_captions"):
        register_fsdp_forward_method(model, method)
    # FSDP2 takes the first module to run forward as its root; the text cache calls the text encoder before the
    # DualEncoder ever runs, so the DualEncoder is made the root now
    model._get_fsdp_state()._lazy_init()
    return model


def split_replicated(groups: list[dict]) -> list[dict]:
    """Optimizer groups with the parameters FSDP left replicated (plain tensors) apart from the sharded ones
    (DTensors), same settings: a fused / foreach optimizer step refuses lists that mix the two."""
    out = []
    for group in groups:
        sharded = [p for p in group["params"] if hasattr(p, "to_local")]
        plain = [p for p in group["params"] if not hasattr(p, "to_local")]
        out += [dict(group, params=ps) for ps in (sharded, plain) if ps]
    return out


def average_replicated_grads(params: list[torch.Tensor]) -> None:
    """Average over the processes the gradients of the parameters FSDP does not reduce (the replicated
    temperature), as DDP averages every gradient. Collective."""
    world = dist.get_world_size() if dist.is_initialized() else 1
    for p in params:
        if p.grad is not None and not hasattr(p, "to_local") and world > 1:
            dist.all_reduce(p.grad)
            p.grad.div_(world)


@torch.no_grad()
def adaptive_clip_grad_sharded(params: list[torch.Tensor], clip_factor: float, eps: float = 1e-3) -> None:
    """Adaptive Gradient Clipping (Brock et al., arXiv 2102.06171, section 4.1; timm's ``adaptive_clip_grad``)
    on FSDP2's row shards: each unit (an output row of a matrix or convolution) is clipped by the ratio of its
    gradient's norm to its weight's, computed where the row lives; a 1-D tensor is one unit, its norms reduced
    over the shards (collective)."""
    for p in params:
        if p.grad is None:
            continue
        w, g = local_tensor(p.detach()), local_tensor(p.grad.detach())
        if p.ndim > 1:  # FSDP2 shards dim 0: a process holds whole rows
            dims = tuple(range(1, p.ndim))
            w_norm = torch.linalg.vector_norm(w, dim=dims, keepdim=True)
            g_norm = torch.linalg.vector_norm(g, dim=dims, keepdim=True)
        else:
            w_norm, g_norm = full_norm(p.detach()), full_norm(p.grad.detach())
        max_norm = w_norm.clamp(min=eps) * clip_factor
        g.copy_(torch.where(g_norm < max_norm, g, g * (max_norm / g_norm.clamp(min=1e-6))))


def save_gathered(model: DualEncoder, directory: str | Path, state: dict[str, torch.Tensor],
                  overwrite: bool = False) -> Path:
    """``DualEncoder.save_pretrained`` of a sharded model, with its gathered weights ``state``
    (``gathered_state_dict(model, trained_only=False)`` on the main process): the same folder an unsharded
    model writes."""
    view = SimpleNamespace(export_config=model.export_config, state_dict=lambda: state, tokenizer=model.tokenizer)
    return DualEncoder.save_pretrained(view, directory, overwrite=overwrite)


def check_resume_layout(folder: str | Path, fsdp: bool) -> None:
    """A sharded checkpoint resumes an --fsdp run, a full one (``optimizer.safetensors``) a run without it."""
    if is_sharded_checkpoint(folder) and not fsdp:
        raise ValueError(f"--resume {folder}: a sharded checkpoint of an --fsdp run; resume it with --fsdp")
    if fsdp and not is_sharded_checkpoint(folder):
        raise ValueError(f"--resume {folder}: not a sharded checkpoint (no {DCP_DIR}/.metadata): it was written "
                         "without --fsdp; resume it without --fsdp")


def save_sharded_checkpoint(accelerator, model: DualEncoder, optimizer, scheduler, step: int, out: str | Path,
                            extra: dict[str, Any], trained_names: list[str]) -> Path:
    """Write ``<out>/checkpoints/step_N`` atomically in the sharded layout (``shared.sharded_checkpoint``):
    every process's shards of the trained parameters and AdamW state, and ``model/`` of the gathered weights.
    Collective: call on every process."""
    path = checkpoint_dir(out, step)
    with sharded_save_dir(accelerator, path, by="contrastive-encoder train") as tmp:
        dcp.save(sharded_state(model, optimizer, trained_names), checkpoint_id=str(tmp / DCP_DIR))
        full = gathered_state_dict(model, trained_only=False)  # the frozen text encoder too: model/ is whole
        rng = gathered_rng_states(accelerator)
        if accelerator.is_main_process:
            save_gathered(model, tmp / MODEL_DIR, full)
            state = {"step": step, "scheduler": scheduler.state_dict(), "world_size": accelerator.num_processes,
                     "layout": "dcp", **extra}
            write_training_state(tmp, state, None, rng)
    return path


def load_sharded_checkpoint(folder: str | Path, model: DualEncoder, optimizer, scheduler, accelerator,
                            trained_names: list[str]) -> dict[str, Any]:
    """Load the trained parameters, AdamW state, schedule and (with as many processes as saved it) each
    process's generator from a sharded checkpoint into the sharded model and its optimizer; returns the trainer
    state. Collective."""
    from .shared.readers import load_weights, read_json

    folder = Path(folder)
    state = read_json(folder / STATE_FILE)
    check_sharded_checkpoint(folder, model, trained_names)
    loaded = sharded_state(model, optimizer, trained_names)
    read_shards(folder, loaded)
    set_sharded_state(model, optimizer, loaded)
    scheduler.load_state_dict(state["scheduler"])
    restore_rank_rng(load_weights(folder / RNG_FILE), accelerator, folder)
    barrier()
    return state
