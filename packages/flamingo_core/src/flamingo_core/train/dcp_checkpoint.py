"""Sharded stage-2 checkpoints of an FSDP2 run (``train/fsdp.py``) through ``torch.distributed.checkpoint``.

A checkpoint is ``<out>/checkpoints/step_N/`` as in every run of the suite (``shared/checkpoint.py``), with the
trained parameters and the AdamW state in ``distributed/`` instead of ``optimizer.safetensors``::

    distributed/        DCP files: every process writes its own shards of "model" (the trained parameters, by
                        name) and "optimizer" (AdamW moments and steps, by parameter name)
    model/              Flamingo.save_pretrained of the gathered trained weights: loadable on its own
    rng.safetensors     each process's torch generator states: "cpu" (processes, n), "cuda" (processes, m)
    state.json          step, scheduler, data positions, skip counts, losses, config, world size

DCP stores each tensor with its global shape and the shards' offsets, so a run resumes with another number of
processes (2 -> 1, 1 -> 2): each process reads the parts of the shards it now owns. The folder is built in a
temporary sibling and renamed into place once every process's shards are written (``atomic_save_dir``): a
process killed during a save leaves the previous checkpoint the newest, whole and loadable. DCP's ``.metadata``
is a pickle: it is read with an unpickler that admits only DCP's metadata classes (``_SafeReader``), the tensor
files as raw bytes or by ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import pickle
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp

from contrastive_encoder.shared.checkpoint import MODEL_DIR, checkpoint_dir, prune_checkpoints

__all__ = ["DCP_DIR", "check_resume_layout", "check_sharded_checkpoint", "gathered_trained_weights",
           "is_sharded_checkpoint", "load_sharded_checkpoint", "save_sharded_checkpoint"]

DCP_DIR = "distributed"
RNG_FILE = "rng.safetensors"
STATE_FILE = "state.json"


# the globals a DCP .metadata pickle names (torch 2.14): its dataclasses, torch.Size, dtypes, layouts, paths
_METADATA_CLASSES = {
    "torch.distributed.checkpoint.metadata": {"BytesStorageMetadata", "ChunkStorageMetadata", "Metadata",
                                              "MetadataIndex", "StorageMeta", "TensorProperties",
                                              "TensorStorageMetadata", "_MEM_FORMAT_ENCODING"},
    "torch.distributed.checkpoint.filesystem": {"_StorageInfo"},
    "torch.serialization": {"_get_layout"},
    "torch": {"Size"},
    "pathlib": {"PosixPath", "PurePosixPath", "WindowsPath", "PureWindowsPath"},
    "collections": {"OrderedDict"},
}


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if name in _METADATA_CLASSES.get(module, ()) or (module == "torch" and isinstance(getattr(
                torch, name, None), torch.dtype)):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a checkpoint's metadata")


class _SafeReader(dcp.FileSystemReader):
    """DCP's file reader with the metadata read by ``_MetadataUnpickler`` instead of ``pickle.load``."""

    def read_metadata(self, *args: Any, **kwargs: Any):
        from torch.distributed.checkpoint.metadata import StorageMeta

        with self.fs.create_stream(self._get_metadata_path(kwargs.get("rank")), "rb") as f:
            metadata = _MetadataUnpickler(f).load()
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


def is_sharded_checkpoint(folder: str | Path) -> bool:
    return (Path(folder) / DCP_DIR / ".metadata").is_file()


def check_resume_layout(folder: str | Path, fsdp: bool) -> None:
    """A sharded checkpoint resumes an --fsdp or --tensor-parallel run (``fsdp``: any sharded run), a full one
    (``optimizer.safetensors``) a DDP run."""
    if is_sharded_checkpoint(folder) and not fsdp:
        raise ValueError(f"--resume {folder}: a sharded checkpoint of an --fsdp run; resume it with --fsdp (or "
                         "--tensor-parallel N, the sharded layouts resume one another)")
    if fsdp and not is_sharded_checkpoint(folder):
        raise ValueError(f"--resume {folder}: not a sharded checkpoint (no {DCP_DIR}/.metadata): it was written "
                         "without --fsdp or --tensor-parallel; resume it without them")


def _options(full: bool = False):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    # trained parameters only: the frozen LM and vision encoder are rebuilt from their names, not saved
    return StateDictOptions(full_state_dict=full, cpu_offload=full, ignore_frozen_params=True, strict=False)


def _state(model, optimizer, trained_names: list[str]) -> dict[str, Any]:
    """What DCP saves and loads: the sharded trained parameters and the optimizer state, keyed by name."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer, options=_options())
    names = set(trained_names)
    return {"model": {k: v for k, v in model_sd.items() if k in names}, "optimizer": optim_sd}


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
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    full = get_model_state_dict(model, options=_options(full=True))
    return {n: full[n] for n in trained_names if n in full}


def _rng_states(accelerator) -> dict[str, torch.Tensor]:
    """Every process's generator states, stacked (collective): ("cpu" (processes, n), "cuda" (processes, m))."""
    states = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and accelerator.device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state()
    if accelerator.num_processes == 1:
        return {k: v[None] for k, v in states.items()}
    return {k: accelerator.gather(v[None].to(accelerator.device)).cpu() for k, v in states.items()}


def _broadcast(value, accelerator):
    if accelerator.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    box = [value]
    broadcast_object_list(box, from_process=0)  # between this run's own processes
    return box[0]


def save_sharded_checkpoint(accelerator, model, optimizer, scheduler, step: int, cfg, extra: dict,
                            trained_names: list[str]) -> Path:
    """Write ``<out>/checkpoints/step_N`` (layout in the module docstring), atomically. Collective: call on
    every process."""
    import json

    from safetensors.torch import save_file

    from contrastive_encoder.shared.outputs import atomic_save_dir

    path = checkpoint_dir(cfg.out, step)
    main = accelerator.is_main_process
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(atomic_save_dir(path, overwrite=True, by="flamingo train")) if main else None
        tmp = Path(_broadcast(str(tmp) if main else None, accelerator))
        shards = _state(model, optimizer, trained_names)
        _contiguous_shards(shards)
        dcp.save(shards, checkpoint_id=str(tmp / DCP_DIR))  # every process
        weights = gathered_trained_weights(model, trained_names)
        rng = _rng_states(accelerator)
        if main:
            model.save_pretrained(tmp / MODEL_DIR, weights=weights)
            save_file({k: v.contiguous() for k, v in rng.items()}, str(tmp / RNG_FILE))
            state = {"step": step, "scheduler": {k: v for k, v in scheduler.state_dict().items()
                                                 if k != "lr_lambdas"},
                     "world_size": accelerator.num_processes, "layout": "dcp", "config": asdict(cfg), **extra}
            (tmp / STATE_FILE).write_text(json.dumps(state, indent=2, default=str) + "\n")
        # leaving the block renames the folder into place (main process): after every process's shards are on disk
    if main:
        prune_checkpoints(cfg.out, cfg.keep_checkpoints)
    accelerator.wait_for_everyone()
    return path


def check_sharded_checkpoint(folder: str | Path, model, trained_names: list[str]) -> None:
    """Refuse, in one line naming the folder, a sharded checkpoint whose trained parameters are not this model's
    (missing or extra names, other shapes). Reads only DCP's metadata; call before loading."""
    folder = Path(folder)
    try:
        meta = _SafeReader(str(folder / DCP_DIR)).read_metadata().state_dict_metadata
    except Exception as e:  # a missing, truncated or foreign .metadata
        raise ValueError(f"{folder / DCP_DIR}: not a readable sharded checkpoint ({type(e).__name__}: {e})") from e
    saved = {k.removeprefix("model."): tuple(v.size) for k, v in meta.items()
             if k.startswith("model.") and hasattr(v, "size")}
    params = dict(model.named_parameters())
    expected = {n: tuple(params[n].shape) for n in trained_names}
    missing, unexpected = sorted(set(expected) - set(saved)), sorted(set(saved) - set(expected))
    reshaped = sorted(n for n in set(saved) & set(expected) if saved[n] != expected[n])
    if missing or unexpected or reshaped:
        detail = [f"{label} {names[:3]}" for label, names in (("missing", missing), ("unexpected", unexpected))
                  if names]
        detail += [f"{n} is {saved[n]}, the model's {expected[n]}" for n in reshaped[:3]]
        raise ValueError(f"{folder}: checkpoint does not match the model ({'; '.join(detail)})")


def load_sharded_checkpoint(folder: str | Path, model, optimizer, scheduler, accelerator,
                            trained_names: list[str]) -> dict[str, Any]:
    """Load the trained parameters, AdamW state, schedule and (with as many processes as saved it) each
    process's RNG from a sharded checkpoint into a sharded model and its optimizer. Collective. Returns
    state.json."""
    from torch.distributed.checkpoint.state_dict import set_state_dict

    from contrastive_encoder.shared.readers import load_weights, read_json

    folder = Path(folder)
    state = read_json(folder / STATE_FILE)
    check_sharded_checkpoint(folder, model, trained_names)
    loaded = _state(model, optimizer, trained_names)
    layouts = _contiguous_shards(loaded)
    dcp.load(loaded, storage_reader=_SafeReader(str(folder / DCP_DIR)))  # each process reads what its shards cover
    _restore_shards(loaded, layouts)
    set_state_dict(model, optimizer, model_state_dict=loaded["model"], optim_state_dict=loaded["optimizer"],
                   options=_options())
    scheduler.load_state_dict(dict(state["scheduler"], lr_lambdas=[None] * len(optimizer.param_groups)))
    rng = load_weights(folder / RNG_FILE)
    world, rank = accelerator.num_processes, accelerator.process_index
    if rng["cpu"].shape[0] == world:
        torch.set_rng_state(rng["cpu"][rank].contiguous())
        if "cuda" in rng and accelerator.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"][rank].contiguous())
    else:  # another process count: the data order does not depend on it; sampling draws from the run's seed
        accelerator.print(f"note: {folder} was saved by {rng['cpu'].shape[0]} process(es), this run has {world}: "
                          "each process keeps the generator its seed gave")
    if dist.is_initialized():
        dist.barrier()
    return state
