#!/usr/bin/env python
"""The paper's ablations (arXiv 2204.14198, Table 3) in miniature, one command, one table.

    python tools/run_ablations.py --out runs/ablations        # about 2 hours on 2 cores (estimated)

One stage-1 tower is trained and exported once (the ``default`` variant's), then stage 2 is trained again for
each variant on it, with the same budget of minutes, and evaluated on the same queries:

| variant | what changes | paper |
| --- | --- | --- |
| default | the `full` budget's data and mixture, a shorter stage 2 | - |
| no-structured | M3W pages all independent descriptions (`--m3w-structured 0`) | - (our structured pages) |
| no-m3w | no interleaved pages at all (`--weights m3w=0`) | Table 3 "w/o M3W" |
| round-robin | one dataset per optimizer step, in turn (`--strategy round-robin`) | Table 3 "dataset strategy" |

and, on the default model: RICES vs random vs balanced demonstrations (classification and VQA), and 0-shot with
one vs two text-only demonstrations (the paper uses two: with one the model copies it). Each variant is a
pipeline run under ``<out>/<variant>/`` (rerun the command to continue an interrupted one); the comparison is
``<out>/ablations.md`` and ``ablations.json``. Cut to fit the budget (stated in the table): stage 1 and stage 2
shorter than the ``full`` budget's (6 and 15 minutes), shots 0 / 4 / 8 / 16, 48 queries, one random trial,
greedy decoding, no captioning.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pipeline_report  # noqa: E402
import run_pipeline as rp  # noqa: E402
import shapesworld  # noqa: E402
from contrastive_encoder.shared.outputs import OutputError, atomic_write_text, prepare_run_dir  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TASKS = ["bind", "classify", "vqa"]  # the tasks the ablations compare; captioning is cut to fit the budget
SHOTS = [0, 4, 8, 16]  # 16: two demonstrations of each colour, where binding first shows (docs/benchmarks.md)
STAGE2_MINUTES = 15.0

BASE = dataclasses.replace(
    rp.BUDGETS["full"],
    stage1_args=["--max-minutes", "6"],
    stage2_args=[*rp.BUDGETS["full"].stage2_args, "--max-minutes", str(STAGE2_MINUTES), "--eval-samples", "16"],
    eval_shots=SHOTS,
    eval_args=["--limit", "48", "--trials", "1", "--ensemble", "1", "--num-beams", "1"],
    eval_tasks=TASKS,
)
VARIANTS: dict[str, tuple[str, rp.Budget]] = {
    "default": ("the full budget's data and mixture", BASE),
    "no-structured": ("M3W pages all independent descriptions", dataclasses.replace(BASE, m3w_structured=0.0)),
    "no-m3w": ("no M3W (interleaved pages) at all", dataclasses.replace(
        BASE, stage2_args=[*BASE.stage2_args, "--weights", "m3w=0,ltip=0.2,align=0.2,vtp=0.03"])),
    "round-robin": ("one dataset per optimizer step, in turn", dataclasses.replace(
        BASE, stage2_args=[*BASE.stage2_args, "--strategy", "round-robin"])),
}
RUN_OUTPUTS = (*VARIANTS, "zero-shot-1demo", "ablations.md", "ablations.json", "ablations.json.tmp*")


def _results(run: Path, task: str) -> list[dict]:
    path = run / "eval" / task / "results.json"
    return json.loads(path.read_text())["results"] if path.is_file() else []


def _top1(rec: dict) -> bool:
    return rec["metric"] in ("top-1 accuracy", "VQA accuracy", "CIDEr")


def _cell(rec: dict | None) -> str:
    if rec is None:
        return "-"
    lo, hi = rec.get("ci95", (None, None))
    return f"{rec['mean']:.1f} [{lo:.1f}, {hi:.1f}]" if lo is not None else f"{rec['mean']:.1f}"


def _pick(results: list[dict], selection: str, shots: int) -> dict | None:
    return next((r for r in results if _top1(r) and r["selection"] == selection and r["shots"] == shots), None)


def table(out: Path) -> tuple[str, dict]:
    """The comparison: one row per variant (default selection of each task), then the selection and 0-shot
    rows on the default model."""
    main_selection = {t: rp.SELECTIONS[t][0] for t in TASKS}
    head = "| variant | " + " | ".join(f"{t} {k}-shot" for t in TASKS for k in SHOTS) + f" | bind gain 0->{SHOTS[-1]} |"
    lines = [head, "|" + "---|" * (2 + len(TASKS) * len(SHOTS))]
    numbers: dict = {}
    for name, (what, _) in VARIANTS.items():
        cells, row = [], {}
        for task in TASKS:
            res = _results(out / name, task)
            for k in SHOTS:
                rec = _pick(res, main_selection[task], k)
                cells.append(_cell(rec))
                row[f"{task}/{k}"] = rec and {"mean": rec["mean"], "ci95": rec.get("ci95")}
        b0, b8 = row.get("bind/0"), row.get(f"bind/{SHOTS[-1]}")
        gain = f"{b8['mean'] - b0['mean']:+.1f}" if b0 and b8 else "-"
        lines.append(f"| {name} ({what}) | " + " | ".join(cells) + f" | {gain} |")
        numbers[name] = row
    lines += ["", "Selection of demonstrations on the default model (top-1 / VQA accuracy):", "",
              "| task | selection | " + " | ".join(f"{k}-shot" for k in SHOTS) + " |", "|---|---|" + "---|" * len(SHOTS)]
    for task in ("classify", "vqa", "bind"):
        res = _results(out / "default", task)
        for sel in rp.SELECTIONS[task]:
            lines.append(f"| {task} | {sel} | " + " | ".join(_cell(_pick(res, sel, k)) for k in SHOTS) + " |")
    lines += ["", "0-shot with one vs two text-only demonstrations (default model):", "",
              "| task | 2 demonstrations (paper) | 1 demonstration |", "|---|---|---|"]
    for task in TASKS:
        two = _pick(_results(out / "default", task), main_selection[task], 0)
        one = _pick(_results(out / "zero-shot-1demo", task), "random", 0)
        lines.append(f"| {task} | {_cell(two)} | {_cell(one)} |")
    return "\n".join(lines) + "\n", numbers


def zero_shot_one_demo(out: Path, data: Path, seed: int) -> None:
    """0-shot prompts with one text-only demonstration instead of two, on the default model."""
    pipe = rp.Pipeline("ablation-default", out / "default", data, seed, budget=BASE)
    for task in TASKS:
        dest = out / "zero-shot-1demo" / task
        if (dest / ".done").exists():
            continue
        dest.mkdir(parents=True, exist_ok=True)
        rerun = ["--overwrite"] if any(dest.iterdir()) else []
        pipe.sh([rp._cli("fewshot-eval"), "run", "--model", str(out / "default" / "stage2" / "model"),
                 *rp.TASK_FLAGS.get(task, ["--task", task]), "--data", str(pipe.eval_data(task)), "--shots", "0",
                 "--zero-shot-demos", "1", "--selection", "random", "--seed", str(seed), "--out", str(dest), *rerun,
                 *BASE.eval_args, *BASE.task_args.get(task, [])], f"zero-shot-1demo/{task}")
        (dest / ".done").write_text("ok\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "ablations", help="folder of the variants' runs")
    p.add_argument("--data", type=Path, default=ROOT / "data" / "world-ablations",
                   help="ShapesWorld folder (the no-structured variant writes <data>-no-structured)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", nargs="+", choices=list(VARIANTS), default=list(VARIANTS), help="variants to run")
    args = p.parse_args(argv)
    out, data = args.out.resolve(), args.data.resolve()
    start = time.time()
    try:
        prepare_run_dir(out, "run_ablations", RUN_OUTPUTS, resume=True)
        for name in ["default", *[v for v in args.only if v != "default"]]:
            _, budget = VARIANTS[name]
            world = data if budget.m3w_structured == BASE.m3w_structured else Path(f"{data}-{name}")
            vision = None if name == "default" else out / "default" / "vision"
            print(f"\n=== ablation '{name}' ===", flush=True)
            rp.Pipeline(f"ablation-{name}", out / name, world, args.seed, budget=budget, vision_from=vision).run()
        zero_shot_one_demo(out, data, args.seed)
        text, numbers = table(out)
        minutes = (time.time() - start) / 60
        atomic_write_text(out / "ablations.md", f"# Ablations in miniature\n\nStage 2: {STAGE2_MINUTES:g} minutes per "
                          f"variant; shots {SHOTS}, 48 queries, 1 trial, greedy decoding; this run {minutes:.0f} min.\n\n"
                          + text)
        atomic_write_text(out / "ablations.json", json.dumps(numbers, indent=1))
        print(f"\n{text}\nablations: {out / 'ablations.md'} ({minutes:.0f} min)")
    except (rp.PipelineError, OutputError, pipeline_report.ReportError, shapesworld.ShapesWorldError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (rp.Interrupted, KeyboardInterrupt):
        print("interrupted; rerun the same command to continue", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
