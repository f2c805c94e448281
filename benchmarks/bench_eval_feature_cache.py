"""The cost of a few-shot evaluation with and without the frozen-feature cache (``fewshot-eval run --feature-cache``).

One evaluation (``fewshot_eval.evaluate``: a task, shots, random demonstrations, greedy or beam decoding) is run
in rounds, each round once without the cache and once reading a warm one (filled by an untimed run before the
first round), in alternating order, in one process: a slow spell of the shared machine hits both alike. Within
one run the visual tokens of each image are already computed once (``FlamingoEvalModel``'s visual-token cache);
what the feature cache spares is the frozen tower's work of a later run over the same images - another task on
them, other shots, an ablation - so "warm" is the second run's cost. Reported: the median seconds of each and
their per-round ratio (median, min, max), and the predictions of the two compared (they must be the same).

Defaults: the model and ShapesWorld data ``make demo`` writes (``runs/quick/stage2/model``,
``data/world-quick/eval/vqav2``). The demo's tower (``nano-minilm``, 64 px) costs little beside decoding;
``--vision PRESET`` times instead an untrained model (SmolLM2 with that contrastive_encoder tower, random
trained parts and tower) on the same data, e.g. ``nfnet-f0-minilm`` (192 px): its scores mean nothing, its
costs are those of a real tower.

Usage: .venv/bin/python benchmarks/bench_eval_feature_cache.py [--model DIR] [--task vqa] [--data DIR]
       [--shots 0 4 8] [--limit 32] [--rounds 3] [--num-beams 1] [--vision PRESET]
       [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(model_dir: str, args, cache: str | None) -> tuple[float, list, dict]:
    from fewshot_eval import FlamingoEvalModel, evaluate

    t0 = time.perf_counter()
    model = FlamingoEvalModel(model_dir, device="cpu", feature_cache=cache)
    results = evaluate(model, args.task, args.data, args.shots, selection=["random"], trials=1, limit=args.limit,
                       num_beams=args.num_beams, progress=False)
    seconds = time.perf_counter() - t0
    counts = {} if model.feature_cache is None else {"hits": model.feature_cache.hits,
                                                     "misses": model.feature_cache.misses}
    return seconds, [(r["shots"], r["metric"], r["mean"]) for r in results], counts


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(ROOT / "runs" / "quick" / "stage2" / "model"), help="saved Flamingo model")
    p.add_argument("--task", default="vqa", help="fewshot_eval task")
    p.add_argument("--data", default=str(ROOT / "data" / "world-quick" / "eval" / "vqav2"), help="its data")
    p.add_argument("--shots", type=int, nargs="+", default=[0, 4, 8])
    p.add_argument("--limit", type=int, default=32, help="queries")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--num-beams", type=int, default=1)
    p.add_argument("--vision", default=None, help="instead of --model: an untrained model with this tower preset")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    for what, path in (("--model", args.model if args.vision is None else "."), ("--data", args.data)):
        if not Path(path).exists():
            print(f"{what} {path}: not found (run `make demo` first, or name one)", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory() as tmp:
        if args.vision is not None:
            from flamingo_core import create_model

            args.model = str(create_model("smollm2", vision_encoder=args.vision).save_pretrained(Path(tmp) / "model"))
        cache = str(Path(tmp) / "features")
        _, warm_scores, filled = _run(args.model, args, cache)  # untimed: fills the cache
        rows = []
        for r in range(args.rounds):
            order = [None, cache] if r % 2 == 0 else [cache, None]
            times = {}
            for c in order:
                seconds, scores, counts = _run(args.model, args, c)
                times["warm" if c else "off"] = seconds
                if scores != warm_scores:
                    print(f"round {r}: scores differ with the cache {'on' if c else 'off'}", file=sys.stderr)
                    return 1
                if c:
                    times["counts"] = counts
            rows.append(times)
    off, warm = [r["off"] for r in rows], [r["warm"] for r in rows]
    ratios = [a / b for a, b in zip(off, warm)]
    out = {"model": "untrained, tower " + args.vision if args.vision else args.model, "task": args.task, "shots": args.shots, "queries": args.limit, "num_beams": args.num_beams,
           "filled": filled, "off_s_median": statistics.median(off), "warm_s_median": statistics.median(warm),
           "speedup_median": statistics.median(ratios), "speedup_min": min(ratios), "speedup_max": max(ratios),
           "rounds": rows, "same_scores": True}
    print(json.dumps(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
