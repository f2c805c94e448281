"""Stage-2 checkpoints: ``<out>/checkpoints/step_N/`` written atomically, and resuming from one."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from flamingo_core.train.config import TrainConfig
from flamingo_core.train.zero import optimizer_state_dict


def trained_parameters(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(accelerator, model, optimizer, scheduler, step: int, cfg: TrainConfig, extra: dict,
                    trained_names: list[str]) -> Path | None:
    """Write ``<out>/checkpoints/step_N`` atomically (collective: call on every process)."""
    from accelerate.utils import DistributedType
    from safetensors.torch import save_file

    from contrastive_encoder.shared.checkpoint import checkpoint_dir, prune_checkpoints
    from contrastive_encoder.shared.outputs import atomic_save_dir

    fsdp = accelerator.distributed_type == DistributedType.FSDP
    # under FSDP the full state dict is gathered (collective); the optimizer state stays sharded, not saved
    full = accelerator.get_state_dict(model) if fsdp else None
    opt_state = None if fsdp else optimizer_state_dict(optimizer)  # collective under ZeRO
    rng = torch.get_rng_state()
    rngs = accelerator.gather(rng[None].to(accelerator.device)).cpu() if accelerator.num_processes > 1 else rng[None]
    path = None
    if accelerator.is_main_process:
        source = full if full is not None else dict(trained_parameters(accelerator.unwrap_model(model)))
        weights = {n: source[n].detach().float().contiguous().cpu().clone() for n in trained_names}
        state = {"step": step, "scheduler": {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"},
                 "world_size": accelerator.num_processes, "config": asdict(cfg), **extra}
        path = checkpoint_dir(cfg.out, step)
        with atomic_save_dir(path, overwrite=True, by="flamingo train") as tmp:  # inside the run's own folder
            save_file(weights, str(tmp / "trained.safetensors"))
            if opt_state is not None:
                torch.save(opt_state, tmp / "optimizer.pt")
            rng_state = {"cpu": rngs}
            if torch.cuda.is_available():
                rng_state["cuda"] = torch.cuda.get_rng_state()
            torch.save(rng_state, tmp / "rng.pt")
            (tmp / "state.json").write_text(json.dumps(state, indent=2, default=str) + "\n")
        prune_checkpoints(cfg.out, cfg.keep_checkpoints)
    accelerator.wait_for_everyone()
    return path


def resolve_resume(resume: str, out: str) -> Path:
    from contrastive_encoder.shared.checkpoint import latest_checkpoint

    if resume == "latest":
        path = latest_checkpoint(out)
        if path is None:
            raise FileNotFoundError(f"--resume latest: no checkpoint under {Path(out) / 'checkpoints'}")
        return path
    path = Path(resume)
    if not (path / "state.json").is_file():
        raise FileNotFoundError(f"--resume {resume}: not a checkpoint folder (no state.json)")
    return path


def _load_pt(path: Path) -> Any:
    """A checkpoint's optimizer / RNG file, read with the restricted unpickler; a truncated one is named."""
    from contrastive_encoder.shared.readers import CorruptFileError, first_line

    try:
        return torch.load(path, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, EOFError ... for a damaged file
        reason = first_line(e)
        raise CorruptFileError(f"{path}: not a readable checkpoint file, truncated or corrupt ({reason})") from e


def load_checkpoint(path: str | Path, model: torch.nn.Module) -> dict[str, Any]:
    """Load the trained parameters of a checkpoint into ``model`` (unwrapped); return its state.json."""
    from contrastive_encoder.shared.readers import load_weights, read_json

    path = Path(path)
    state = read_json(path / "state.json")  # first: a checkpoint folder that is not one fails before any work
    weights = load_weights(path / "trained.safetensors")
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


def check_resume_strategy(ckpt: Path, strategy: str) -> None:
    """A resumed run keeps its dataset strategy: under another one the sources' data positions (and the turn
    order) would not continue the run."""
    from contrastive_encoder.shared.readers import read_json

    saved = (read_json(ckpt / "state.json").get("config") or {}).get("strategy", "accumulation")
    if saved != strategy:
        raise ValueError(f"--resume {ckpt}: that run was trained with --strategy {saved}, not {strategy}; resume "
                         f"it with --strategy {saved}, or start a new run")
