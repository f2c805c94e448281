"""Stage-2 checkpoints of DDP / single-process runs: ``<out>/checkpoints/step_N/`` written atomically with the
full optimizer state, and resuming from one (``--fsdp`` runs: ``dcp_checkpoint.py``)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from contrastive_encoder.shared.checkpoint import (
    MODEL_DIR,
    STATE_FILE,
    checkpoint_dir,
    is_checkpoint,
    latest_checkpoint,
    prune_checkpoints,
    read_training_state,
    rng_states,
    write_training_state,
)
from flamingo_core.train.config import TrainConfig
from flamingo_core.train.zero import optimizer_state_dict


def trained_parameters(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(accelerator, model, optimizer, scheduler, step: int, cfg: TrainConfig, extra: dict,
                    trained_names: list[str]) -> Path | None:
    """Write ``<out>/checkpoints/step_N`` atomically in the suite's one layout (``shared/checkpoint.py``):
    ``model/`` is a ``Flamingo.save_pretrained`` folder of the trained weights. Collective: call on every
    process."""
    from accelerate.utils import DistributedType

    from contrastive_encoder.shared.outputs import atomic_save_dir

    fsdp = accelerator.distributed_type == DistributedType.FSDP
    # accelerate's FSDP: the full state dict is gathered (collective); the optimizer state stays sharded, not saved
    # (torch FSDP2 runs, --fsdp, save it sharded: dcp_checkpoint.py)
    full = accelerator.get_state_dict(model) if fsdp else None
    opt_state = None if fsdp else optimizer_state_dict(optimizer)  # collective under ZeRO
    world = accelerator.num_processes
    gather = (lambda t: accelerator.gather(t.to(accelerator.device)).cpu()) if world > 1 else None
    rng = rng_states(gather)
    path = None
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        weights = None if full is None else {n: full[n].detach().contiguous().cpu() for n in trained_names}
        state = {"step": step, "scheduler": {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"},
                 "world_size": world, "config": asdict(cfg), **extra}
        path = checkpoint_dir(cfg.out, step)
        with atomic_save_dir(path, overwrite=True, by="flamingo train") as tmp:  # inside the run's own folder
            unwrapped.save_pretrained(tmp / MODEL_DIR, weights=weights)
            write_training_state(tmp, state, opt_state, rng)
        prune_checkpoints(cfg.out, cfg.keep_checkpoints)
    accelerator.wait_for_everyone()
    return path


def resolve_resume(resume: str, out: str) -> Path:
    if resume == "latest":
        path = latest_checkpoint(out)
        if path is None:
            raise FileNotFoundError(f"--resume latest: no checkpoint under {Path(out) / 'checkpoints'}")
        return path
    path = Path(resume)
    if not is_checkpoint(path):
        raise FileNotFoundError(f"--resume {resume}: not a checkpoint folder (no {STATE_FILE})")
    return path


# Before the two stages shared one layout, stage 2 wrote trained.safetensors, optimizer.pt and rng.pt (read
# with torch's restricted unpickler). Such checkpoints still resume: these names are read, never written.
_LEGACY_WEIGHTS, _LEGACY_OPTIMIZER, _LEGACY_RNG = "trained.safetensors", "optimizer.pt", "rng.pt"


def _load_pt(path: Path) -> Any:
    """An older checkpoint's optimizer / RNG file, read with the restricted unpickler; a truncated one is named."""
    from contrastive_encoder.shared.readers import CorruptFileError, first_line

    try:
        return torch.load(path, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, EOFError ... for a damaged file
        raise CorruptFileError(f"{path}: not a readable checkpoint file, truncated or corrupt ({first_line(e)})") from e


def read_resume_state(path: Path) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, torch.Tensor]]:
    """(state.json, full optimizer state or None, RNG) of a checkpoint, in today's layout or the older one."""
    from contrastive_encoder.shared.readers import read_json

    if (path / _LEGACY_WEIGHTS).is_file():
        state = read_json(path / STATE_FILE)
        optimizer = _load_pt(path / _LEGACY_OPTIMIZER) if (path / _LEGACY_OPTIMIZER).is_file() else None
        return state, optimizer, _load_pt(path / _LEGACY_RNG)
    return read_training_state(path)


def load_checkpoint(path: str | Path, model: torch.nn.Module) -> dict[str, Any]:
    """Load the trained parameters of a checkpoint into ``model`` (unwrapped); return its state.json."""
    from contrastive_encoder.shared.readers import load_weights, read_json
    from flamingo_core.saved_model import WEIGHTS_NAME

    path = Path(path)
    state = read_json(path / STATE_FILE)  # first: a checkpoint folder that is not one fails before any work
    legacy = path / _LEGACY_WEIGHTS
    weights = load_weights(legacy if legacy.is_file() else path / MODEL_DIR / WEIGHTS_NAME)
    params = trained_parameters(model)
    missing, unexpected = sorted(set(params) - set(weights)), sorted(set(weights) - set(params))
    if missing or unexpected:
        raise ValueError(f"{path}: checkpoint does not match the model (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(weights[n].to(p.dtype))
    return state


def _extra(loaders, drawn: dict[str, int], skipped, last) -> dict[str, Any]:
    """state.json's data positions (where each source's loader resumes: after its ``drawn`` batches), skip
    counts and latest losses."""
    positions = {n: loaders[n].batch_sampler.position(k) for n, k in drawn.items()}
    return {"data_position": positions, "skipped": dict(skipped), "losses": dict(last)}


# what a resumed run keeps, with the value of runs saved before the setting existed: under another dataset
# strategy the sources' data positions (and the turn order) would not continue the run; under another loss
# normalisation the same learning rate would take steps of another size
RESUME_KEEPS = {"strategy": "accumulation", "loss_normalisation": "tokens"}


def check_resume_settings(ckpt: Path, cfg) -> None:
    """Refuse to resume ``ckpt`` under another value of a ``RESUME_KEEPS`` setting of ``cfg``, in one line."""
    from contrastive_encoder.shared.readers import read_json

    saved_cfg = read_json(ckpt / "state.json").get("config") or {}
    for name, before in RESUME_KEEPS.items():
        saved, now, flag = saved_cfg.get(name, before), getattr(cfg, name), "--" + name.replace("_", "-")
        if saved != now:
            raise ValueError(f"--resume {ckpt}: that run was trained with {flag} {saved}, not {now}; resume it "
                             f"with {flag} {saved}, or start a new run")
