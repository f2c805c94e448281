"""Contrastive pretraining of the dual encoder on accelerate (Flamingo stage 1, arXiv 2204.14198, B.1.3).

One optimizer step = the micro-batches the StepPlanner gives for that step (one per dataset with the
``accumulation`` strategy, split further by ``accum_steps``), each backpropagated with its weight, then
gradient clipping (norm and optional Adaptive Gradient Clipping for the NFNet), AdamW, the warmup/cosine
schedule and the logit-scale clamp. ``batch_size`` is the *global* batch of one micro-batch, so a run on W
processes is the same optimisation as a run on one. Checkpoints are atomic folders holding safetensors and
JSON only; the data position is the step itself, so ``--resume latest`` continues exactly. The processes run
DDP (``accelerator.prepare``), or with ``--fsdp`` FSDP2, whose sharding, clipping and sharded checkpoints are
``fsdp.py``.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from . import fsdp as sharding
from .data.mixing import StepPlanner
from .data.pairs import PairDataset, collate_pairs
from .data.sources import open_source
from .factory import create_model
from .loss import ClipLoss
from .model import DualEncoder
from .shared.checkpoint import (
    MODEL_DIR,
    checkpoint_dir,
    is_checkpoint,
    latest_checkpoint,
    prune_checkpoints,
    read_training_state,
    restore_rng,
    rng_states,
    write_training_state,
)
from .shared.fsdp import clip_grad_norm, local_tensor
from .shared.nonfinite import check_finite_weights
from .shared.outputs import atomic_save_dir, atomic_write_text, check_save_target, claim_run_dir
from .shared.readers import load_weights
from .shared.records import SkipCounter
from .shared.runlog import MetricsLogger
from .shared.sharded_checkpoint import gathered_state_dict
from .shared.training import LoopSettings, StepLog, TimeBudget, any_process, make_accelerator, run_loop
from .train_config import RUN_OUTPUTS, TrainConfig
from .transforms import EvalTransform, TrainTransform
from .zero_shot import load_classification_set, zero_shot_classify

__all__ = ["RUN_OUTPUTS", "TrainConfig", "load_checkpoint", "param_groups", "save_checkpoint", "train"]


def param_groups(model: DualEncoder, weight_decay: float, lr: float, text_lr: float | None = None) -> list[dict]:
    """AdamW groups from trainable parameters only; no decay on gains, biases, norms and the logit scale."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        leaf = name.rsplit(".", 1)[-1]
        no_decay = p.ndim < 2 or "gain" in leaf or "norm" in name.lower() or name == "logit_scale"
        is_text = name.startswith("text.encoder.")
        groups.setdefault((no_decay, is_text), []).append(p)
    out = []
    for (no_decay, is_text), params in sorted(groups.items()):
        group_lr = text_lr if (is_text and text_lr is not None) else lr
        out.append({"params": params, "weight_decay": 0.0 if no_decay else weight_decay, "lr": group_lr})
    return out


def _lr_lambda(cfg: TrainConfig):
    def fn(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
        if cfg.schedule == "linear":  # the paper's stage-1 decay (B.1.3)
            return 1.0 - progress
        return 0.5 * (1 + math.cos(math.pi * progress))

    return fn


# -- checkpoints: the suite's one layout (shared/checkpoint.py), model/ a DualEncoder.save_pretrained folder --
def save_checkpoint(folder: str | Path, model: DualEncoder, optimizer, scheduler, step: int,
                    extra: dict[str, Any]) -> Path:
    """Write ``model/``, the optimizer, scheduler, RNG and trainer state into ``folder``, atomically."""
    with atomic_save_dir(folder) as tmp:
        model.save_pretrained(tmp / MODEL_DIR)
        state = {"step": step, "scheduler": scheduler.state_dict(), **extra}  # lr_lambdas: None, JSON-safe
        write_training_state(tmp, state, optimizer.state_dict(), rng_states())
    return Path(folder)


def load_checkpoint(folder: str | Path, model: DualEncoder, optimizer=None, scheduler=None) -> dict[str, Any]:
    """Restore what save_checkpoint wrote (tensors via safetensors, nothing unpickled); returns trainer state."""
    folder = Path(folder)
    state, opt_state, rng = read_training_state(folder)
    model.load_state_dict(load_weights(folder / MODEL_DIR / "model.safetensors"))
    if optimizer is not None and opt_state is not None:
        optimizer.load_state_dict(opt_state)
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    restore_rng(rng, rank=0, world=1)  # replicated training: every process resumes the main one's generator
    return state


# -- the loop -----------------------------------------------------------------------------------------------
class _LocalBatches:
    """Batch sampler: this process's slice of every micro-batch from ``start`` to ``end``, with its meta."""

    def __init__(self, planner: StepPlanner, accum: int, rank: int, world: int, start: int, end: int):
        self.planner, self.accum, self.rank, self.world, self.start, self.end = planner, accum, rank, world, start, end

    def chunks(self, step: int):
        for micro in self.planner.plan(step):
            per = len(micro.keys) // self.accum
            for c in range(self.accum):
                keys = micro.keys[c * per : (c + 1) * per]
                yield keys, micro.weight / self.accum

    def __iter__(self):
        for step in range(self.start, self.end):
            chunks = list(self.chunks(step))
            for c, (keys, weight) in enumerate(chunks):
                per = len(keys) // self.world
                local = keys[self.rank * per : (self.rank + 1) * per]
                yield [(*k, step, c, len(chunks), weight) for k in local]

    def __len__(self) -> int:
        return sum(len(list(self.chunks(s))) for s in range(self.start, self.end))


class _PooledTextCache:
    """Pooled outputs of a *frozen* text encoder by caption (exactly what the encoder would compute again).

    Captions repeat every epoch (ShapesWorld: a few thousand), so after the first epoch the text tower costs
    nothing and a step is the image tower's forward and backward only.
    """

    def __init__(self, model: DualEncoder, max_items: int = 500_000, collective: bool = False):
        self.model, self.max_items, self.store = model, max_items, {}
        # FSDP: a call of the encoder is a collective, so every process embeds the union of every process's
        # captions not yet cached; the processes' caches stay equal, and so do their calls
        self.collective = collective and dist.is_initialized() and dist.get_world_size() > 1

    @torch.no_grad()
    def __call__(self, texts: list[str]) -> torch.Tensor:
        missing = list(dict.fromkeys(t for t in texts if t not in self.store))
        if self.collective:
            parts: list[list[str] | None] = [None] * dist.get_world_size()
            dist.all_gather_object(parts, missing)  # the captions of this run's own processes
            missing = list(dict.fromkeys(t for part in parts for t in part))
        if missing:
            device = self.model.logit_scale.device
            tok = {k: v.to(device) for k, v in self.model.tokenize(missing).items()}
            pooled = self.model.text.pool(**tok).float()
            if len(self.store) + len(missing) > self.max_items:
                self.store.clear()
            self.store.update(zip(missing, pooled))
        return torch.stack([self.store[t] for t in texts])


def _check_inputs(cfg: TrainConfig, accelerator, out: Path) -> None:
    """Everything that can be refused before the model loads (a bad --out costs seconds, not a training run)."""
    world = accelerator.num_processes
    if cfg.batch_size < world or cfg.batch_size % world:
        raise ValueError(f"--batch-size {cfg.batch_size} (global) must be a multiple of the {world} processes")
    if cfg.accum_steps < 1 or cfg.max_steps < 1:
        raise ValueError(f"--accum-steps and --max-steps must be >= 1, got {cfg.accum_steps} and {cfg.max_steps}")
    if cfg.optimizer not in ("adamw", "adam", "sgd"):
        raise ValueError(f"unknown optimizer '{cfg.optimizer}': expected adamw, adam or sgd")
    if not 0.0 <= cfg.label_smoothing < 1.0:
        raise ValueError(f"--label-smoothing {cfg.label_smoothing}: expected a value in [0, 1)")
    if cfg.resume == "latest" and latest_checkpoint(out) is None:
        raise FileNotFoundError(f"--resume latest: no checkpoint under {out / 'checkpoints'}")
    if cfg.resume and cfg.resume != "latest" and not is_checkpoint(cfg.resume):
        raise FileNotFoundError(f"--resume {cfg.resume}: not a training checkpoint (no state.json)")
    if cfg.resume:
        sharding.check_resume_layout(_resume_dir(cfg, out), cfg.fsdp)
    if cfg.fsdp:
        from accelerate.utils import DistributedType

        if accelerator.distributed_type == DistributedType.FSDP:
            raise ValueError("--fsdp: this run was launched with an accelerate FSDP config; launch it with torchrun "
                             "or a DDP/single-process accelerate config, or drop --fsdp")
    claim_run_dir(accelerator, out, "contrastive-encoder train", RUN_OUTPUTS, resume=bool(cfg.resume),
                  overwrite=cfg.overwrite, legacy=("checkpoints/step_*/trainer_state.json",))
    if cfg.export:
        check_save_target(cfg.export, cfg.overwrite, flag="--export")
    for path in cfg.zero_shot:  # a set that cannot be evaluated fails now, not after the training time is spent
        load_classification_set(path)


def _resume_dir(cfg: TrainConfig, out: Path) -> Path:
    return latest_checkpoint(out) if cfg.resume == "latest" else Path(cfg.resume)


def _build_model(cfg: TrainConfig) -> tuple[DualEncoder, bool]:
    """The dual encoder, and whether its text tower is frozen (by default: when pretrained, which a small
    caption set would only damage)."""
    overrides = dict(cfg.model_overrides)
    if cfg.image_size:
        overrides["image_size"] = cfg.image_size
    model = create_model(cfg.model, **overrides)
    lock_text = cfg.lock_text
    if lock_text is None:
        lock_text = model.config.text_model is not None and model.config.text_pretrained
    if lock_text:
        model.lock_text()
    return model, lock_text


def _optimizer(cfg: TrainConfig, model: DualEncoder):
    groups = param_groups(model, cfg.weight_decay, cfg.lr, cfg.text_lr)
    if cfg.fsdp:
        groups = sharding.split_replicated(groups)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, momentum=0.0)
    if cfg.optimizer == "adam":  # the paper's (B.1.3): the groups' weight decay is an L2 term in the gradient
        return torch.optim.Adam(groups, betas=(0.9, 0.98), eps=1e-6)
    return torch.optim.AdamW(groups, betas=(0.9, 0.98), eps=1e-6)


def _distribute(cfg: TrainConfig, accelerator, model: DualEncoder):
    """(the model as the step calls it, the DualEncoder itself, its optimizer, the schedule): wrapped by
    ``accelerator.prepare`` (DDP), or with --fsdp sharded by FSDP2 first (the optimizer holds the shards)."""
    if cfg.fsdp:
        total = sum(p.numel() for p in model.parameters())
        model = sharding.shard_dual_encoder(model, accelerator.device, accelerator.mixed_precision)
        held = sum(local_tensor(p).numel() for p in model.parameters())
        print(f"FSDP2: process {accelerator.process_index} holds {held:,} of the {total:,} parameter values",
              flush=True)  # every process says its own
    optimizer = _optimizer(cfg, model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg))
    if not cfg.fsdp:
        model, optimizer = accelerator.prepare(model, optimizer)
    return model, accelerator.unwrap_model(model), optimizer, scheduler


class _ContrastiveStep:
    """One optimizer step of stage 1 (``run_loop``'s ``step``): the step's micro-batches, each backpropagated
    with its weight (gradients all-reduced once, at the last), clipping (norm, then AGC for the NFNet trunk), the
    update and the logit-scale clamp - unless the loss or gradient norm is non-finite (then no update)."""

    def __init__(self, cfg, accelerator, model, optimizer, scheduler, batches, text_cache, skipped, history):
        self.cfg, self.acc, self.model, self.optimizer, self.scheduler = cfg, accelerator, model, optimizer, scheduler
        self.core = accelerator.unwrap_model(model)
        self.batches, self.text_cache, self.skipped, self.history = batches, text_cache, skipped, history
        self.loss_fn = ClipLoss(local_loss=cfg.local_loss, label_smoothing=cfg.label_smoothing)
        self.trainable = [p for p in self.core.parameters() if p.requires_grad]
        self.trunk = [p for p in self.core.vision.trunk.parameters() if p.requires_grad]
        self.images, self.t0 = 0, time.monotonic()

    def _micro_batches(self, i: int):
        chunk, n_chunks = 0, None
        while n_chunks is None or chunk < n_chunks:
            batch = next(self.batches)
            b_step, c, n_chunks, weight = batch["meta"]
            assert b_step == i and c == chunk, f"data out of order: got step {b_step}/{c}, expected {i}/{chunk}"
            self.skipped.update(batch["skipped"])
            yield batch, weight, chunk == n_chunks - 1
            chunk += 1

    def _clip(self) -> float:
        """AGC on the NFNet trunk (``--agc``), then the global norm; returns the norm before clipping. Under FSDP
        first the replicated temperature's gradient is averaged, as DDP averages every gradient."""
        from timm.utils import adaptive_clip_grad

        cfg, max_norm = self.cfg, self.cfg.grad_clip if self.cfg.grad_clip > 0 else float("inf")
        if not cfg.fsdp:
            if cfg.agc > 0:
                adaptive_clip_grad(self.trunk, clip_factor=cfg.agc)
            return float(self.acc.clip_grad_norm_(self.trainable, max_norm))
        sharding.average_replicated_grads(self.trainable)
        if cfg.agc > 0:
            sharding.adaptive_clip_grad_sharded(self.trunk, clip_factor=cfg.agc)
        return float(clip_grad_norm(self.trainable, max_norm))

    def __call__(self, i: int) -> StepLog:
        acc, core, cfg = self.acc, self.core, self.cfg
        losses = []
        for batch, weight, last in self._micro_batches(i):
            if self.text_cache is not None:
                text_inputs = {"text_pooled": self.text_cache(batch["text"])}
            else:
                text_inputs = {k: v.to(acc.device) for k, v in core.tokenize(batch["text"]).items()}
            pixels = batch["pixels"].to(acc.device)
            # FSDP reduce-scatters every micro-batch's gradients into the shards (no DDP wrapper to silence)
            with nullcontext() if last or cfg.fsdp else acc.no_sync(self.model), acc.autocast():
                img, txt, scale = self.model(pixels, **text_inputs)
                loss = self.loss_fn(img.float(), txt.float(), scale.float())
                acc.backward(loss * weight)
            losses.append(loss.detach())
            self.images += pixels.shape[0] * acc.num_processes
        grad_norm = self._clip()
        loss = acc.reduce(torch.stack(losses).mean(), "mean").item()
        finite = math.isfinite(loss) and math.isfinite(grad_norm)
        if finite:
            self.optimizer.step()
            self.scheduler.step()
            core.clamp_logit_scale()
            self.history.setdefault("first_loss", loss)
        self.optimizer.zero_grad(set_to_none=True)
        scale = core.logit_scale.exp().item()
        return StepLog(loss=loss, grad_norm=grad_norm, finite=finite, postfix={"scale": f"{scale:.1f}"},
                       record={"lr": self.scheduler.get_last_lr()[0], "logit_scale": scale,
                               "skipped": sum(self.skipped.values()),
                               "images_per_s": self.images / (time.monotonic() - self.t0)})


class _RunHooks:
    """``run_loop``'s ``evaluate`` and ``save`` for stage 1, and the final export: zero-shot sets (under FSDP on
    every process, its module calls being collectives), checkpoints in the run's layout (full; sharded under
    FSDP)."""

    def __init__(self, cfg, accelerator, core, optimizer, scheduler, planner, skipped, history, logger, out):
        self.cfg, self.acc, self.core, self.optimizer, self.scheduler = cfg, accelerator, core, optimizer, scheduler
        self.planner, self.skipped, self.history, self.logger, self.out = planner, skipped, history, logger, out
        self.trainable = [p for p in core.parameters() if p.requires_grad]
        self.trained_names = [n for n, p in core.named_parameters() if p.requires_grad]
        self.evals: dict[str, Any] = {}

    def evaluate(self, step: int) -> None:
        cfg, acc = self.cfg, self.acc
        if cfg.zero_shot and (acc.is_main_process or cfg.fsdp):
            for path in cfg.zero_shot:
                res = zero_shot_classify(self.core, path, cfg.templates, max_images=cfg.eval_max_images)
                key = Path(path).parent.name if Path(path).name in ("val", "test", "train") else Path(path).stem
                self.evals[key] = res
                self.logger.log(step, **{f"zero_shot/{key}/top1": res["top1"], f"zero_shot/{key}/n": res["n"]})
                acc.print(f"step {step}: zero-shot {key} top1 {res['top1']:.3f} ({res['n']} images)")
            if cfg.fsdp:
                self.core.reshard()  # the root's weights stay gathered after a call: back to the optimizer's shards
        acc.wait_for_everyone()

    def save(self, step: int) -> None:
        acc, out = self.acc, self.out
        extra = {"data": {"planner": self.planner.state_dict(), "positions": self.planner.positions(step)},
                 "skipped": dict(self.skipped), "history": self.history, "train_config": asdict(self.cfg)}
        if self.cfg.fsdp:  # each process checks its shards, all raise together
            reduce = (lambda t: acc.reduce(t, reduction="sum")) if acc.num_processes > 1 else None
            check_finite_weights(step, [local_tensor(p) for p in self.trainable], out, reduce=reduce)
            sharding.save_sharded_checkpoint(acc, self.core, self.optimizer, self.scheduler, step, out, extra,
                                             self.trained_names)
        else:
            check_finite_weights(step, self.trainable, out)  # replicated weights: every process agrees
            if acc.is_main_process:
                save_checkpoint(checkpoint_dir(out, step), self.core, self.optimizer, self.scheduler, step, extra)
        if acc.is_main_process:
            prune_checkpoints(out, self.cfg.keep_checkpoints)
        acc.wait_for_everyone()

    def export(self) -> None:
        cfg, acc = self.cfg, self.acc
        full = gathered_state_dict(self.core, trained_only=False) if cfg.fsdp else None  # collective
        if acc.is_main_process:
            if cfg.fsdp:
                sharding.save_gathered(self.core, cfg.export, full, overwrite=cfg.overwrite)
            else:
                self.core.save_pretrained(cfg.export, overwrite=cfg.overwrite)
        acc.wait_for_everyone()


def _resume(cfg: TrainConfig, out: Path, accelerator, model, optimizer, scheduler, trained_names) -> dict:
    """The trainer state of the checkpoint --resume names, its weights, optimizer and schedule loaded ({} for a
    new run)."""
    if not cfg.resume:
        return {}
    ckpt = _resume_dir(cfg, out)
    if cfg.fsdp:
        state = sharding.load_sharded_checkpoint(ckpt, model, optimizer, scheduler, accelerator, trained_names)
    else:
        state = load_checkpoint(ckpt, accelerator.unwrap_model(model), optimizer, scheduler)
    accelerator.print(f"resumed from {ckpt} at step {state['step']}")
    return state


def train(cfg: TrainConfig, accelerator=None) -> dict[str, Any]:
    """Run (or resume) contrastive pretraining; returns a summary dict (also written to ``summary.json``)."""
    accelerator = accelerator or make_accelerator(cfg.precision, cfg.cpu)
    rank, world, say, out = accelerator.process_index, accelerator.num_processes, accelerator.print, Path(cfg.out)
    _check_inputs(cfg, accelerator, out)
    torch.manual_seed(cfg.seed)
    model, lock_text = _build_model(cfg)
    counts, mc = model.parameter_counts(), model.config
    skipped = SkipCounter()
    sources = [open_source(spec, strict=cfg.strict, skipped=skipped) for spec in cfg.data]
    transform = (TrainTransform(mc.image_size, mc.image_mean, mc.image_std, swap_lr=cfg.swap_lr)
                 if cfg.augment else EvalTransform(mc.image_size, mc.image_mean, mc.image_std))
    dataset = PairDataset(sources, transform, strict=cfg.strict)
    planner = StepPlanner(dataset.sizes(), cfg.batch_size * cfg.accum_steps, cfg.data_weights, cfg.strategy, cfg.seed)
    model, core, optimizer, scheduler = _distribute(cfg, accelerator, model)
    state = _resume(cfg, out, accelerator, model, optimizer, scheduler,
                    [n for n, p in core.named_parameters() if p.requires_grad])
    start, history = state.get("step", 0), state.get("history", {})
    skipped.update(state.get("skipped", {}))
    end = cfg.max_steps if cfg.stop_after is None else min(cfg.max_steps, start + cfg.stop_after)
    logger = MetricsLogger(out, enabled=accelerator.is_main_process, resume_step=start if cfg.resume else None)
    say(f"model {mc.name}: {counts['trainable']:,} trainable / {counts['frozen']:,} frozen parameters "
        f"(vision trunk {counts['vision']:,}, text encoder {counts['text']:,}); {world} process(es), "
        f"global batch {cfg.batch_size}, data {dataset.sizes()} ({cfg.strategy})" + (", FSDP2" if cfg.fsdp else ""))
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=_LocalBatches(planner, cfg.accum_steps, rank, world, start, end),
        collate_fn=collate_pairs, num_workers=cfg.num_workers, persistent_workers=False,
        prefetch_factor=4 if cfg.num_workers else None)
    text_cache = _PooledTextCache(core, collective=cfg.fsdp) if lock_text and cfg.text_cache else None
    hooks = _RunHooks(cfg, accelerator, core, optimizer, scheduler, planner, skipped, history, logger, out)
    step = _ContrastiveStep(cfg, accelerator, model, optimizer, scheduler, iter(loader), text_cache, skipped,
                            history)
    settings = LoopSettings(max_steps=end, save_every=cfg.save_every, eval_every=cfg.eval_every,
                            log_every=cfg.log_every, progress=cfg.progress, desc="train", out=str(out))
    loop = run_loop(settings, start, step=step, save=hooks.save, evaluate=hooks.evaluate,
                    log=lambda n, record: logger.log(n, **record), budget=TimeBudget(cfg.max_minutes),
                    agree=any_process(accelerator), on_nonfinite=logger.close,
                    show_progress=accelerator.is_local_main_process)
    if loop.stopped == "max_minutes":
        say(f"time budget of {cfg.max_minutes} min spent at step {loop.step}")
    if cfg.zero_shot and loop.step > start:
        hooks.evaluate(loop.step)
    if cfg.export:
        hooks.export()
    summary = _summary(cfg, loop, start, history, step.images, hooks.evals, skipped, counts, world)
    if accelerator.is_main_process:
        _report(cfg, out, mc.name, loop, start, summary, hooks.evals, skipped, world, say)
    logger.close()
    accelerator.end_training()
    return summary


def _report(cfg, out, name, loop, start, summary, evals, skipped, world, say) -> None:
    """The run's last line, and summary.json (a run resumed at its last step keeps the one it has)."""
    if loop.step == start:  # resumed at its last step: the run's summary stays
        say(f"{out} is already at step {loop.step} of {cfg.max_steps}: nothing to train (raise --max-steps to "
            "continue it)")
    else:
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
        zs = ", ".join(f"{k} {v['top1']:.1%}" for k, v in evals.items()) or "no zero-shot sets"
        say(f"Trained {name} for {loop.step - start} steps (now at {loop.step}/{cfg.max_steps}) in "
            f"{loop.seconds:.0f} s ({summary['images_per_s']:.1f} images/s on {world} process(es)); loss "
            f"{summary['first_loss']} -> {summary['last_loss']:.4f}; zero-shot: {zs}; {skipped.report()}. "
            f"Checkpoints in {out / 'checkpoints'}" + (f", model exported to {cfg.export}." if cfg.export else "."))


def _summary(cfg, loop, start, history, images, evals, skipped, counts, world) -> dict[str, Any]:
    last = loop.last.loss if loop.last is not None else None
    return {"step": loop.step, "steps": cfg.max_steps, "first_loss": history.get("first_loss", last),
            "last_loss": last, "images_per_s": images / loop.seconds if loop.seconds > 0 else 0.0,
            "seconds": loop.seconds, "zero_shot": evals, "skipped": dict(skipped), "parameters": counts,
            "processes": world}
