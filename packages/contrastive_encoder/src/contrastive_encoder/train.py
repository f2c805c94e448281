"""Contrastive pretraining of the dual encoder on accelerate (Flamingo stage 1, arXiv 2204.14198, B.1.3).

One optimizer step = the micro-batches the StepPlanner gives for that step (one per dataset with the
``accumulation`` strategy, split further by ``accum_steps``), each backpropagated with its weight, then
gradient clipping (norm and optional Adaptive Gradient Clipping for the NFNet), AdamW, the warmup/cosine
schedule and the logit-scale clamp. ``batch_size`` is the *global* batch of one micro-batch, so a run on W
processes is the same optimisation as a run on one. Checkpoints are atomic folders holding safetensors and
JSON only; the data position is the step itself, so ``--resume latest`` continues exactly.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from .data.mixing import StepPlanner
from .data.pairs import PairDataset, collate_pairs
from .data.sources import open_source
from .factory import create_model
from .loss import ClipLoss
from .model import DualEncoder
from .shared.checkpoint import checkpoint_dir, latest_checkpoint, prune_checkpoints
from .shared.nonfinite import NonFiniteLossError, check_finite, check_finite_weights
from .shared.outputs import atomic_save_dir, atomic_write_text, check_save_target, claim_run_dir
from .shared.readers import load_weights, read_json
from .shared.records import SkipCounter
from .shared.runlog import MetricsLogger
from .transforms import EvalTransform, TrainTransform
from .zero_shot import DEFAULT_TEMPLATES, load_classification_set, zero_shot_classify

__all__ = ["TrainConfig", "load_checkpoint", "param_groups", "save_checkpoint", "train"]


@dataclass
class TrainConfig:
    model: str = "nano-minilm"  # preset name, preset JSON, or a saved model folder to continue from
    data: list[str] = field(default_factory=lambda: ["data/world/ltip/train.jsonl"])  # pair sources
    data_weights: list[float] | None = None  # lambda per dataset (default 1 each)
    strategy: str = "accumulation"  # accumulation | merge | round-robin
    batch_size: int = 64  # global batch of one micro-batch, over all processes
    accum_steps: int = 1  # micro-batches per dataset per update (negatives stay within a micro-batch)
    steps: int = 600  # optimizer steps
    optimizer: str = "adamw"  # adamw, or sgd (plain, no momentum: for tests and ablations)
    lr: float = 1e-3  # peak learning rate
    text_lr: float | None = None  # peak learning rate of the text tower (None: lr)
    weight_decay: float = 0.05  # on matrices only (no gains, biases, norms, logit scale)
    warmup_steps: int = 50  # linear warmup from 0
    schedule: str = "cosine"  # cosine (to 0 at `steps`) or constant after warmup
    grad_clip: float = 1.0  # max global gradient norm (0 disables)
    agc: float = 0.0  # Adaptive Gradient Clipping factor for the NFNet trunk (0 disables; NFNet uses 0.01)
    lock_text: bool | None = None  # freeze the text encoder (projection still trains); None: if pretrained
    text_cache: bool = True  # with a frozen text encoder, cache each caption's pooled output (exact, faster)
    local_loss: bool = False  # each process scores only its own rows against the global batch
    image_size: int | None = None  # override the preset's resolution
    augment: bool = True  # colour jitter + horizontal flip
    swap_lr: bool = True  # swap left/right in captions of flipped images
    strict: bool = False  # raise on the first corrupt/missing image or bad row
    seed: int = 0  # init, shuffling and augmentation seed
    workers: int = 0  # DataLoader worker processes
    cpu: bool = False  # run on the CPU even when a GPU is present
    precision: str = "auto"  # auto (bf16 on a bf16-capable GPU, else fp32) | bf16 | fp32
    out: str = "runs/contrastive"  # run folder: checkpoints/, metrics.jsonl, final/
    save_every: int = 200  # checkpoint every N steps (and always at the end); 0: only at the end
    keep: int = 2  # checkpoints kept (<= 0 keeps all)
    resume: str | None = None  # "latest" or a checkpoint folder
    overwrite: bool = False  # replace a previous run in `out` (its own files only) / write into a non-empty folder
    stop_after: int | None = None  # stop after this many steps in this invocation (simulated preemption)
    max_minutes: float | None = None  # wall-clock budget; stops (and checkpoints) when spent
    log_every: int = 10  # steps between metrics records
    eval_every: int = 0  # steps between zero-shot evaluations (0: only at the end)
    zero_shot: list[str] = field(default_factory=list)  # class-folder / JSONL sets to evaluate
    templates: list[str] = field(default_factory=lambda: list(DEFAULT_TEMPLATES))  # prompts with {class}
    eval_max_images: int | None = 500  # cap per evaluation set
    export: str | None = None  # also write the final model here (save_pretrained folder); `overwrite` applies
    progress: bool = True  # tqdm progress bar
    model_overrides: dict[str, Any] = field(default_factory=dict)  # DualEncoderConfig field overrides


# what a run writes in its folder (glob patterns): all that --overwrite deletes there
RUN_OUTPUTS = ("checkpoints/step_*", "metrics.jsonl", "summary.json", "tensorboard/events.out.tfevents.*")


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
        progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return fn


# -- checkpoints --------------------------------------------------------------------------------------------
def _optimizer_to_files(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, per_param in state["state"].items():
        for key, value in per_param.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{idx}.{key}"] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in state["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def _optimizer_from_files(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in list(tensors.items()) + list(meta["scalars"].items()):
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def save_checkpoint(
    folder: str | Path, model: DualEncoder, optimizer, scheduler, step: int, extra: dict[str, Any]
) -> Path:
    """Write ``model/`` (a from_pretrained folder), optimizer tensors/JSON, scheduler, RNG and trainer state."""
    with atomic_save_dir(folder) as tmp:
        model.save_pretrained(tmp / "model")
        tensors, meta = _optimizer_to_files(optimizer)
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "optimizer.json").write_text(json.dumps(meta))
        save_file({"torch": torch.get_rng_state()}, str(tmp / "rng.safetensors"))
        sched = scheduler.state_dict()  # lr_lambdas are None for plain functions: JSON-safe
        state = {"step": step, "scheduler": sched, **extra}
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2))
    return Path(folder)


def load_checkpoint(folder: str | Path, model: DualEncoder, optimizer=None, scheduler=None) -> dict[str, Any]:
    """Restore what save_checkpoint wrote (tensors via safetensors, nothing unpickled); returns trainer state."""
    folder = Path(folder)
    if not (folder / "trainer_state.json").is_file():
        raise FileNotFoundError(f"{folder} is not a training checkpoint (no trainer_state.json)")
    weights = load_weights(folder / "model" / "model.safetensors")
    model.load_state_dict(weights)
    if optimizer is not None:
        meta = read_json(folder / "optimizer.json")
        _optimizer_from_files(optimizer, load_weights(folder / "optimizer.safetensors"), meta)
    state = read_json(folder / "trainer_state.json")
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(load_weights(folder / "rng.safetensors")["torch"])
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

    def __init__(self, model: DualEncoder, max_items: int = 500_000):
        self.model, self.max_items, self.store = model, max_items, {}

    @torch.no_grad()
    def __call__(self, texts: list[str]) -> torch.Tensor:
        missing = list(dict.fromkeys(t for t in texts if t not in self.store))
        if missing:
            device = self.model.logit_scale.device
            tok = {k: v.to(device) for k, v in self.model.tokenize(missing).items()}
            pooled = self.model.text.pool(**tok).float()
            if len(self.store) + len(missing) > self.max_items:
                self.store.clear()
            self.store.update(zip(missing, pooled))
        return torch.stack([self.store[t] for t in texts])


def _precision(name: str) -> str:
    if name == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    return {"fp32": "no", "bf16": "bf16", "no": "no"}[name]


def train(cfg: TrainConfig, accelerator=None) -> dict[str, Any]:
    """Run (or resume) contrastive pretraining; returns a summary dict (also written to ``summary.json``)."""
    from accelerate import Accelerator
    from timm.utils import adaptive_clip_grad
    from tqdm.auto import tqdm

    # accelerate only sets up multi-process CPU (gloo) runs when told cpu=True
    cpu = cfg.cpu or not torch.cuda.is_available()
    accelerator = accelerator or Accelerator(mixed_precision=_precision(cfg.precision), cpu=cpu)
    rank, world = accelerator.process_index, accelerator.num_processes
    if cfg.batch_size < world or cfg.batch_size % world:
        raise ValueError(f"--batch-size {cfg.batch_size} (global) must be a multiple of the {world} processes")
    if cfg.accum_steps < 1 or cfg.steps < 1:
        raise ValueError(f"--accum-steps and --steps must be >= 1, got {cfg.accum_steps} and {cfg.steps}")
    out = Path(cfg.out)
    # the output folders are checked before any work, so a bad --out costs seconds, not a training run
    if cfg.resume == "latest" and latest_checkpoint(out) is None:
        raise FileNotFoundError(f"--resume latest: no checkpoint under {out / 'checkpoints'}")
    if cfg.resume and cfg.resume != "latest" and not (Path(cfg.resume) / "trainer_state.json").is_file():
        raise FileNotFoundError(f"--resume {cfg.resume}: not a training checkpoint (no trainer_state.json)")
    claim_run_dir(accelerator, out, "contrastive-encoder train", RUN_OUTPUTS, resume=bool(cfg.resume),
                  overwrite=cfg.overwrite, legacy=("checkpoints/step_*/trainer_state.json",))
    if cfg.export:
        check_save_target(cfg.export, cfg.overwrite, flag="--export")
    for path in cfg.zero_shot:  # a set that cannot be evaluated fails now, not after the training time is spent
        load_classification_set(path)
    torch.manual_seed(cfg.seed)
    overrides = dict(cfg.model_overrides)
    if cfg.image_size:
        overrides["image_size"] = cfg.image_size
    model = create_model(cfg.model, **overrides)
    lock_text = cfg.lock_text
    if lock_text is None:  # a pretrained text tower would only be damaged by a small caption set
        lock_text = model.config.text_model is not None and model.config.text_pretrained
    if lock_text:
        model.lock_text()
    counts = model.parameter_counts()

    skipped = SkipCounter()
    sources = [open_source(spec, strict=cfg.strict, skipped=skipped) for spec in cfg.data]
    mc = model.config
    transform = (
        TrainTransform(mc.image_size, mc.image_mean, mc.image_std, swap_lr=cfg.swap_lr)
        if cfg.augment else EvalTransform(mc.image_size, mc.image_mean, mc.image_std)
    )
    dataset = PairDataset(sources, transform, strict=cfg.strict)
    planner = StepPlanner(dataset.sizes(), cfg.batch_size * cfg.accum_steps, cfg.data_weights, cfg.strategy, cfg.seed)

    groups = param_groups(model, cfg.weight_decay, cfg.lr, cfg.text_lr)
    if cfg.optimizer == "adamw":
        optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.98), eps=1e-6)
    elif cfg.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, momentum=0.0)
    else:
        raise ValueError(f"unknown optimizer '{cfg.optimizer}': expected adamw or sgd")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg))
    model, optimizer = accelerator.prepare(model, optimizer)
    core: DualEncoder = accelerator.unwrap_model(model)

    start, history = 0, {}
    if cfg.resume:
        ckpt = latest_checkpoint(out) if cfg.resume == "latest" else Path(cfg.resume)
        state = load_checkpoint(ckpt, core, optimizer, scheduler)
        start = state["step"]
        skipped.update(state.get("skipped", {}))
        history = state.get("history", {})
        accelerator.print(f"resumed from {ckpt} at step {start}")
    end = cfg.steps if cfg.stop_after is None else min(cfg.steps, start + cfg.stop_after)

    logger = MetricsLogger(out, enabled=accelerator.is_main_process, resume_step=start if cfg.resume else None)
    accelerator.print(
        f"model {mc.name}: {counts['trainable']:,} trainable / {counts['frozen']:,} frozen parameters "
        f"(vision trunk {counts['vision']:,}, text encoder {counts['text']:,}); {world} process(es), "
        f"global batch {cfg.batch_size}, data {dataset.sizes()} ({cfg.strategy})"
    )
    sampler = _LocalBatches(planner, cfg.accum_steps, rank, world, start, end)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, collate_fn=collate_pairs, num_workers=cfg.workers,
        persistent_workers=False, prefetch_factor=4 if cfg.workers else None,
    )
    loss_fn = ClipLoss(local_loss=cfg.local_loss)
    text_cache = _PooledTextCache(core) if lock_text and cfg.text_cache else None
    trunk_params = [p for p in core.vision.trunk.parameters() if p.requires_grad]
    trainable = [p for p in core.parameters() if p.requires_grad]
    evals: dict[str, Any] = {}

    def evaluate(step: int) -> None:
        if accelerator.is_main_process and cfg.zero_shot:
            for path in cfg.zero_shot:
                res = zero_shot_classify(core, path, cfg.templates, max_images=cfg.eval_max_images)
                key = Path(path).parent.name if Path(path).name in ("val", "test", "train") else Path(path).stem
                evals[key] = res
                logger.log(step, **{f"zero_shot/{key}/top1": res["top1"], f"zero_shot/{key}/n": res["n"]})
                accelerator.print(f"step {step}: zero-shot {key} top1 {res['top1']:.3f} ({res['n']} images)")
        accelerator.wait_for_everyone()

    def checkpoint(step: int) -> None:
        check_finite_weights(step, trainable, out)  # replicated weights: every process agrees
        if accelerator.is_main_process:
            extra = {"data": {"planner": planner.state_dict(), "positions": planner.positions(step)},
                     "skipped": dict(skipped), "history": history, "train_config": asdict(cfg)}
            save_checkpoint(checkpoint_dir(out, step), core, optimizer, scheduler, step, extra)
            prune_checkpoints(out, cfg.keep)
        accelerator.wait_for_everyone()

    t0, images, step, first_loss, last_loss = time.time(), 0, start, None, None
    bar = tqdm(total=end - start, desc="train", disable=not (cfg.progress and accelerator.is_local_main_process))
    batches = iter(loader)
    while step < end:
        losses = []
        n_chunks = None
        chunk = 0
        while n_chunks is None or chunk < n_chunks:
            batch = next(batches)
            b_step, c, n_chunks, weight = batch["meta"]
            assert b_step == step and c == chunk, f"data out of order: got step {b_step}/{c}, expected {step}/{chunk}"
            skipped.update(batch["skipped"])
            if text_cache is not None:
                text_inputs = {"text_pooled": text_cache(batch["text"])}
            else:
                text_inputs = {k: v.to(accelerator.device) for k, v in core.tokenize(batch["text"]).items()}
            pixels = batch["pixels"].to(accelerator.device)
            sync = nullcontext() if chunk == n_chunks - 1 else accelerator.no_sync(model)
            with sync, accelerator.autocast():
                img, txt, scale = model(pixels, **text_inputs)
                loss = loss_fn(img.float(), txt.float(), scale.float())
                accelerator.backward(loss * weight)
            losses.append(loss.detach())
            images += pixels.shape[0] * world
            chunk += 1
        if cfg.agc > 0:
            adaptive_clip_grad(trunk_params, clip_factor=cfg.agc)
        grad_norm = accelerator.clip_grad_norm_(trainable, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
        last_loss = accelerator.reduce(torch.stack(losses).mean(), "mean").item()
        try:
            check_finite(step + 1, {"loss": last_loss}, float(grad_norm), out)
        except NonFiniteLossError:
            logger.log(step + 1, loss=last_loss, grad_norm=float(grad_norm), stopped="non-finite")
            logger.close()
            bar.close()
            raise
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        core.clamp_logit_scale()
        step += 1
        first_loss = last_loss if first_loss is None else first_loss
        history.setdefault("first_loss", last_loss)
        bar.update(1)
        bar.set_postfix(loss=f"{last_loss:.3f}", scale=f"{core.logit_scale.exp().item():.1f}")
        if step % cfg.log_every == 0 or step == end:
            logger.log(step, loss=last_loss, lr=scheduler.get_last_lr()[0], grad_norm=float(grad_norm),
                       logit_scale=core.logit_scale.exp().item(), images_per_s=images / (time.time() - t0),
                       skipped=sum(skipped.values()))
        if cfg.eval_every and step % cfg.eval_every == 0 and step != end:
            evaluate(step)
        out_of_time = cfg.max_minutes is not None and (time.time() - t0) > 60 * cfg.max_minutes
        if accelerator.num_processes > 1:
            flag = accelerator.reduce(torch.tensor(float(out_of_time), device=accelerator.device), "sum")
            out_of_time = bool(flag.item() > 0)
        if (cfg.save_every and step % cfg.save_every == 0) or step == end or out_of_time:
            checkpoint(step)
        if out_of_time:
            accelerator.print(f"time budget of {cfg.max_minutes} min spent at step {step}")
            break
    bar.close()
    elapsed = time.time() - t0
    if cfg.zero_shot and (step == end or cfg.max_minutes):
        evaluate(step)
    if cfg.export and accelerator.is_main_process:
        core.save_pretrained(cfg.export, overwrite=cfg.overwrite)
    summary = {
        "step": step, "steps": cfg.steps, "first_loss": history.get("first_loss", first_loss), "last_loss": last_loss,
        "images_per_s": images / elapsed if elapsed > 0 else 0.0, "seconds": elapsed, "zero_shot": evals,
        "skipped": dict(skipped), "parameters": counts, "processes": world,
    }
    if accelerator.is_main_process and step == start:  # resumed at its last step: the run's summary stays
        accelerator.print(f"{out} is already at step {step} of {cfg.steps}: nothing to train (raise --steps to "
                          "continue it)")
    elif accelerator.is_main_process:
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
        zs = ", ".join(f"{k} {v['top1']:.1%}" for k, v in evals.items()) or "no zero-shot sets"
        accelerator.print(
            f"Trained {mc.name} for {step - start} steps (now at {step}/{cfg.steps}) in {elapsed:.0f} s "
            f"({summary['images_per_s']:.1f} images/s on {world} process(es)); loss {summary['first_loss']} -> "
            f"{last_loss:.4f}; zero-shot: {zs}; {skipped.report()}. Checkpoints in {out / 'checkpoints'}"
            + (f", model exported to {cfg.export}." if cfg.export else ".")
        )
    logger.close()
    accelerator.end_training()
    return summary
