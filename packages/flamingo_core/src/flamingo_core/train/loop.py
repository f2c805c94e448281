"""``train``: set up, resume, step, evaluate, save and summarise a stage-2 run."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from contrastive_encoder.shared.nonfinite import check_finite, check_finite_weights
from flamingo_core.data import FlamingoCollator, build_source, make_loader
from flamingo_core.lm_adapter import enable_gradient_checkpointing
from flamingo_core.mixture import (
    DEFAULT_WEIGHTS,
    DatasetMixture,
    EmptySourceError,
    SourceSchedule,
    parse_weights,
)
from flamingo_core.train.checkpoint import (
    _extra,
    _load_pt,
    check_resume_strategy,
    load_checkpoint,
    resolve_resume,
    save_checkpoint,
    trained_parameters,
)
from flamingo_core.train.config import RUN_OUTPUTS, TrainConfig, TrainResult
from flamingo_core.train.held_out import caption_eval
from flamingo_core.train.optim import param_groups, warmup_constant
from flamingo_core.train.source_specs import (
    build_sources,
    check_sources,
    parse_source_specs,
    source_batch_sizes,
)
from flamingo_core.train.step import _to, train_step
from flamingo_core.train.zero import build_adamw, is_zero, load_optimizer_state


def _precision(name: str, cpu: bool) -> str:
    if name == "auto":
        ok = not cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return "bf16" if ok else "no"
    return {"fp32": "no", "bf16": "bf16"}[name]


def train(cfg: TrainConfig, model=None, processor=None, accelerator=None) -> TrainResult:
    """Run training as configured; returns the final losses and evaluation.

    Args:
        cfg: the run's options.
        model: a Flamingo to train instead of ``create_model(cfg.preset, ...)`` (tests pass tiny models).
        processor: its processor; defaults to ``model.processor``.
        accelerator: an ``accelerate.Accelerator``; one is made from the config when None.

    Raises:
        NonFiniteLossError: a step's loss or gradient norm was NaN/inf (the run's checkpoints are kept).
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, DistributedType

    from contrastive_encoder.shared.outputs import claim_run_dir
    from contrastive_encoder.shared.records import SkipCounter
    from contrastive_encoder.shared.runlog import MetricsLogger

    t_start = time.monotonic()
    if accelerator is None:
        from accelerate.state import AcceleratorState, GradientState

        # a second run in the same process (tests, notebooks) may ask for another precision: accelerate keeps a
        # process-wide singleton, reset here (the distributed PartialState is kept)
        AcceleratorState._reset_state()
        GradientState._reset_state()
        cpu = cfg.cpu or not torch.cuda.is_available()  # accelerate sets up multi-process CPU runs only with cpu
        accelerator = Accelerator(cpu=cpu, mixed_precision=_precision(cfg.precision, cpu),
                                  kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    torch.manual_seed(cfg.seed)
    rank, world = accelerator.process_index, accelerator.num_processes
    say = accelerator.print

    weights = parse_weights(cfg.weights or DEFAULT_WEIGHTS, names=list(parse_source_specs(cfg.sources, cfg.data)))
    batch_sizes = source_batch_sizes(cfg, [n for n, w in weights.items() if w > 0])
    check_sources(cfg, weights)
    if model is None and cfg.vision_encoder and "/" in cfg.vision_encoder and not Path(cfg.vision_encoder).exists():
        raise FileNotFoundError(f"vision encoder not found: {cfg.vision_encoder} (export the stage-1 encoder there "
                                "with contrastive_encoder, or pass --vision-encoder <folder or preset>)")
    if cfg.resume:
        check_resume_strategy(resolve_resume(cfg.resume, cfg.out), cfg.strategy)
    # before loading any model: a bad --out costs seconds, not a training run
    claim_run_dir(accelerator, cfg.out, "flamingo train", RUN_OUTPUTS, resume=bool(cfg.resume),
                  overwrite=cfg.overwrite, legacy=("checkpoints/step_*/state.json",))

    if model is None:
        from flamingo_core.config import load_config
        from flamingo_core.flamingo import create_model

        # names go into the config (create_model's vision_encoder= / lm= take built modules)
        overrides = {k: v for k, v in (("vision_encoder", cfg.vision_encoder), ("lm", cfg.lm)) if v}
        model = create_model(load_config(cfg.preset, **overrides))
    processor = processor or model.processor
    skipped = SkipCounter()
    max_frames = getattr(getattr(model, "config", None), "max_frames", 8)
    sources = build_sources(cfg, weights, skipped, video_frames=min(8, max_frames))
    eval_path = cfg.eval_data or str(Path(cfg.data) / "ltip" / "val.jsonl")
    eval_skipped = SkipCounter()  # held-out rows: counted apart from the training data's, same policy
    eval_source = (build_source("eval", "pairs", eval_path, strict=cfg.strict, skipped=eval_skipped)
                   if Path(eval_path).exists() else None)
    if cfg.grad_checkpointing:
        enable_gradient_checkpointing(model)
    counts = {"trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
              "frozen": sum(p.numel() for p in model.parameters() if not p.requires_grad)}
    say(f"parameters: {counts['trainable']:,} trainable, {counts['frozen']:,} frozen; sources "
        + ", ".join(f"{n}({len(s)} samples, weight {weights[n]}, batch {batch_sizes[n]})" for n, s in sources.items())
        + f"; dataset strategy {cfg.strategy}; {world} process(es)")

    start_step, resume_state = 0, None
    if cfg.resume:
        ckpt = resolve_resume(cfg.resume, cfg.out)
        resume_state = load_checkpoint(ckpt, model)
        start_step = int(resume_state["step"])
        say(f"resumed from {ckpt} (step {start_step})")

    model.train()
    trained_names = list(trained_parameters(model))
    model = accelerator.prepare(model)
    unwrapped = accelerator.unwrap_model(model)
    fsdp = accelerator.distributed_type == DistributedType.FSDP
    use_zero = cfg.zero == "on" or (cfg.zero == "auto" and world > 1)
    groups = param_groups(unwrapped, cfg.weight_decay, cfg.lr, cfg.gate_lr_mult, cfg.resampler_lr_mult)
    optimizer = build_adamw(groups, cfg.lr, zero=use_zero and not fsdp)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_constant(cfg.warmup_steps))
    say(f"optimizer: {'ZeRO-1 sharded ' if is_zero(optimizer) else ''}AdamW over {len(trained_parameters(unwrapped))} "
        f"tensors; {accelerator.distributed_type.value}, mixed precision {accelerator.mixed_precision}")
    if resume_state is not None:
        ckpt = resolve_resume(cfg.resume, cfg.out)
        if (ckpt / "optimizer.pt").is_file() and not fsdp:
            load_optimizer_state(optimizer, _load_pt(ckpt / "optimizer.pt"))
        else:
            say(f"note: {ckpt} has no optimizer state usable here (FSDP); AdamW moments restart from zero")
        scheduler.load_state_dict(dict(resume_state["scheduler"], lr_lambdas=[None] * len(optimizer.param_groups)))
        rng = _load_pt(ckpt / "rng.pt")
        if int(resume_state.get("world_size", 1)) == world:
            torch.set_rng_state(rng["cpu"][rank])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
        skipped.update(resume_state.get("skipped", {}))

    media_id = processor.media_token_id
    schedule = SourceSchedule({n: weights[n] for n in sources}, cfg.strategy)
    drawn = schedule.batches_before(start_step)  # round-robin: each source has given a batch at its turns only
    loaders = {name: make_loader(src, FlamingoCollator(processor, src.max_tokens, media_id), batch_sizes[name],
                                 rank, world, cfg.seed, drawn[name], cfg.num_workers)
               for name, src in sources.items()}

    def on_skip(s):
        skipped.skip(s.reason, s.where, False)
        if cfg.progress and skipped[s.reason] <= 3:
            accelerator.print(f"skipped sample: {s.where}")

    # a source with no good sample in about one pass over its data has none: stop instead of reading forever
    bad_draws = {n: min(256, max(8, math.ceil(len(src) / batch_sizes[n]))) for n, src in sources.items()}
    mixture = DatasetMixture(loaders, weights, on_skip=on_skip, max_bad_draws=bad_draws, strategy=cfg.strategy,
                             start_step=start_step)
    logger = MetricsLogger(cfg.out, enabled=accelerator.is_main_process,
                           resume_step=start_step if cfg.resume else None)
    trained = [p for p in unwrapped.parameters() if p.requires_grad]

    noted_eval_skips: list[bool] = []  # say it once, not at every evaluation

    def evaluate(step: int) -> dict[str, Any]:
        if eval_source is None:
            return {}
        eval_model = model if fsdp else unwrapped
        r = caption_eval(eval_model, processor, eval_source, cfg.eval_samples, cfg.num_captions, cfg.batch_size,
                         accelerator.device, rank, world, generate=not fsdp)
        tot = torch.tensor([r["loss_sum"], r["loss_count"]], dtype=torch.float64, device=accelerator.device)
        tot = accelerator.reduce(tot, reduction="sum") if world > 1 else tot
        out = {"eval_loss": float(tot[0] / max(tot[1], 1))}
        out.update({k: r[k] for k in ("colour_acc", "visual_std", "captions") if k in r})
        if accelerator.is_main_process and (r["skipped"] or sum(eval_skipped.values())) and not noted_eval_skips:
            noted_eval_skips.append(True)
            say(f"note: held-out data {eval_path}: {r['skipped']} of the first {cfg.eval_samples} samples have "
                f"unreadable media; rows skipped when read: {eval_skipped.report()}")
        if accelerator.is_main_process:
            logger.log(step, **{k: v for k, v in out.items() if k != "captions"},
                       captions=json.dumps(out.get("captions", [])))
            say(f"step {step}: held-out caption loss {out['eval_loss']:.4f}"
                + (f", colour accuracy {out['colour_acc']:.1%}" if "colour_acc" in out else "")
                + (f", visual tokens' std across images {out['visual_std']:.3f}" if "visual_std" in out else ""))
            for c in out.get("captions", [])[:cfg.num_captions]:
                say(f"  ref: {c['reference']!r}\n  gen: {c['generated']!r}")
        accelerator.wait_for_everyone()
        return out

    def checkpoint(step: int) -> None:
        check_finite_weights(step, trained, cfg.out,
                             reduce=(lambda t: accelerator.reduce(t, reduction="sum")) if world > 1 else None)
        save_checkpoint(accelerator, model, optimizer, scheduler, step, cfg,
                        _extra(loaders, schedule.batches_before(step), skipped, last), trained_names)

    eval_first = evaluate(start_step) if cfg.final_eval and start_step == 0 else {}
    progress = None
    if cfg.progress and accelerator.is_main_process:
        from tqdm.auto import tqdm

        progress = tqdm(total=cfg.max_steps, initial=start_step, desc="flamingo train", dynamic_ncols=True)
    # each source's latest loss (round-robin: from its latest turn, also one before a resume)
    step, last, stopped = start_step, dict(resume_state.get("losses", {})) if resume_state else {}, "max_steps"
    t_loop = time.monotonic()
    while step < cfg.max_steps:
        try:
            batches = {n: _to(b, accelerator.device) for n, b in mixture.next().items()}
        except EmptySourceError:
            if progress is not None:  # end the bar's line, so the error is a line of its own
                progress.close()
            raise
        over = cfg.max_minutes > 0 and (time.monotonic() - t_start) / 60 >= cfg.max_minutes
        result = train_step(model, optimizer, batches, weights, accelerator=accelerator, scheduler=scheduler,
                            grad_clip=cfg.grad_clip, trained=trained, stop=over, strategy=cfg.strategy)
        if result is None:
            stopped = "max_minutes"
            break
        per_source, total, grad_norm = result.losses, result.loss, result.grad_norm
        if not result.finite:  # train_step did not apply the update
            if progress is not None:
                progress.close()
            logger.log(step + 1, loss=total, grad_norm=grad_norm, stopped="non-finite")
            logger.close()
            check_finite(step + 1, {**per_source, "weighted sum": total}, grad_norm, cfg.out)
        step += 1
        last.update(per_source)
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{total:.3f}", **{n: f"{v:.2f}" for n, v in per_source.items()})
        if step % cfg.log_every == 0 or step == cfg.max_steps:
            elapsed = time.monotonic() - t_loop
            # round-robin: `source` is the one dataset this step trained on (`loss` is its loss)
            turn = {"source": next(iter(per_source))} if cfg.strategy == "round-robin" else {}
            logger.log(step, loss=total, lr=scheduler.get_last_lr()[0], grad_norm=grad_norm,
                       steps_per_s=(step - start_step) / max(elapsed, 1e-9), skipped=sum(skipped.values()),
                       **turn, **{f"loss/{n}": v for n, v in per_source.items()})
        if cfg.save_every > 0 and step % cfg.save_every == 0:
            checkpoint(step)
        if cfg.eval_every > 0 and step % cfg.eval_every == 0 and step < cfg.max_steps:
            evaluate(step)
    if progress is not None:
        progress.close()
    if step > start_step and not (cfg.save_every > 0 and step % cfg.save_every == 0):
        checkpoint(step)
    final = evaluate(step) if cfg.final_eval else {}
    model_dir = None
    if accelerator.is_main_process and hasattr(unwrapped, "save_pretrained") and not fsdp:
        # the run's own folder (claimed at the start), so an earlier run's model/ there is replaced
        model_dir = str(unwrapped.save_pretrained(Path(cfg.out) / "model", overwrite=True))
    accelerator.wait_for_everyone()
    logger.close()
    turns = ""
    if cfg.strategy == "round-robin":
        before, after = schedule.batches_before(start_step), schedule.batches_before(step)
        turns = "round-robin steps " + ", ".join(f"{n} {after[n] - before[n]}" for n in after) + "; "
    summary = (f"trained {step - start_step} steps ({stopped}) in {(time.monotonic() - t_start) / 60:.1f} min; "
               + turns + ", ".join(f"{n} loss {v:.4f}" for n, v in last.items())
               + _held_out_summary(eval_first, final) + f"; {skipped.report()}"
               + (f"; model saved to {model_dir}" if model_dir else ""))
    say(summary)
    return TrainResult(step=step, losses=last, eval={"first": eval_first, "final": final},
                       skipped=dict(skipped), model_dir=model_dir, stopped=stopped)


def _held_out_summary(first: dict, final: dict | None) -> str:
    """'; held-out loss A -> B', or '; held-out loss B' for a resumed run (no evaluation before it)."""
    if not final:
        return ""
    before = f"{first['eval_loss']:.4f} -> " if "eval_loss" in first else ""
    return f"; held-out loss {before}{final['eval_loss']:.4f}"
