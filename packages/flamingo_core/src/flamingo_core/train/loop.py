"""``train``: a stage-2 run on the suite's trainer skeleton (``contrastive_encoder.shared.training``) - set up,
resume, step, evaluate, save and summarise."""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from contrastive_encoder.shared.checkpoint import restore_rng
from contrastive_encoder.shared.nonfinite import check_finite_weights
from contrastive_encoder.shared.training import (
    LoopSettings,
    StepLog,
    TimeBudget,
    any_process,
    make_accelerator,
    run_loop,
)
from flamingo_core.data import FlamingoCollator, build_source, make_loader
from flamingo_core.lm_adapter import enable_gradient_checkpointing
from flamingo_core.mixture import DEFAULT_WEIGHTS, DatasetMixture, SourceSchedule, parse_weights
from flamingo_core.train.checkpoint import (
    _extra,
    check_resume_settings,
    load_checkpoint,
    read_resume_state,
    resolve_resume,
    save_checkpoint,
    trained_parameters,
)
from flamingo_core.train.config import RUN_OUTPUTS, TrainConfig, TrainResult
from flamingo_core.train.dcp_checkpoint import (
    check_resume_layout,
    gathered_trained_weights,
    load_sharded_checkpoint,
    save_sharded_checkpoint,
)
from flamingo_core.train.fsdp import local_tensor, shard_flamingo
from flamingo_core.train.held_out import HeldOutEvaluation, load_probe
from flamingo_core.train.mesh import DataParallelView, build_mesh
from flamingo_core.train.optim import param_groups, warmup_constant
from flamingo_core.train.source_specs import (
    build_sources,
    check_sources,
    parse_source_specs,
    source_batch_sizes,
)
from flamingo_core.train.step import _to, train_step
from flamingo_core.train.zero import build_adamw, is_zero, load_optimizer_state


def _check_inputs(cfg: TrainConfig, accelerator, model) -> dict[str, float]:
    """Everything that can be refused before a model loads: sources, the vision encoder, the resume point and
    the run folder (a bad --out costs seconds, not a training run). Returns the dataset weights."""
    from contrastive_encoder.shared.outputs import claim_run_dir

    weights = parse_weights(cfg.weights or DEFAULT_WEIGHTS, names=list(parse_source_specs(cfg.sources, cfg.data)))
    source_batch_sizes(cfg, [n for n, w in weights.items() if w > 0])
    check_sources(cfg, weights)
    if model is None and cfg.vision_encoder:
        from flamingo_core.vision import BACKENDS, check_vision_encoder_name

        if cfg.vision_encoder.partition(":")[0] not in BACKENDS and "/" in cfg.vision_encoder and not Path(
                cfg.vision_encoder).exists():
            raise FileNotFoundError(f"vision encoder not found: {cfg.vision_encoder} (export the stage-1 encoder "
                                    "there with contrastive_encoder, or pass --vision-encoder <folder, preset or "
                                    "open_clip: / hf: / timm: name>)")
        check_vision_encoder_name(cfg.vision_encoder)
    _check_fsdp(cfg, accelerator)
    if cfg.resume:
        check_resume_settings(resolve_resume(cfg.resume, cfg.out), cfg)
        check_resume_layout(resolve_resume(cfg.resume, cfg.out), _sharded(cfg))
    for spec in cfg.eval_probes:
        load_probe(spec)
    claim_run_dir(accelerator, cfg.out, "flamingo train", RUN_OUTPUTS, resume=bool(cfg.resume),
                  overwrite=cfg.overwrite, legacy=("checkpoints/step_*/state.json",))
    return weights


def _sharded(cfg: TrainConfig) -> bool:
    """The model's parameters are DTensors (FSDP2 and/or tensor parallel): sharded checkpoints, no DDP."""
    return cfg.fsdp or cfg.tensor_parallel > 1


def _check_fsdp(cfg: TrainConfig, accelerator) -> None:
    """--fsdp is torch's FSDP2 (and --tensor-parallel torch's tensor parallelism) on the processes torchrun (or
    accelerate) started, instead of DDP."""
    from accelerate.utils import DistributedType

    if not _sharded(cfg):
        return
    flag = "--fsdp" if cfg.fsdp else f"--tensor-parallel {cfg.tensor_parallel}"
    if accelerator.distributed_type == DistributedType.FSDP:
        raise ValueError(f"{flag}: this run was launched with an accelerate FSDP config; launch it with torchrun or "
                         f"a DDP/single-process accelerate config, or drop {flag}")
    if cfg.zero == "on":
        raise ValueError(f"--zero on with {flag}: its optimizer state is sharded with the parameters already; "
                         "drop one of them")
    world, tp = accelerator.num_processes, cfg.tensor_parallel
    if world % tp:
        raise ValueError(f"--tensor-parallel {tp} does not divide the {world} processes of this run")
    if world > tp > 1 and not cfg.fsdp:
        raise ValueError(f"--tensor-parallel {tp} with {world} processes: the other factor ({world // tp}) is data "
                         f"parallel, which runs through FSDP: add --fsdp (a 2-D mesh), or launch {tp} processes")


def _build_model(cfg: TrainConfig):
    from flamingo_core.config import load_config
    from flamingo_core.factory import create_model

    # names go into the config (create_model's vision_encoder= / lm= take built modules)
    overrides = {k: v for k, v in (("vision_encoder", cfg.vision_encoder), ("lm", cfg.lm),
                                   ("frozen_dtype", cfg.frozen_dtype)) if v}
    return create_model(load_config(cfg.model, **overrides))


def _data_stream(cfg: TrainConfig, sources, weights, batch_sizes, processor, start_step: int, skipped, accelerator):
    """The sources' loaders, positioned after ``start_step`` steps, and the mixture that draws each step's
    batches from them; the ``SourceSchedule`` says which sources a step trains on."""
    schedule = SourceSchedule({n: weights[n] for n in sources}, cfg.strategy)
    drawn = schedule.batches_before(start_step)  # round-robin: each source has given a batch at its turns only
    # pairs and videos are packed into rows of the source's window (packing.py: exact); documents fill theirs
    pack = {name: src.max_tokens if cfg.pack and src.kind in ("pairs", "video") else None
            for name, src in sources.items()}
    loaders = {name: make_loader(src, FlamingoCollator(processor, src.max_tokens, processor.media_token_id,
                                                       pack_window=pack[name]),
                                 batch_sizes[name], accelerator.process_index, accelerator.num_processes, cfg.seed,
                                 drawn[name], cfg.num_workers)
               for name, src in sources.items()}

    def on_skip(s):
        skipped.skip(s.reason, s.where, False)
        if cfg.progress and skipped[s.reason] <= 3:
            accelerator.print(f"skipped sample: {s.where}")

    # a source with no good sample in about one pass over its data has none: stop instead of reading forever
    bad_draws = {n: min(256, max(8, math.ceil(len(src) / batch_sizes[n]))) for n, src in sources.items()}
    mixture = DatasetMixture(loaders, weights, on_skip=on_skip, max_bad_draws=bad_draws, strategy=cfg.strategy,
                             start_step=start_step)
    return schedule, loaders, mixture


def _distribute(cfg: TrainConfig, accelerator, model, total: int):
    """(the model as the step calls it, the Flamingo itself, the accelerator as a data-parallel replica sees
    it): split over a data x tensor mesh by torch's tensor parallelism (--tensor-parallel) and/or sharded by its
    FSDP2 (--fsdp; accelerate still runs the processes, devices and precision), else as
    ``accelerator.prepare`` wraps it (DDP, FSDP)."""
    if not _sharded(cfg):
        prepared = accelerator.prepare(model)
        return prepared, accelerator.unwrap_model(prepared), accelerator
    tp = cfg.tensor_parallel
    mesh, replica = None, accelerator
    if tp > 1:
        from flamingo_core.train.tensor_parallel import check_tensor_parallel, parallelize_flamingo

        check_tensor_parallel(model, tp, accelerator.num_processes, cfg.fsdp)
        mesh = build_mesh(accelerator.device, tp)
        model = parallelize_flamingo(model.to(accelerator.device), mesh["tp"])
        replica = DataParallelView(accelerator, mesh)
    if cfg.fsdp:
        model = shard_flamingo(model, accelerator.device, accelerator.mixed_precision,
                               feature_cache=bool(cfg.feature_cache), mesh=None if mesh is None else mesh["dp"])
    held = sum(local_tensor(p).numel() for p in model.parameters())
    how = ("FSDP2" if cfg.fsdp else "") + (" x " if cfg.fsdp and tp > 1 else "") + (
        f"tensor parallel {tp} (mesh data {accelerator.num_processes // tp} x tensor {tp})" if tp > 1 else "")
    print(f"{how}: process {accelerator.process_index} holds {held:,} of the {total:,} parameter values",
          flush=True)  # every process says its own
    return model, model, replica


def _held_out_source(cfg: TrainConfig, skipped):
    """The held-out pairs (default ``<data>/ltip/val.jsonl``; none when that file is missing)."""
    path = cfg.eval_data or str(Path(cfg.data) / "ltip" / "val.jsonl")
    source = build_source("eval", "pairs", path, strict=cfg.strict, skipped=skipped) if Path(path).exists() else None
    return path, source


def _optimizer(cfg: TrainConfig, model, accelerator, fsdp: bool):
    """AdamW (ZeRO-1 sharded with several DDP processes, unless ``--zero off``) and the warm-up schedule."""
    groups = param_groups(model, cfg.weight_decay, cfg.lr, cfg.gate_lr_mult, cfg.resampler_lr_mult,
                          decay=cfg.weight_decay_scope)
    zero = (cfg.zero == "on" or (cfg.zero == "auto" and accelerator.num_processes > 1)) and not (
        fsdp or _sharded(cfg))
    optimizer = build_adamw(groups, cfg.lr, zero=zero)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_constant(cfg.warmup_steps))
    sharded = ("ZeRO-1 sharded " if is_zero(optimizer) else "FSDP2 sharded " if cfg.fsdp
               else "tensor-parallel sharded " if _sharded(cfg) else "")
    accelerator.print(f"optimizer: {sharded}AdamW over "
                      f"{len(trained_parameters(model))} tensors; {accelerator.distributed_type.value}, mixed "
                      f"precision {accelerator.mixed_precision}")
    return optimizer, scheduler


def _restore(ckpt: Path, optimizer, scheduler, skipped, accelerator, fsdp: bool) -> None:
    """Put back what the checkpoint saved beside the weights: AdamW moments, the schedule, RNG, skip counts."""
    state, opt_state, rng = read_resume_state(ckpt)
    if opt_state is not None and not fsdp:
        load_optimizer_state(optimizer, opt_state)
    else:
        accelerator.print(f"note: {ckpt} has no optimizer state usable here (FSDP); AdamW moments restart from zero")
    scheduler.load_state_dict(dict(state["scheduler"], lr_lambdas=[None] * len(optimizer.param_groups)))
    restore_rng(rng, accelerator.process_index, accelerator.num_processes)
    skipped.update(state.get("skipped", {}))


class _MixtureRun:
    """``run_loop``'s ``step`` and ``save`` for stage 2: one optimizer step of the dataset mixture
    (``train_step``), and a checkpoint with the sources' data positions."""

    def __init__(self, cfg, accelerator, model, optimizer, scheduler, weights, mixture, loaders, schedule, skipped,
                 trained_names, last, replica=None):
        self.cfg, self.acc, self.model, self.optimizer, self.scheduler = cfg, accelerator, model, optimizer, scheduler
        self.replica = replica or accelerator  # the step's view: data-parallel replicas (train/mesh.py)
        self.weights, self.mixture, self.loaders, self.schedule, self.skipped = weights, mixture, loaders, schedule, skipped
        self.trained_names = trained_names
        self.trained = [p for p in accelerator.unwrap_model(model).parameters() if p.requires_grad]
        self.last = last  # each source's latest loss (round-robin: from its latest turn)

    def step(self, i: int) -> StepLog:
        batches = {n: _to(b, self.acc.device) for n, b in self.mixture.next().items()}
        packing = {f"packing/{n}": b["packing"] for n, b in batches.items() if "packing" in b}  # real tokens / window
        r = train_step(self.model, self.optimizer, batches, self.weights, accelerator=self.replica,
                       scheduler=self.scheduler, grad_clip=self.cfg.grad_clip, trained=self.trained,
                       strategy=self.cfg.strategy, fsdp=self.cfg.fsdp,
                       loss_normalisation=self.cfg.loss_normalisation)
        if r.finite:
            self.last.update(r.losses)
        # round-robin: `source` is the one dataset this step trained on (`loss` is its loss)
        turn = {"source": next(iter(r.losses))} if self.cfg.strategy == "round-robin" else {}
        return StepLog(loss=r.loss, grad_norm=r.grad_norm, finite=r.finite, losses=r.losses,
                       record={"lr": self.scheduler.get_last_lr()[0], "skipped": sum(self.skipped.values()), **turn,
                               **{f"loss/{n}": v for n, v in r.losses.items()}, **packing},
                       postfix={n: f"{v:.2f}" for n, v in r.losses.items()})

    def save(self, n: int) -> None:
        acc = self.acc
        check_finite_weights(n, [local_tensor(p) for p in self.trained], self.cfg.out,
                             reduce=(lambda t: acc.reduce(t, reduction="sum")) if acc.num_processes > 1 else None)
        extra = _extra(self.loaders, self.schedule.batches_before(n), self.skipped, self.last)
        save = save_sharded_checkpoint if _sharded(self.cfg) else save_checkpoint
        save(acc, self.model, self.optimizer, self.scheduler, n, self.cfg, extra, self.trained_names)


def train(cfg: TrainConfig, model=None, processor=None, accelerator=None) -> TrainResult:
    """Run training as configured; returns the final losses and evaluation.

    Args:
        cfg: the run's options.
        model: a Flamingo to train instead of ``create_model(cfg.model, ...)`` (tests pass tiny models).
        processor: its processor; defaults to ``model.processor``.
        accelerator: an ``accelerate.Accelerator``; one is made from the config when None.

    Raises:
        NonFiniteLossError: a step's loss or gradient norm was NaN/inf (the run's checkpoints are kept).
    """
    from accelerate.utils import DistributedType

    from contrastive_encoder.shared.records import SkipCounter
    from contrastive_encoder.shared.runlog import MetricsLogger

    t_start = time.monotonic()
    accelerator = accelerator or make_accelerator(cfg.precision, cfg.cpu, find_unused_parameters=True)
    torch.manual_seed(cfg.seed)
    world, say = accelerator.num_processes, accelerator.print
    weights = _check_inputs(cfg, accelerator, model)
    batch_sizes = source_batch_sizes(cfg, [n for n, w in weights.items() if w > 0])
    model = model if model is not None else _build_model(cfg)
    processor = processor or model.processor
    skipped, eval_skipped = SkipCounter(), SkipCounter()  # held-out rows are counted apart, same policy
    sources = build_sources(cfg, weights, skipped, video_frames=min(8, getattr(model.config, "max_frames", 8)))
    eval_path, eval_source = _held_out_source(cfg, eval_skipped)
    if cfg.grad_checkpointing:
        enable_gradient_checkpointing(model)
    counts = model.parameter_counts()
    say(f"parameters: {counts['trainable']:,} trainable, {counts['frozen']:,} frozen; sources "
        + ", ".join(f"{n}({len(s)} samples, weight {weights[n]}, batch {batch_sizes[n]})" for n, s in sources.items())
        + f"; dataset strategy {cfg.strategy}; {world} process(es)")

    ckpt = resolve_resume(cfg.resume, cfg.out) if cfg.resume else None
    # a sharded checkpoint is loaded into the sharded model below; here only its state.json is read
    resume_state = ({} if not ckpt else read_resume_state(ckpt)[0] if _sharded(cfg) else load_checkpoint(ckpt, model))
    start_step = int(resume_state.get("step", 0))
    if ckpt:
        say(f"resumed from {ckpt} (step {start_step})")
    model.train()
    trained_names = list(trained_parameters(model))
    model, unwrapped, replica = _distribute(cfg, accelerator, model, counts['trainable'] + counts['frozen'])
    fsdp = cfg.fsdp or accelerator.distributed_type == DistributedType.FSDP
    # FSDP, tensor parallel: the loss from the logits (Flamingo.label_nll)
    unwrapped.fused_head_loss = not (fsdp or _sharded(cfg))
    if cfg.feature_cache:
        unwrapped.use_feature_cache(None if cfg.feature_cache == "memory" else cfg.feature_cache)
    optimizer, scheduler = _optimizer(cfg, unwrapped, accelerator, fsdp)
    if ckpt and _sharded(cfg):
        load_sharded_checkpoint(ckpt, model, optimizer, scheduler, accelerator, trained_names)
        skipped.update(resume_state.get("skipped", {}))
    elif ckpt:
        _restore(ckpt, optimizer, scheduler, skipped, accelerator, fsdp)

    # the processes of a tensor-parallel group read the same batches: the data is split over the replicas
    schedule, loaders, mixture = _data_stream(cfg, sources, weights, batch_sizes, processor, start_step, skipped,
                                              replica)
    logger = MetricsLogger(cfg.out, enabled=accelerator.is_main_process, resume_step=start_step if ckpt else None)
    evaluate = HeldOutEvaluation(cfg, replica, model, processor, eval_source, eval_skipped, eval_path, logger,
                                 fsdp)
    run = _MixtureRun(cfg, accelerator, model, optimizer, scheduler, weights, mixture, loaders, schedule, skipped,
                      trained_names, dict(resume_state.get("losses", {})), replica)
    eval_first = evaluate(start_step) if cfg.final_eval and start_step == 0 else {}
    settings = LoopSettings(max_steps=cfg.max_steps, save_every=cfg.save_every, eval_every=cfg.eval_every,
                            log_every=cfg.log_every, progress=cfg.progress, desc="flamingo train", out=cfg.out)
    end = run_loop(settings, start_step, step=run.step, save=run.save, evaluate=evaluate,
                   log=lambda n, record: logger.log(n, **record), budget=TimeBudget(cfg.max_minutes),
                   agree=any_process(accelerator), on_nonfinite=logger.close,
                   show_progress=accelerator.is_main_process)
    final = evaluate(end.step) if cfg.final_eval else {}
    model_dir = _save_model(cfg, accelerator, unwrapped, fsdp, trained_names)
    logger.close()
    say(_summary(cfg, end, start_step, schedule, run.last, eval_first, final, skipped, model_dir, t_start))
    return TrainResult(step=end.step, losses=run.last, eval={"first": eval_first, "final": final},
                       skipped=dict(skipped), model_dir=model_dir, stopped=end.stopped)


def _save_model(cfg: TrainConfig, accelerator, model, fsdp: bool, trained_names: list[str]) -> str | None:
    """``<out>/model``: the run's own folder (claimed at the start), so an earlier run's model/ is replaced.
    --fsdp: the trained weights gathered from their shards (collective). Not under accelerate's FSDP: its
    checkpoints' model/ folders are the gathered weights."""
    model_dir = None
    weights = gathered_trained_weights(model, trained_names) if _sharded(cfg) else None
    if accelerator.is_main_process and (_sharded(cfg) or not fsdp):
        model_dir = str(model.save_pretrained(Path(cfg.out) / "model", overwrite=True, weights=weights))
    accelerator.wait_for_everyone()
    return model_dir


def _summary(cfg, end, start_step: int, schedule, last, eval_first, final, skipped, model_dir, t_start) -> str:
    turns = ""
    if cfg.strategy == "round-robin":
        before, after = schedule.batches_before(start_step), schedule.batches_before(end.step)
        turns = "round-robin steps " + ", ".join(f"{n} {after[n] - before[n]}" for n in after) + "; "
    return (f"trained {end.step - start_step} steps ({end.stopped}) in {(time.monotonic() - t_start) / 60:.1f} min; "
            + turns + ", ".join(f"{n} loss {v:.4f}" for n, v in last.items())
            + _held_out_summary(eval_first, final) + f"; {skipped.report()}"
            + (f"; model saved to {model_dir}" if model_dir else ""))


def _held_out_summary(first: dict, final: dict | None) -> str:
    """'; held-out loss A -> B', or '; held-out loss B' for a resumed run (no evaluation before it)."""
    if not final:
        return ""
    before = f"{first['eval_loss']:.4f} -> " if "eval_loss" in first else ""
    return f"; held-out loss {before}{final['eval_loss']:.4f}"
