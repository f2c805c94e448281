"""Sharded checkpoints of FSDP2 runs through ``torch.distributed.checkpoint`` (DCP), the parts both stages share.

A sharded checkpoint is ``<out>/checkpoints/step_N/`` as every checkpoint of the suite (``checkpoint.py``), with
the trained parameters and the optimizer state in ``distributed/`` instead of ``optimizer.safetensors``::

    distributed/        DCP files: every process writes its own shards of "model" (the trained parameters, by
                        name) and "optimizer" (the optimizer's moments and steps, by parameter name)
    model/              the stage's save_pretrained folder of the gathered weights: loadable on its own
    rng.safetensors     each process's torch generator states: "cpu" (processes, n), "cuda" (processes, m)
    state.json          step, scheduler, data position, world size, "layout": "dcp", the stage's own fields

DCP stores each tensor with its global shape and the shards' offsets, so a run resumes with another number of
processes: each process reads the parts of the shards it now owns. The folder is built in a temporary sibling and
renamed into place once every process's shards are written (``sharded_save_dir``): a process killed during a
save leaves the previous checkpoint the newest. DCP's ``.metadata`` is a pickle: it is read with an unpickler that
admits only DCP's metadata classes (``SafeReader``); the tensor files are raw bytes or read by
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp

__all__ = ["DCP_DIR", "SafeReader", "barrier", "broadcast_from_main", "check_sharded_checkpoint", "gathered_rng_states",
           "gathered_state_dict", "is_sharded_checkpoint", "read_shards", "restore_rank_rng", "set_sharded_state",
           "sharded_save_dir", "sharded_state"]

DCP_DIR = "distributed"

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


class SafeReader(dcp.FileSystemReader):
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


def _options(full: bool = False, trained_only: bool = True):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    # trained parameters only: frozen parts are rebuilt from their names, not saved
    return StateDictOptions(full_state_dict=full, cpu_offload=full, ignore_frozen_params=trained_only,
                            strict=False)


def sharded_state(model, optimizer, trained_names: list[str]) -> dict[str, Any]:
    """What DCP saves and loads: the sharded trained parameters and the optimizer state, keyed by name."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer, options=_options())
    names = set(trained_names)
    return {"model": {k: v for k, v in model_sd.items() if k in names}, "optimizer": optim_sd}


def set_sharded_state(model, optimizer, loaded: dict[str, Any]) -> None:
    """Put what ``read_shards`` filled (``sharded_state``'s layout) into the sharded model and its optimizer."""
    from torch.distributed.checkpoint.state_dict import set_state_dict

    set_state_dict(model, optimizer, model_state_dict=loaded["model"], optim_state_dict=loaded["optimizer"],
                   options=_options())


def read_shards(folder: str | Path, state: dict[str, Any]) -> None:
    """Fill ``state`` (``sharded_state``'s layout) in place from ``<folder>/distributed``: each process reads what
    its shards cover. Collective."""
    dcp.load(state, storage_reader=SafeReader(str(Path(folder) / DCP_DIR)))


def gathered_state_dict(model, trained_only: bool = True) -> dict[str, torch.Tensor]:
    """The full (unsharded) state dict on the CPU of the main process, empty elsewhere: the trained parameters,
    or with ``trained_only=False`` every parameter and buffer. Collective."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_options(full=True, trained_only=trained_only))


def gathered_rng_states(accelerator) -> dict[str, torch.Tensor]:
    """Every process's generator states, stacked (collective): ("cpu" (processes, n), "cuda" (processes, m))."""
    states = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and accelerator.device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state()
    if accelerator.num_processes == 1:
        return {k: v[None] for k, v in states.items()}
    return {k: accelerator.gather(v[None].to(accelerator.device)).cpu() for k, v in states.items()}


def restore_rank_rng(rng: dict[str, torch.Tensor], accelerator, folder: str | Path) -> None:
    """This process's generators from ``gathered_rng_states``'s rows, when the run has as many processes as the
    one that saved them (with another number each keeps the generator its seed gave, and says so)."""
    world, rank = accelerator.num_processes, accelerator.process_index
    if rng["cpu"].shape[0] == world:
        torch.set_rng_state(rng["cpu"][rank].contiguous())
        if "cuda" in rng and accelerator.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"][rank].contiguous())
    else:  # the data order does not depend on it; sampling draws from the run's seed
        accelerator.print(f"note: {folder} was saved by {rng['cpu'].shape[0]} process(es), this run has {world}: "
                          "each process keeps the generator its seed gave")


def broadcast_from_main(value, accelerator):
    """The main process's ``value`` on every process (a picklable object sent between this run's own
    processes)."""
    if accelerator.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    box = [value]
    broadcast_object_list(box, from_process=0)
    return box[0]


@contextlib.contextmanager
def sharded_save_dir(accelerator, path: str | Path, by: str) -> Iterator[Path]:
    """The temporary folder of an atomic checkpoint save, the same path on every process; on leaving the block
    the main process renames it to ``path``. Collective: every process enters it, and the block must end with a
    collective that returns once every process's files are written (``dcp.save`` does)."""
    from .outputs import atomic_save_dir

    main = accelerator.is_main_process
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(atomic_save_dir(path, overwrite=True, by=by)) if main else None
        yield Path(broadcast_from_main(str(tmp) if main else None, accelerator))


def check_sharded_checkpoint(folder: str | Path, model, trained_names: list[str]) -> None:
    """Refuse, in one line naming the folder, a sharded checkpoint whose trained parameters are not this model's
    (missing or extra names, other shapes). Reads only DCP's metadata; call before loading."""
    folder = Path(folder)
    try:
        meta = SafeReader(str(folder / DCP_DIR)).read_metadata().state_dict_metadata
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


def barrier() -> None:
    """Wait for every process (none to wait for without a process group)."""
    if dist.is_initialized():
        dist.barrier()
