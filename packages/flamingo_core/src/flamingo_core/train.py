"""Training Flamingo (arXiv 2204.14198, Section 3 and Appendix B.1.2) on the weighted dataset mixture with
accelerate: one process, DDP (+ ZeRO stage 1 optimizer sharding) on CPU or GPUs, or FSDP through an accelerate
config (``configs/accelerate/``).

Recipe (paper -> here): AdamW, weight decay on the GATED XATTN-DENSE matrices only (not the resampler, norms,
gates, biases or token rows); linear warm-up then constant learning rate; gradient clipping (global norm 1)
per optimizer step; bf16 autocast with fp32 parameters where the hardware has bf16; the accumulation
strategy over datasets (``flamingo_core.mixture``), or, for the paper's Table 3 ablation, ``--strategy
round-robin``: each step trains on one dataset, turns in proportion to the weights (``SourceSchedule``).

Checkpoints (``<out>/checkpoints/step_N/``, written atomically): ``trained.safetensors`` (the trained
parameters only), ``optimizer.pt`` (full AdamW state, read with ``weights_only=True``), ``rng.pt`` (torch RNG
of every process) and ``state.json`` (step, scheduler, data positions, skip counts, config). Resuming
restores all of it, so a resumed run equals an uninterrupted one. A NaN/inf loss or gradient norm stops the
run before the optimizer step, leaving the last good checkpoint as the newest. Under FSDP the trained
parameters are gathered for the checkpoint but the sharded optimizer state is not saved (a resumed FSDP run
restarts the AdamW moments), and ``<out>/model`` is not written (load the last checkpoint instead).

Usage: ``flamingo train --data data/world --vision-encoder runs/stage1/export --max-minutes 16``;
multi-process: ``accelerate launch --config_file configs/accelerate/ddp_cpu_2proc.yaml -m flamingo_core.train``
or ``torchrun --nproc_per_node 2 -m flamingo_core.train --cpu``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from contrastive_encoder.shared.argtypes import (
    OneLineParser,
    fraction,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)
from contrastive_encoder.shared.nonfinite import (
    EXIT_NONFINITE,
    NonFiniteLossError,
    check_finite,
    check_finite_weights,
)
from flamingo_core.data import EOC, IGNORE_INDEX, FlamingoCollator, build_source, make_loader
from flamingo_core.mixture import (
    DEFAULT_WEIGHTS,
    STRATEGIES,
    DatasetMixture,
    EmptySourceError,
    SourceSchedule,
    accumulate_gradients,
    parse_weights,
    token_nll,
)
from flamingo_core.zero import build_adamw, is_zero, load_optimizer_state, optimizer_state_dict

__all__ = [
    "NonFiniteLossError",
    "TrainConfig",
    "TrainResult",
    "caption_eval",
    "check_resume_strategy",
    "default_sources",
    "enable_gradient_checkpointing",
    "load_checkpoint",
    "build_parser",
    "main",
    "param_groups",
    "StepResult",
    "train",
    "train_step",
    "visual_token_spread",
]

SOURCE_KINDS = {"m3w": "interleaved", "ltip": "pairs", "align": "pairs", "vtp": "video"}
MAX_TOKENS = {"interleaved": 256, "pairs": 64, "video": 32}  # paper: 256 for M3W; 32 for VTP
# what a run writes in its folder (glob patterns): all that --overwrite deletes there
RUN_OUTPUTS = ("checkpoints/step_*", "metrics.jsonl", "model", "tensorboard/events.out.tfevents.*")

@dataclass
class TrainConfig:
    """Every option of a training run; the CLI flags map one to one."""

    data: str = "data/world"  # ShapesWorld root (docs/formats.md)
    sources: list[str] = field(default_factory=list)  # NAME=KIND:SPEC overrides/additions
    weights: str | None = None  # NAME=W,...; default m3w 1.0, ltip 0.2, align 0.2, vtp 0.03
    # dataset strategy (paper Table 3): accumulation (every step: one batch per source, lambda-weighted losses
    # summed) | round-robin (every step: one source's batch, turns in proportion to the weights)
    strategy: str = "accumulation"
    eval_data: str | None = None  # held-out image-text pairs; default <data>/ltip/val.jsonl
    out: str = "runs/flamingo"  # run folder
    preset: str = "smollm2"  # Flamingo preset (flamingo_core/presets) or JSON file
    vision_encoder: str | None = "runs/stage1/export"  # stage-1 export folder or preset; None = preset's
    lm: str | None = None  # frozen LM name; None = preset's
    batch_size: int = 4  # samples per process per step for image-text pairs (see source_batch_sizes)
    batch_sizes: str | None = None  # NAME=N,... per-source overrides (default: m3w batch/4, vtp batch/2)
    # Learning rates and batch for a budget of minutes, not the paper's 500k steps at 1e-4 (2 CPU cores,
    # ShapesWorld, SmolLM2; benchmarks in the flamingo_core README):
    # - the resampler at the full rate collapsed to one output for every image within 100 steps; at 0.01x it
    #   keeps the image information;
    # - the visual path is limited by the tanh gates: from 0, Adam moves a gate by at most its learning rate per
    #   step, and less when its gradient's sign is noisy. LTIP only, 80 steps: gates at 10x -> colour named in
    #   39% of held-out captions, at 100x -> 84% (multiplying the cross-attention output weights by 10 instead:
    #   77%), so the gates get 100x;
    # - the run is limited by optimizer steps rather than samples: batch 4 (M3W 1, VTP 2) made 97 mixture steps
    #   in 8 minutes against 57 at batch 8, with colour 23% against 14% (gates 10x).
    lr: float = 1e-3  # peak learning rate
    gate_lr_mult: float = 100.0  # the tanh gates' learning rate = lr * this (they start at 0 and move ~lr per step)
    resampler_lr_mult: float = 0.01  # the Perceiver Resampler's learning rate = lr * this
    warmup_steps: int = 10  # linear warm-up steps, then constant
    weight_decay: float = 0.1  # on cross-attention matrices only
    grad_clip: float = 1.0  # global gradient-norm clip per optimizer step (0 = off)
    max_steps: int = 100_000  # optimizer steps (the time budget usually ends the run first)
    max_minutes: float = 16.0  # wall-clock budget (from start) for training, 0 = none; the default fits the
    # 20-minute benchmark on 2 cores: model loading + 16 min of steps + the final evaluation
    precision: str = "auto"  # auto | fp32 | bf16 (autocast, parameters stay fp32)
    grad_checkpointing: bool = False  # recompute LM activations in backward
    zero: str = "auto"  # ZeRO-1 optimizer sharding: auto (on when >1 DDP process) | on | off
    cpu: bool = False  # force CPU even when a GPU is present
    seed: int = 0  # data order, sample randomness and RNG
    num_workers: int = 0  # DataLoader workers per source
    strict: bool = False  # raise on the first corrupt sample instead of skipping it
    resume: str | None = None  # 'latest' or a checkpoint folder
    overwrite: bool = False  # replace a previous run in `out` (its own files only) / write into a non-empty folder
    save_every: int = 200  # checkpoint every N steps (and at the end)
    keep_checkpoints: int = 2  # newest checkpoints kept (0 = all)
    eval_every: int = 200  # held-out loss + sample captions every N steps (0 = only at start and end)
    eval_samples: int = 64  # held-out pairs for the loss and colour accuracy
    num_captions: int = 4  # sample captions logged per evaluation
    final_eval: bool = True  # evaluate before the first and after the last step
    log_every: int = 10  # metrics.jsonl record every N steps
    # M3W: probability a sequence's text attends to the next image instead of the previous one. The paper draws
    # it with p_next = 1/2 (Appendix A.3.2) for web pages, where an image's text may come before or after it.
    # ShapesWorld pages (like OBELICS-style captions) always describe an image right after it, so every "next"
    # sequence would pair each description with the wrong image: the default is 0; use 0.5 for web documents.
    p_next: float = 0.0
    video_frames: int = 0  # VTP frames per clip at 1 FPS (paper: 8); 0 = the model's max_frames
    progress: bool = True  # tqdm progress bar


@dataclass
class TrainResult:
    step: int
    losses: dict[str, float]
    eval: dict[str, Any]
    skipped: dict[str, int]
    model_dir: str | None
    stopped: str  # "max_steps" | "max_minutes"


# ---------------------------------------------------------------- data


def default_sources(root: str | Path) -> dict[str, tuple[str, str]]:
    """The ShapesWorld layout: name -> (kind, path) for M3W, LTIP, ALIGN and VTP training files."""
    root = Path(root)
    return {
        "m3w": ("interleaved", str(root / "m3w" / "train.jsonl")),
        "ltip": ("pairs", str(root / "ltip" / "train.jsonl")),
        "align": ("pairs", str(root / "align" / "train.jsonl")),
        "vtp": ("video", str(root / "vtp" / "train.jsonl")),
    }


def parse_source_specs(specs: list[str], root: str) -> dict[str, tuple[str, str]]:
    """Default layout under ``root`` plus ``NAME=KIND:SPEC`` entries (``ltip=pairs:shards/{00..09}.tar``)."""
    sources = default_sources(root)
    for s in specs:
        name, sep, rest = s.partition("=")
        kind, sep2, spec = rest.partition(":")
        if not sep or not sep2 or not name or kind not in ("interleaved", "pairs", "video"):
            raise ValueError(f"--source {s!r}: expected NAME=KIND:SPEC with KIND interleaved|pairs|video")
        sources[name] = (kind, spec)
    return sources


def source_batch_sizes(cfg: TrainConfig, names: list[str]) -> dict[str, int]:
    """Per-source batch sizes. By default sources get about the same token budget per step: an M3W sequence
    (256 tokens, up to 5 images) counts as four captions, a video clip (8 frames) as two."""
    kinds = parse_source_specs(cfg.sources, cfg.data)
    ratio = {"interleaved": 4, "video": 2, "pairs": 1}
    sizes = {n: max(1, cfg.batch_size // ratio[kinds[n][0]]) for n in names}
    if cfg.batch_sizes:
        for part in cfg.batch_sizes.split(","):
            name, sep, value = part.partition("=")
            if not sep or not value.strip().isdigit() or int(value) < 1:
                raise ValueError(f"--batch-sizes entry {part!r}: expected NAME=N with N >= 1, e.g. m3w=2")
            if name.strip() not in kinds:
                raise ValueError(f"--batch-sizes names unknown source {name.strip()!r}; sources are {list(kinds)}")
            sizes[name.strip()] = int(value)
    return sizes


def check_sources(cfg: TrainConfig, weights: dict[str, float]) -> None:
    """Fail early (before loading models) when a source with weight > 0 does not exist."""
    for name, (_, spec) in parse_source_specs(cfg.sources, cfg.data).items():
        if weights.get(name, 0.0) > 0 and not (spec.startswith("hf:") or any(c in spec for c in "*?{")
                                               or Path(spec).exists()):
            raise FileNotFoundError(f"training source {name!r} not found: {spec} (give --weights {name}=0 to "
                                    f"train without it, or --data / --source to point at it)")


def build_sources(cfg: TrainConfig, weights: dict[str, float], skipped, video_frames: int = 8) -> dict[str, Any]:
    check_sources(cfg, weights)
    out = {}
    for name, (kind, spec) in parse_source_specs(cfg.sources, cfg.data).items():
        if weights.get(name, 0.0) <= 0:
            continue
        opts: dict[str, Any] = {"max_tokens": MAX_TOKENS[kind]}
        if kind == "interleaved":
            opts["p_next"] = cfg.p_next
        if kind == "video":
            opts["num_frames"] = cfg.video_frames or video_frames
        out[name] = build_source(name, kind, spec, strict=cfg.strict, skipped=skipped, **opts)
    return out


# ---------------------------------------------------------------- optimizer


def param_groups(model: torch.nn.Module, weight_decay: float, lr: float | None = None,
                 gate_lr_mult: float = 1.0, resampler_lr_mult: float = 1.0) -> list[dict[str, Any]]:
    """AdamW groups: decay on the matrices of the GATED XATTN-DENSE blocks, none elsewhere.

    The paper applies weight decay to the cross-attention layers but not to the Perceiver Resampler; norms,
    tanh gates, biases and the new token rows are never decayed. Two optional learning-rate multipliers (each
    makes its own group; both need ``lr``):

    - ``gate_lr_mult``: the tanh gates (``alpha_xattn``, ``alpha_dense``). Adam moves a gate by about its
      learning rate per step, so from 0 it needs many steps before the LM hears the images.
    - ``resampler_lr_mult``: the Perceiver Resampler. Early in training the cheapest way to lower the loss is
      to learn the captions' wording; at a high learning rate the resampler is then pulled into emitting the
      same tokens for every image (a learned bias), and the image information is lost.
    """
    from flamingo_core.gated_xattn import GatedCrossAttentionBlock

    decay_ids, gate_ids = set(), set()
    for module in model.modules():
        if isinstance(module, GatedCrossAttentionBlock):
            decay_ids.update(id(p) for p in module.parameters() if p.ndim >= 2)
            if gate_lr_mult != 1.0:
                gate_ids.update({id(module.alpha_xattn), id(module.alpha_dense)})
    resampler = getattr(model, "perceiver", None)
    resampler_ids = {id(p) for p in resampler.parameters()} if resampler is not None and resampler_lr_mult != 1.0 \
        else set()
    if (gate_ids or resampler_ids) and lr is None:
        raise ValueError("param_groups: gate_lr_mult / resampler_lr_mult need the base lr")
    decay, no_decay, gates, resampler_params = [], [], [], []
    for p in model.parameters():
        if p.requires_grad:
            group = (gates if id(p) in gate_ids else resampler_params if id(p) in resampler_ids
                     else decay if id(p) in decay_ids else no_decay)
            group.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if gates:
        groups.append({"params": gates, "weight_decay": 0.0, "lr": lr * gate_lr_mult})
    if resampler_params:
        groups.append({"params": resampler_params, "weight_decay": 0.0, "lr": lr * resampler_lr_mult})
    return groups


def warmup_constant(warmup_steps: int):
    """LR multiplier: linear from 1/warmup to 1 over ``warmup_steps``, then 1 (paper: warm-up, then constant)."""
    return lambda step: min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0


# ---------------------------------------------------------------- checkpoints


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


# ---------------------------------------------------------------- evaluation


def _colour_words(records: list[dict]) -> list[str]:
    colours = {o.get("colour") for r in records for o in (r.get("scene") or {}).get("objects", [])}
    return sorted(c for c in colours if c)


def first_colour(text: str, colours: list[str]) -> str | None:
    words = [w.strip(".,;:!?").lower() for w in text.split()]
    return next((w for w in words if w in colours), None)


@torch.no_grad()
def visual_token_spread(model, media: torch.Tensor) -> float:
    """How much the resampler's output differs between images: the std across the batch of each visual-token
    feature, averaged. Near 0 means every image gets the same tokens (a collapsed resampler, which the LM can
    only use as a bias); compare with the value at initialisation.

    Args:
        model: a ``Flamingo`` (``encode_media``).
        media: (B, N, T, C, H, W) pixels; the first medium of each sample is used. B >= 2.
    """
    tokens = model.encode_media(media[:, :1].to(model.device))  # (B, 1, R, d)
    return float(tokens.float().std(dim=0).mean())


@torch.no_grad()
def caption_eval(model, processor, source, num_samples: int, num_captions: int, batch_size: int,
                 device, rank: int = 0, world_size: int = 1, generate: bool = True) -> dict[str, Any]:
    """Held-out caption loss (token mean over ``<image>caption<EOC>``) and greedy captions.

    The loss is computed on every process over its shard (sums all-reduced by the caller through the returned
    ``loss_sum`` / ``loss_count``). Greedy captions of the first ``num_samples`` images give ``colour_acc``:
    the fraction whose first colour word is the main object's colour (``scene.objects[0].colour``).
    ``visual_std`` is ``visual_token_spread`` over up to 16 of the held-out images.
    """
    from flamingo_core.data import make_labels

    model_was_training = model.training
    model.eval()
    n = min(num_samples, len(source))
    loaded = [source.load(i, random.Random(i)) for i in range(n)]
    good = [x for x in loaded if isinstance(x, tuple)]
    bad = [x for x in loaded if not isinstance(x, tuple)]  # SkippedSample: corrupt or missing media
    if n and not good:  # a loss of 0 over no tokens would read as a perfect model
        raise ValueError(f"held-out data: none of its first {n} samples is readable (first: {bad[0].where}: "
                         f"{bad[0].reason}); fix --eval-data, or give --no-eval")
    mine = good[rank::world_size]
    loss_sum, loss_count = 0.0, 0
    media_id = processor.media_token_id
    for k in range(0, len(mine), batch_size):
        chunk = mine[k: k + batch_size]
        enc = processor([items for items, _ in chunk], padding_side="right")
        enc = {k2: (v.to(device) if torch.is_tensor(v) else v) for k2, v in enc.items()}
        labels = make_labels(enc["input_ids"], enc["attention_mask"], [media_id])
        s, c = token_nll(model, dict(enc, labels=labels))
        loss_sum, loss_count = loss_sum + float(s), loss_count + int(c)
    result: dict[str, Any] = {"loss_sum": loss_sum, "loss_count": loss_count, "skipped": len(bad)}
    if generate and rank == 0 and hasattr(model, "encode_media") and len(good) >= 2:  # not under FSDP (sharded)
        enc = processor([[items[0]] for items, _ in good[:16]])
        if enc.get("media") is not None:
            result["visual_std"] = visual_token_spread(model, enc["media"])
    if generate and rank == 0 and hasattr(model, "generate"):
        colours = _colour_words([m for _, m in good])
        samples, correct, judged = [], 0, 0
        gen_set = good if colours else good[:num_captions]
        for k in range(0, len(gen_set), batch_size):
            chunk = gen_set[k: k + batch_size]
            enc = processor([[items[0]] for items, _ in chunk], padding_side="left")
            new = model.generate(enc["input_ids"].to(device), enc["attention_mask"].to(device),
                                 enc["media"].to(device), max_new_tokens=16)
            texts = processor.decode(new)
            for (items, meta), text in zip(chunk, texts):
                ref = items[1].replace(EOC, "")
                if len(samples) < num_captions:
                    samples.append({"reference": ref, "generated": text})
                objects = (meta.get("scene") or {}).get("objects") or []
                if colours and objects and objects[0].get("colour"):
                    judged += 1
                    correct += first_colour(text, colours) == objects[0]["colour"]
        result["captions"] = samples
        if judged:
            result["colour_acc"] = correct / judged
            result["colour_judged"] = judged
    model.train(model_was_training)
    return result


# ---------------------------------------------------------------- the loop


def _precision(name: str, cpu: bool) -> str:
    if name == "auto":
        ok = not cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return "bf16" if ok else "no"
    return {"fp32": "no", "bf16": "bf16"}[name]


def enable_gradient_checkpointing(model) -> int:
    """Recompute each decoder layer (and its GATED XATTN-DENSE block) in backward instead of storing its
    activations. Returns the number of layers wrapped.

    The frozen LM stays in eval mode, so Hugging Face's own checkpointing (active only in training mode) does not
    apply; the layers are wrapped with non-reentrant ``torch.utils.checkpoint`` here. The media context the
    cross-attention reads is captured at forward time and restored for the recomputation.
    """
    import functools

    from torch.utils.checkpoint import checkpoint

    from flamingo_core.lm_adapter import find_decoder_layers

    if hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable()
        return -1
    _, _, layers = find_decoder_layers(model.lm)

    def forward(layer, original, *args, **kwargs):
        if not torch.is_grad_enabled():
            return original(*args, **kwargs)
        ctx = getattr(layer, "media_context", None)

        def run(*a, **kw):
            before = getattr(layer, "media_context", None)
            if ctx is not None:
                object.__setattr__(layer, "media_context", ctx)
            try:
                return original(*a, **kw)
            finally:
                if ctx is not None:
                    object.__setattr__(layer, "media_context", before)

        return checkpoint(run, *args, use_reentrant=False, **kwargs)

    for layer in layers:
        if not getattr(layer, "_flamingo_checkpointed", False):
            layer.forward = functools.partial(forward, layer, layer.forward)
            object.__setattr__(layer, "_flamingo_checkpointed", True)
    return len(layers)


def _to(batch: dict[str, Any], device) -> dict[str, Any]:
    return {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}


@dataclass
class StepResult:
    losses: dict[str, float]  # per-source mean NLL over the global batch
    loss: float  # sum_m lambda_m * loss_m (round-robin: the one source's loss)
    grad_norm: float  # before clipping
    finite: bool  # False: the update was NOT applied
    tokens: int  # label tokens in the global batch


def train_step(model, optimizer, batches: dict[str, dict[str, Any]], weights: dict[str, float], *,
               accelerator=None, scheduler=None, grad_clip: float = 1.0, trained: list | None = None,
               stop: bool = False, strategy: str = "accumulation") -> StepResult | None:
    """One optimizer step of the mixture: accumulate ``lambda_m * loss_m`` over the sources' batches, clip,
    and step, unless the loss or gradient norm is non-finite (then gradients are dropped and ``finite`` is False).

    With ``strategy="round-robin"`` ``batches`` holds the one source whose turn it is (``DatasetMixture``) and
    its loss gets weight 1: the weights already chose how often that source's turn comes (``SourceSchedule``).

    Collective under DDP (every process must call it). ``stop=True`` on any process makes every process return
    None before doing any work (the time budget). Used by ``train`` and by ``benchmarks/bench_train_flamingo.py``.
    """
    from accelerate import Accelerator

    accelerator = accelerator or Accelerator(cpu=not torch.cuda.is_available())
    world = accelerator.num_processes
    device = accelerator.device
    names = [n for n in batches if weights.get(n, 0.0) > 0]
    if strategy == "round-robin" and len(names) != 1:
        raise ValueError(f"a round-robin step trains on one source, got batches of {names}")
    weights = SourceSchedule(weights, strategy).loss_weights(names)  # the factor on each source's loss
    trained = trained if trained is not None else [p for p in model.parameters() if p.requires_grad]
    local = [float((batches[n]["labels"][:, 1:] != IGNORE_INDEX).sum()) for n in names]
    agreed = torch.tensor(local + [float(stop)], dtype=torch.float64, device=device)
    agreed = accelerator.reduce(agreed, reduction="sum") if world > 1 else agreed
    if agreed[-1] > 0:
        return None
    global_counts = {n: int(agreed[i]) for i, n in enumerate(names)}
    losses = accumulate_gradients(
        model, batches, weights, global_counts=global_counts, world_size=world,
        backward=accelerator.backward, no_sync=lambda: accelerator.no_sync(model), autocast=accelerator.autocast)
    grad_norm = float(accelerator.clip_grad_norm_(trained, grad_clip if grad_clip > 0 else float("inf")))
    sums = torch.tensor([losses[n].sum_nll for n in names], dtype=torch.float64, device=device)
    sums = accelerator.reduce(sums, reduction="sum") if world > 1 else sums
    per_source = {n: float(sums[i]) / max(global_counts[n], 1) for i, n in enumerate(names)}
    total = sum(weights[n] * per_source[n] for n in names)
    finite = math.isfinite(total) and math.isfinite(grad_norm)
    if finite:
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return StepResult(per_source, total, grad_norm, finite, sum(global_counts.values()))


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


# ---------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = OneLineParser(prog="flamingo train", description="Train Flamingo's resampler and cross-attention "
                                "on the weighted M3W / LTIP / ALIGN / VTP mixture.")
    p.add_argument("--data", default=d.data, help="ShapesWorld root with m3w/ ltip/ align/ vtp/ (docs/formats.md)")
    p.add_argument("--source", dest="sources", action="append", default=[], metavar="NAME=KIND:SPEC",
                   help="add or replace a source; KIND interleaved|pairs|video, SPEC a .jsonl, WebDataset shards "
                        "(dir/{000..009}.tar) or hf:<save_to_disk folder>; repeatable")
    p.add_argument("--weights", default=None, help="dataset weights NAME=W,... (default m3w=1,ltip=0.2,align=0.2,"
                                                    "vtp=0.03; 0 drops a source)")
    p.add_argument("--strategy", choices=STRATEGIES, default=d.strategy,
                   help="dataset strategy (paper Table 3): accumulation = every step sums the weighted losses of "
                        "one batch per source; round-robin = every step trains on one source's batch, the "
                        "sources taking turns in proportion to their weights (as stage 1's --strategy)")
    p.add_argument("--eval-data", default=None, help="held-out image-text JSONL (default <data>/ltip/val.jsonl)")
    p.add_argument("--out", default=d.out, help="run folder: checkpoints/, metrics.jsonl, model/")
    p.add_argument("--preset", default=d.preset, help="Flamingo preset name or JSON config (e.g. smollm2, tiny)")
    p.add_argument("--vision-encoder", default=d.vision_encoder,
                   help="frozen vision encoder: the stage-1 export folder or a preset ('' = the preset's)")
    p.add_argument("--lm", default=None, help="frozen causal LM name or folder (default: the preset's)")
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size,
                   help="samples per process per step for image-text pairs; M3W gets a quarter, VTP half")
    p.add_argument("--batch-sizes", default=None, help="per-source batch sizes NAME=N,... (e.g. m3w=2,vtp=4)")
    p.add_argument("--lr", type=positive_float, default=d.lr, help="peak learning rate after warm-up")
    p.add_argument("--gate-lr-mult", type=positive_float, default=d.gate_lr_mult,
                   help="learning rate of the tanh gates as a multiple of --lr")
    p.add_argument("--resampler-lr-mult", type=positive_float, default=d.resampler_lr_mult,
                   help="learning rate of the Perceiver Resampler as a multiple of --lr")
    p.add_argument("--warmup-steps", type=non_negative_int, default=d.warmup_steps, help="linear warm-up steps")
    p.add_argument("--weight-decay", type=non_negative_float, default=d.weight_decay, help="AdamW decay on cross-attention matrices")
    p.add_argument("--grad-clip", type=non_negative_float, default=d.grad_clip, help="max global gradient norm (0 = no clipping)")
    p.add_argument("--max-steps", type=non_negative_int, default=d.max_steps, help="optimizer steps")
    p.add_argument("--max-minutes", type=non_negative_float, default=d.max_minutes,
                   help="stop training after this many minutes from start (0 = no limit)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default=d.precision,
                   help="bf16 autocast with fp32 parameters; auto = bf16 on GPUs that support it")
    p.add_argument("--grad-checkpointing", action="store_true", help="recompute LM activations during backward")
    p.add_argument("--zero", choices=["auto", "on", "off"], default=d.zero,
                   help="ZeRO-1 optimizer-state sharding (auto: on with more than one process)")
    p.add_argument("--cpu", action="store_true", help="train on CPU even if a GPU is present")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of data order and initialisation")
    p.add_argument("--num-workers", type=non_negative_int, default=d.num_workers, help="DataLoader workers per source")
    p.add_argument("--strict", action="store_true", help="fail on the first corrupt or missing media (names the file)")
    p.add_argument("--resume", default=None, help="'latest' or a checkpoint folder to continue from")
    p.add_argument("--overwrite", action="store_true",
                   help="start again in a folder holding a previous run (deletes that run's checkpoints, metrics "
                        "and model, nothing else), or write into a non-empty folder that is not a run")
    p.add_argument("--save-every", type=non_negative_int, default=d.save_every, help="checkpoint every N steps")
    p.add_argument("--keep-checkpoints", type=non_negative_int, default=d.keep_checkpoints, help="newest checkpoints to keep")
    p.add_argument("--eval-every", type=non_negative_int, default=d.eval_every, help="held-out evaluation every N steps (0 = off)")
    p.add_argument("--eval-samples", type=positive_int, default=d.eval_samples, help="held-out pairs per evaluation")
    p.add_argument("--num-captions", type=non_negative_int, default=d.num_captions, help="sample captions printed per evaluation")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluations before and after training")
    p.add_argument("--log-every", type=positive_int, default=d.log_every, help="metrics record every N steps")
    p.add_argument("--p-next", type=fraction, default=d.p_next,
                   help="M3W: probability a sequence's text attends to the next image (paper: 0.5, for web pages "
                        "whose text may precede its image; 0 = the previous image, how ShapesWorld pages are written)")
    p.add_argument("--video-frames", type=non_negative_int, default=d.video_frames,
                   help="frames per video clip at 1 FPS (0 = the model's max_frames, 8 for the paper presets)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    a = build_parser().parse_args(argv)
    cfg = TrainConfig(**{k: v for k, v in vars(a).items() if k in TrainConfig.__dataclass_fields__})
    cfg.vision_encoder = a.vision_encoder or None
    cfg.final_eval, cfg.progress = not a.no_eval, not a.no_progress
    return cfg


def main(argv: list[str] | None = None) -> int:
    """``flamingo train``: returns 0 on success, 2 on bad input, 3 when a non-finite loss stopped the run."""
    from contrastive_encoder.shared.records import BadSampleError

    try:
        cfg = parse_args(argv)
    except SystemExit as e:  # the parser has printed its one line (or --help): return its code like the others
        return int(e.code or 0)
    try:
        train(cfg)
    except NonFiniteLossError as e:
        print(f"flamingo train: {e}", file=sys.stderr)
        return EXIT_NONFINITE
    except (FileNotFoundError, BadSampleError, ValueError) as e:
        print(f"flamingo train: {e}", file=sys.stderr)
        return 2
    finally:  # launched by torchrun / accelerate: NCCL warns at exit about a group left open
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
