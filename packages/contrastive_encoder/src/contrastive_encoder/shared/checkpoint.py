"""Step-level checkpoints shared by every training loop in the suite.

A checkpoint is a folder ``<run>/checkpoints/step_<N>/`` written with ``outputs.atomic_save_dir`` (built in a
temporary sibling, put in place once complete), so a crash never leaves a half-written ``step_<N>``: resume
always finds a whole one, and the temporaries a kill leaves are removed at the next start.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "MODEL_DIR",
    "STATE_FILE",
    "checkpoint_dir",
    "is_checkpoint",
    "latest_checkpoint",
    "optimizer_from_files",
    "optimizer_to_files",
    "prune_checkpoints",
    "read_training_state",
    "restore_rng",
    "rng_states",
    "write_training_state",
]

_STEP_RE = re.compile(r"^step_(\d+)$")


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:08d}"


def _steps(run_dir: str | Path) -> list[tuple[int, Path]]:
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_RE.match(p.name)) and p.is_dir()]
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint folder of a run, or None."""
    steps = _steps(run_dir)
    return steps[-1][1] if steps else None


def prune_checkpoints(run_dir: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (keep <= 0 keeps everything)."""
    if keep <= 0:
        return
    for _, path in _steps(run_dir)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


# -- what a checkpoint folder holds ----------------------------------------------------------------------------
# Both training stages write the same layout, safetensors and JSON only (nothing is unpickled on resume):
#   model/                   the stage's save_pretrained folder (loadable on its own: eval, export, fewshot-eval)
#   optimizer.safetensors    the optimizer state's tensors, keyed "<param index>.<name>" (full, not sharded)
#   optimizer.json           its param groups and non-tensor values
#   rng.safetensors          torch's CPU generator state of every process ("cpu", (processes, n)); "cuda" on GPUs
#   state.json               step, scheduler, data position, skip counts, config: the stage's own fields
MODEL_DIR = "model"
STATE_FILE = "state.json"
OPTIMIZER_TENSORS = "optimizer.safetensors"
OPTIMIZER_META = "optimizer.json"
RNG_FILE = "rng.safetensors"
LEGACY_STATE_FILE = "trainer_state.json"  # stage 1 before the layouts were one: the same files otherwise


def is_checkpoint(folder: str | Path) -> bool:
    folder = Path(folder)
    return (folder / STATE_FILE).is_file() or (folder / LEGACY_STATE_FILE).is_file()


def optimizer_to_files(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer ``state_dict()`` as (tensors for safetensors, JSON-safe rest)."""
    tensors, scalars = {}, {}
    for idx, per_param in state["state"].items():
        for key, value in per_param.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{idx}.{key}"] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in state["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def optimizer_from_files(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """The ``state_dict()`` that ``optimizer_to_files`` split (betas back to tuples, as torch writes them)."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in list(tensors.items()) + list(meta["scalars"].items()):
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def rng_states(gather=None) -> dict[str, torch.Tensor]:
    """torch's generator states to save: ``cpu`` is (processes, n), one row per process (``gather`` stacks a
    (1, n) tensor over processes, collective; None in a single process)."""
    cpu = torch.get_rng_state()[None]
    out = {"cpu": gather(cpu) if gather is not None else cpu}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state()
    return out


def restore_rng(rng: dict[str, torch.Tensor], rank: int, world: int) -> None:
    """Put back this process's generator, when the run has as many processes as the one that saved it (with
    another number, each process keeps the seed it started from)."""
    cpu = rng["cpu"] if "cpu" in rng else rng["torch"][None]  # "torch": stage 1's key before the layouts were one
    if cpu.shape[0] == world:
        torch.set_rng_state(cpu[rank].contiguous())
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])


def write_training_state(folder: str | Path, state: dict[str, Any], optimizer_state: dict[str, Any] | None,
                         rng: dict[str, torch.Tensor]) -> None:
    """Write everything but ``model/`` into ``folder`` (an ``atomic_save_dir`` temporary). ``optimizer_state``
    None (FSDP keeps it sharded) writes no optimizer files; resuming then restarts the moments."""
    from safetensors.torch import save_file

    folder = Path(folder)
    if optimizer_state is not None:
        tensors, meta = optimizer_to_files(optimizer_state)
        save_file(tensors, str(folder / OPTIMIZER_TENSORS))
        (folder / OPTIMIZER_META).write_text(json.dumps(meta))
    save_file({k: v.contiguous() for k, v in rng.items()}, str(folder / RNG_FILE))
    (folder / STATE_FILE).write_text(json.dumps(state, indent=2, default=str) + "\n")


def read_training_state(folder: str | Path) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, torch.Tensor]]:
    """(state, optimizer state dict or None, rng) of a checkpoint folder; a damaged file raises
    ``CorruptFileError`` naming it, a folder that is no checkpoint ``FileNotFoundError``."""
    from .readers import load_weights, read_json

    folder = Path(folder)
    state_file = folder / STATE_FILE if (folder / STATE_FILE).is_file() else folder / LEGACY_STATE_FILE
    if not state_file.is_file():
        raise FileNotFoundError(f"{folder} is not a training checkpoint (no {STATE_FILE})")
    state = read_json(state_file)
    optimizer = None
    if (folder / OPTIMIZER_TENSORS).is_file():
        optimizer = optimizer_from_files(load_weights(folder / OPTIMIZER_TENSORS), read_json(folder / OPTIMIZER_META))
    return state, optimizer, load_weights(folder / RNG_FILE)
