"""Evaluation speed: this package's evaluator against OpenFlamingo 2.0.1's own (``open_flamingo/eval``), on the
same model and task: VQAv2-layout questions (ShapesWorld), 8 shots, beam 3, OpenFlamingo's protocol on both
sides (``--protocol openflamingo``), the same demonstrations (benchmarks/peers/openflamingo_eval.py gives the
peer ours), batch 8.

The model is a random OpenFlamingo on an MPT LM (``--width``, ``--layers``; byte tokenizer) and a tiny open_clip
ViT, converted for ours with ``flamingo_core.openflamingo.from_openflamingo``: both sides compute the same
logits, so the time differs only by how each evaluator runs the model. Rounds alternate the two (ours in this
process, the peer in a process of its own, one after the other, never together), so a slow spell of a shared
machine hits both; each round's time is the evaluation call alone (data read, demonstrations placed, generation,
post-processing and scoring; not the model load). Reported: queries per second of each, the median of the
per-round ratios, and whether the predictions were the same.

Usage: .venv/bin/python benchmarks/bench_eval_vs_openflamingo.py [--rounds 3] [--queries 32] [--width 256]
       [--layers 4] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks" / "peers"))
sys.path.insert(0, str(ROOT / "tools"))
import openflamingo_peer as peer  # noqa: E402


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def build(root: Path, width: int, layers: int, queries: int):
    """(ShapesWorld folder, LM folder, peer checkpoint, converted model folder)."""
    from safetensors.torch import save_file

    import shapesworld
    from flamingo_core.openflamingo import from_openflamingo

    world = shapesworld.generate(root / "world", image_size=32, sizes={"vqa_train": 64, "vqa_val": queries})
    peer.register_tiny_vit(root)
    lm = peer.save_tiny_lm(root / "lm", "mpt", d_model=width, n_layers=layers, n_heads=max(width // 64, 1),
                           max_seq_len=2048)  # fmt: skip
    theirs, _, _ = peer.build_tiny_peer(lm, seed=3)
    state = peer.filter_state_dict_to_trainable()(theirs, theirs.state_dict())
    checkpoint = root / "checkpoint.safetensors"
    save_file({k: v.detach().clone().contiguous() for k, v in state.items()}, str(checkpoint))
    from_openflamingo(checkpoint, lm=str(lm), vision=f"open_clip:{peer.TINY_VIT}").save_pretrained(root / "converted")
    return world, lm, checkpoint, root / "converted"


def ours_round(model, world: Path, out: Path, shots: int, batch: int) -> tuple[float, list[dict]]:
    from fewshot_eval.evaluate import evaluate

    start = time.perf_counter()
    evaluate(model, "vqa", world / "eval" / "vqav2", shots=[shots], selection=["random"], trials=1, out_dir=out,
             batch_size=batch, progress=False, protocol="openflamingo", n_bootstrap=1)  # fmt: skip
    seconds = time.perf_counter() - start
    path = out / "predictions" / f"vqa_random_{shots}shot_ens1_trial0.rank0.jsonl"
    return seconds, [json.loads(line) for line in path.read_text().splitlines()]


def peer_round(setup, records: list[dict], work: Path, shots: int, batch: int) -> dict:
    world, lm, checkpoint, _ = setup
    spec = {"task": "vqa", "lm": str(lm), "checkpoint": str(checkpoint), "data": str(world / "eval" / "vqav2"),
            "work": str(work), "batch_size": batch,
            "runs": [{"shots": shots, "queries": [r["id"] for r in records], "demos": [r["demos"] for r in records]}]}
    work.mkdir(parents=True, exist_ok=True)
    (work / "spec.json").write_text(json.dumps(spec))
    script = ROOT / "benchmarks" / "peers" / "openflamingo_eval.py"
    subprocess.run([sys.executable, str(script), str(work / "spec.json"), str(work / "out.json")], check=True,
                   capture_output=True)  # fmt: skip
    return json.loads((work / "out.json").read_text())[0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--queries", type=int, default=32, help="VQA questions evaluated per round")
    p.add_argument("--shots", type=int, default=8)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--width", type=int, default=256, help="the MPT LM's width")
    p.add_argument("--layers", type=int, default=4, help="the MPT LM's layers")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here too")
    args = p.parse_args(argv)
    if not peer.is_installed():
        print(f"error: OpenFlamingo is not installed: run `{peer.INSTALL_COMMAND}`", file=sys.stderr)
        return 2
    from fewshot_eval.model import FlamingoEvalModel

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        setup = build(root, args.width, args.layers, args.queries)
        model = FlamingoEvalModel(setup[3], device="cpu")
        rows = []
        for i in range(args.rounds):
            ours_s, records = ours_round(model, setup[0], root / f"ours{i}", args.shots, args.batch)
            theirs = peer_round(setup, records, root / f"peer{i}", args.shots, args.batch)
            same = all(r["prediction"] == theirs["predictions"][r["id"]] for r in records)
            rows.append({"ours_s": ours_s, "peer_s": theirs["seconds"], "n": len(records), "same_predictions": same})
            print(f"round {i}: ours {ours_s:.2f} s, OpenFlamingo {theirs['seconds']:.2f} s, {len(records)} queries, "
                  f"same predictions: {same}", flush=True)
    n = rows[0]["n"]
    ratios = [r["peer_s"] / r["ours_s"] for r in rows]
    result = {
        "task": f"VQAv2 layout (ShapesWorld), {args.shots} shots, beam 3, batch {args.batch}, {n} queries",
        "model": f"random OpenFlamingo, MPT {args.layers} x {args.width}, byte tokenizer, tiny open_clip ViT",
        "cpu": _cpu(), "date": time.strftime("%Y-%m-%d"), "rounds": rows,
        "ours_queries_per_s": n / statistics.median(r["ours_s"] for r in rows),
        "peer_queries_per_s": n / statistics.median(r["peer_s"] for r in rows),
        "speedup_median": statistics.median(ratios), "speedup_range": [min(ratios), max(ratios)],
    }
    print(json.dumps({k: v for k, v in result.items() if k != "rounds"}, indent=1))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
