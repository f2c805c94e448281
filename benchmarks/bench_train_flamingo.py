"""Training-step throughput of Flamingo through the trainer's own step (`flamingo_core.train.train_step`): the
same data path a user gets (ShapesWorld files -> sources -> collator -> mixture accumulation -> AdamW).

Reports, per source and for a full mixture step: label tokens per second, seconds per step and peak RSS / GPU
memory. Not a test; numbers depend on the machine and its load (say which, and how loaded, when recording).

    python benchmarks/bench_train_flamingo.py --data data/world --model smollm2 --vision-encoder runs/stage1/export
    python benchmarks/bench_train_flamingo.py --data /tmp/world --model tiny --vision-encoder '' --steps 3
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import torch


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="data/world", help="ShapesWorld root")
    p.add_argument("--model", default="smollm2", help="Flamingo model preset or JSON config")
    p.add_argument("--vision-encoder", default="runs/stage1/export", help="stage-1 export or preset ('' = preset's)")
    p.add_argument("--batch-size", type=int, default=4, help="pairs per step (M3W a quarter, VTP half)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per measurement (after 1 warm-up step)")
    p.add_argument("--sources", default="ltip,m3w,vtp,mixture", help="what to time: source names and/or 'mixture'")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"], help="autocast precision")
    p.add_argument("--grad-checkpointing", action="store_true", help="recompute decoder layers in backward")
    p.add_argument("--json", default=None, help="also write the results here")
    return p.parse_args(argv)


def main(argv=None) -> int:
    from accelerate import Accelerator

    from flamingo_core.config import load_config
    from flamingo_core.data import FlamingoCollator, make_loader
    from flamingo_core.factory import create_model
    from flamingo_core.lm_adapter import enable_gradient_checkpointing
    from flamingo_core.mixture import DEFAULT_WEIGHTS
    from flamingo_core.train import TrainConfig, param_groups, source_batch_sizes, train_step
    from flamingo_core.train.loop import _precision
    from flamingo_core.train.source_specs import build_sources
    from flamingo_core.train.zero import build_adamw

    args = parse_args(argv)
    cpu = not torch.cuda.is_available()
    accelerator = Accelerator(cpu=cpu, mixed_precision=_precision(args.precision, cpu))
    overrides = {"vision_encoder": args.vision_encoder} if args.vision_encoder else {}
    model = create_model(load_config(args.model, **overrides))
    if args.grad_checkpointing:
        enable_gradient_checkpointing(model)
    proc = model.processor
    cfg = TrainConfig(data=args.data, batch_size=args.batch_size)
    from contrastive_encoder.shared.records import SkipCounter

    sources = build_sources(cfg, dict(DEFAULT_WEIGHTS), SkipCounter(), video_frames=min(8, model.config.max_frames))
    sizes = source_batch_sizes(cfg, list(sources))
    model.train()
    model = accelerator.prepare(model)
    optimizer = build_adamw(param_groups(model, 0.1), 1e-4, zero=False)
    batches = {}
    for name, src in sources.items():
        it = iter(make_loader(src, FlamingoCollator(proc, src.max_tokens, proc.media_token_id), sizes[name]))
        batches[name] = [{k: (v.to(accelerator.device) if torch.is_tensor(v) else v) for k, v in next(it).items()}
                         for _ in range(2)]
    results = {"device": str(accelerator.device), "threads": torch.get_num_threads(), "preset": args.model,
               "batch_sizes": sizes, "precision": accelerator.mixed_precision}
    for what in args.sources.split(","):
        names = list(sources) if what == "mixture" else [what]
        weights = {n: DEFAULT_WEIGHTS.get(n, 1.0) if what == "mixture" else 1.0 for n in names}
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        train_step(model, optimizer, {n: batches[n][0] for n in names}, weights, accelerator=accelerator)
        tokens, t0 = 0, time.perf_counter()
        for i in range(args.steps):
            r = train_step(model, optimizer, {n: batches[n][i % 2] for n in names}, weights, accelerator=accelerator)
            tokens += r.tokens
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        peak = (torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available()
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        results[what] = {"tokens_per_s": tokens / dt, "s_per_step": dt / args.steps, "peak_memory_mb": peak}
        print(f"{what}: {results[what]}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
