"""Sharded stage-2 checkpoints of an FSDP2 run (``train/fsdp.py``) through ``torch.distributed.checkpoint``.

The layout, the atomic save and the safe metadata reader are the suite's (``contrastive_encoder.shared.
sharded_checkpoint``): ``<out>/checkpoints/step_N/`` with ``distributed/`` (every process's shards of the trained
parameters and the AdamW state, by name), ``model/`` (``Flamingo.save_pretrained`` of the gathered trained
weights: loadable on its own), ``rng.safetensors`` (each process's generators) and ``state.json`` (step,
scheduler, data positions, skip counts, losses, config, world size). A run resumes with another number of
processes (2 -> 1, 1 -> 2); a process killed during a save leaves the previous checkpoint the newest. What is
stage 2's own: tensor parallelism's strided shards are made contiguous for DCP and put back after loading.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp

from contrastive_encoder.shared.checkpoint import (
    MODEL_DIR,
    checkpoint_dir,
    prune_checkpoints,
    write_training_state,
)
from contrastive_encoder.shared.sharded_checkpoint import (
    DCP_DIR,
    SafeReader,
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

__all__ = ["DCP_DIR", "check_resume_layout", "check_sharded_checkpoint", "gathered_trained_weights",
           "is_sharded_checkpoint", "load_sharded_checkpoint", "save_sharded_checkpoint"]

_SafeReader = SafeReader  # the name the stage-2 tests read DCP metadata with


def check_resume_layout(folder: str | Path, fsdp: bool) -> None:
    """A sharded checkpoint resumes an --fsdp or --tensor-parallel run (``fsdp``: any sharded run), a full one
    (``optimizer.safetensors``) a DDP run."""
    if is_sharded_checkpoint(folder) and not fsdp:
        raise ValueError(f"--resume {folder}: a sharded checkpoint of an --fsdp run; resume it with --fsdp (or "
                         "--tensor-parallel N, the sharded layouts resume one another)")
    if fsdp and not is_sharded_checkpoint(folder):
        raise ValueError(f"--resume {folder}: not a sharded checkpoint (no {DCP_DIR}/.metadata): it was written "
                         "without --fsdp or --tensor-parallel; resume it without them")


def _strided(placements) -> bool:
    from torch.distributed.tensor.placement_types import _StridedShard

    return any(isinstance(p, _StridedShard) for p in placements)


def _contiguous_shards(state: dict, layouts: dict | None = None, path: str = "") -> dict[str, tuple]:
    """Turn in place every DTensor held in strided shards (tensor parallel's [K_r; V_r] rows of a fused keys /
    values projection, ``train/tensor_parallel.py``) into contiguous row blocks, which DCP's planner requires
    (it refuses chunks that are not one block); returns their original placements by path, for
    ``_restore_shards``."""
    from torch.distributed.tensor import Shard
    from torch.distributed.tensor.placement_types import _StridedShard

    layouts = {} if layouts is None else layouts
    for key, value in state.items():
        where = f"{path}/{key}"
        if isinstance(value, dict):
            _contiguous_shards(value, layouts, where)
        elif hasattr(value, "placements") and _strided(value.placements):
            layouts[where] = value.placements
            state[key] = value.redistribute(placements=[Shard(p.dim) if isinstance(p, _StridedShard) else p
                                                        for p in value.placements])
    return layouts


def _restore_shards(state: dict, layouts: dict[str, tuple], path: str = "") -> None:
    """Undo ``_contiguous_shards`` in place: each listed DTensor back in its original placements."""
    for key, value in state.items():
        where = f"{path}/{key}"
        if isinstance(value, dict):
            _restore_shards(value, layouts, where)
        elif where in layouts:
            state[key] = value.redistribute(placements=layouts[where])


def gathered_trained_weights(model, trained_names: list[str]) -> dict[str, torch.Tensor]:
    """The full trained weights on the CPU of the main process (empty elsewhere). Collective."""
    full = gathered_state_dict(model)
    return {n: full[n] for n in trained_names if n in full}


def save_sharded_checkpoint(accelerator, model, optimizer, scheduler, step: int, cfg, extra: dict,
                            trained_names: list[str]) -> Path:
    """Write ``<out>/checkpoints/step_N`` (layout in the module docstring), atomically. Collective: call on
    every process."""
    path = checkpoint_dir(cfg.out, step)
    main = accelerator.is_main_process
    with sharded_save_dir(accelerator, path, by="flamingo train") as tmp:
        shards = sharded_state(model, optimizer, trained_names)
        _contiguous_shards(shards)
        dcp.save(shards, checkpoint_id=str(tmp / DCP_DIR))  # every process
        weights = gathered_trained_weights(model, trained_names)
        rng = gathered_rng_states(accelerator)
        if main:
            model.save_pretrained(tmp / MODEL_DIR, weights=weights)
            state = {"step": step, "scheduler": {k: v for k, v in scheduler.state_dict().items()
                                                 if k != "lr_lambdas"},
                     "world_size": accelerator.num_processes, "layout": "dcp", "config": asdict(cfg), **extra}
            write_training_state(tmp, state, None, rng)
        # leaving the block renames the folder into place (main process): after every process's shards are on disk
    if main:
        prune_checkpoints(cfg.out, cfg.keep_checkpoints)
    accelerator.wait_for_everyone()
    return path


def load_sharded_checkpoint(folder: str | Path, model, optimizer, scheduler, accelerator,
                            trained_names: list[str]) -> dict[str, Any]:
    """Load the trained parameters, AdamW state, schedule and (with as many processes as saved it) each
    process's RNG from a sharded checkpoint into a sharded model and its optimizer. Collective. Returns
    state.json."""
    from contrastive_encoder.shared.checkpoint import RNG_FILE, STATE_FILE
    from contrastive_encoder.shared.readers import load_weights, read_json

    folder = Path(folder)
    state = read_json(folder / STATE_FILE)
    check_sharded_checkpoint(folder, model, trained_names)
    loaded = sharded_state(model, optimizer, trained_names)
    layouts = _contiguous_shards(loaded)
    read_shards(folder, loaded)  # each process reads what its shards cover
    _restore_shards(loaded, layouts)
    set_sharded_state(model, optimizer, loaded)
    scheduler.load_state_dict(dict(state["scheduler"], lr_lambdas=[None] * len(optimizer.param_groups)))
    restore_rank_rng(load_weights(folder / RNG_FILE), accelerator, folder)
    barrier()
    return state
