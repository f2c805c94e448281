"""The pipeline's report: ``runs/<name>/report.md`` and its PNGs, built only from what the stages logged.

Sections: stage-1 loss curve and zero-shot accuracies; stage-2 loss curves per dataset source and held-out
loss; few-shot table and score-vs-shots plot per selection method; a panel of held-out images with the
model's captions and answers next to the ground truth; the tanh gate values per layer after training.
The report is written to a temporary file and renamed, so a half-written report is never presented as done.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import time
from collections.abc import Callable
from pathlib import Path

from contrastive_encoder.shared.outputs import atomic_write_text
from contrastive_encoder.shared.records import read_jsonl
from contrastive_encoder.shared.runlog import read_metrics

SECTIONS = (
    "## Stage 1: contrastive pretraining",
    "## Stage 2: Flamingo training",
    "## Stage 3: few-shot evaluation",
    "## An 8-shot prompt",
    "## Examples",
    "## Gates",
)


class ReportError(RuntimeError):
    """A stage output the report needs is missing; the message says which stage to rerun."""


def _need(path: Path, stage: str) -> Path:
    """``path`` must exist; if not, name the stage folder (``run/<stage>``) to delete so a rerun redoes it."""
    if not path.exists():
        folder = next((p for p in path.parents if p.name == stage), path.parent)
        raise ReportError(f"{path} is missing: delete {folder} and rerun the pipeline to redo stage '{stage}'")
    return path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _curve_png(series: dict[str, list[tuple[int, float]]], title: str, ylabel: str, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, points in series.items():
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if len(series) > 1:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------------
def stage1_section(run: Path, figures: Path) -> tuple[str, dict]:
    metrics = read_metrics(_need(run / "stage1" / "metrics.jsonl", "stage1"))
    loss = [(m["step"], m["loss"]) for m in metrics if _finite(m.get("loss"))]
    _curve_png({"contrastive loss": loss}, "Stage 1: contrastive loss", "loss", figures / "stage1_loss.png")
    zero_shot: dict[str, float] = {}
    for m in metrics:
        for k, v in m.items():
            if (match := re.fullmatch(r"zero_shot/(.+)/top1", k)) and _finite(v):
                zero_shot[match.group(1)] = v  # the last evaluation wins
    summary = {}
    if (run / "stage1" / "summary.json").exists():
        summary = json.loads((run / "stage1" / "summary.json").read_text())
    lines = [SECTIONS[0], ""]
    if loss:
        lines.append(f"Loss {loss[0][1]:.3f} at step {loss[0][0]} -> {loss[-1][1]:.3f} at step {loss[-1][0]}.")
    if summary.get("images_per_s"):
        lines.append(f"Throughput {summary['images_per_s']:.1f} images/s.")
    lines += ["", "![stage-1 loss](figures/stage1_loss.png)", ""]
    if zero_shot:
        lines += ["Zero-shot classification on held-out images (`A photo of a {class}.`):", "",
                  "| set | top-1 |", "|---|---|"]
        lines += [f"| {k} | {v:.1%} |" for k, v in sorted(zero_shot.items())]
    else:
        lines.append("No zero-shot evaluation was logged.")
    return "\n".join(lines) + "\n", {"zero_shot": zero_shot, "final_loss": loss[-1][1] if loss else None}


def stage2_section(run: Path, figures: Path) -> tuple[str, dict]:
    metrics = read_metrics(_need(run / "stage2" / "metrics.jsonl", "stage2"))
    sources = sorted({k[5:] for m in metrics for k in m if k.startswith("loss/")})
    series = {s: [(m["step"], m[f"loss/{s}"]) for m in metrics if _finite(m.get(f"loss/{s}"))] for s in sources}
    held_out = [(m["step"], m["eval_loss"]) for m in metrics if _finite(m.get("eval_loss"))]
    if held_out:
        series["held-out captions"] = held_out
    _curve_png(series, "Stage 2: next-token loss per source", "NLL", figures / "stage2_loss.png")
    colour = [(m["step"], m["colour_acc"]) for m in metrics if _finite(m.get("colour_acc"))]
    lines = [SECTIONS[1], "", "![stage-2 loss](figures/stage2_loss.png)", ""]
    if sources:
        lines += ["| source | first loss | last loss |", "|---|---|---|"]
        lines += [f"| {s} | {series[s][0][1]:.3f} | {series[s][-1][1]:.3f} |" for s in sources if series[s]]
        lines.append("")
    if held_out:
        lines.append(f"Held-out caption loss {held_out[0][1]:.3f} (step {held_out[0][0]}, gates at zero) -> "
                     f"{held_out[-1][1]:.3f} (step {held_out[-1][0]}).")
    if colour:
        lines.append(f"Greedy captions naming the main object's colour: {colour[0][1]:.1%} -> {colour[-1][1]:.1%}.")
    return "\n".join(lines) + "\n", {"held_out": held_out, "colour_acc": colour[-1][1] if colour else None}


def fewshot_section(run: Path, tasks: list[str], figures: Path) -> tuple[str, list[dict]]:
    from fewshot_eval.report import markdown_table, plot_scores

    results: list[dict] = []
    for task in tasks:
        path = _need(run / "eval" / task / "results.json", "eval")
        results += json.loads(path.read_text())["results"]
    plot_scores(results, figures / "fewshot.png")
    lines = [SECTIONS[2], "", markdown_table(results), "", "![score vs shots](figures/fewshot.png)", ""]
    return "\n".join(lines) + "\n", results


def prompt_section(run: Path, eval_data: Callable[[str], Path], figures: Path, shots: int = 8) -> str:
    """One novel-label prompt drawn in full: its demonstrations (image and nonce name), the query, the model's
    answer and the truth, from the saved predictions of ``bind`` (the largest shot count up to ``shots``)."""
    from PIL import Image, ImageDraw

    from fewshot_eval.datasets import load_split

    files = {}
    for f in (run / "eval" / "bind" / "predictions").glob("*.jsonl"):
        k = re.search(r"_(\d+)shot_", f.name)
        if k and 0 < int(k.group(1)) <= shots and "_balanced_" in f.name:
            files[int(k.group(1))] = f
    if not files:
        return f"{SECTIONS[3]}\n\nNo novel-label (bind) predictions with demonstrations were saved.\n"
    k, path = max(files.items())
    records = [r for r in read_jsonl(path, required=("id", "prediction", "demos")) if r.get("names")]
    if not records:
        return f"{SECTIONS[3]}\n\n{path.name} holds no novel-label records.\n"
    data = eval_data("bind")
    support = {ex.id: ex for ex in load_split("classify", data, "train").examples}
    queries = {ex.id: ex for ex in load_split("classify", data, "val").examples}
    # a prompt the model answered right, if any: the panel shows what binding looks like
    rec = next((r for r in records if str(r["id"]) in queries and r["prediction"] == queries[str(r["id"])].target),
               records[0])
    query = queries.get(str(rec["id"]))
    demos = [support[d] for d in rec["demos"] if d in support]
    if query is None or len(demos) != len(rec["demos"]):
        return f"{SECTIONS[3]}\n\nThe examples of {path.name} are not in {data} any more.\n"
    names = rec["names"]
    thumb, pad = 64, 6
    cells = [(ex.media, names[ex.target], (60, 60, 60)) for ex in demos]
    answer = names.get(rec["prediction"], rec["prediction"])
    right = rec["prediction"] == query.target
    cells.append((query.media, f"-> {answer}", (20, 120, 20) if right else (170, 20, 20)))
    canvas = Image.new("RGB", (len(cells) * (thumb + pad) + pad, thumb + 2 * pad + 18), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (media, label, colour) in enumerate(cells):
        x = pad + i * (thumb + pad)
        canvas.paste(Image.open(media).convert("RGB").resize((thumb, thumb)), (x, pad))
        draw.text((x, thumb + pad + 2), label[:10], fill=colour)
    canvas.save(figures / "prompt.png")
    prompt = rec.get("prompt", "").replace("\n", " ")
    lines = [SECTIONS[3], "",
             f"A novel-label prompt with {k} demonstrations (balanced; the colour classes renamed with nonce words "
             "for this episode only), the query last:", "", "![an 8-shot prompt](figures/prompt.png)", "",
             f"Prompt text: `{prompt}`", "",
             f"Model's answer: **{answer}** ({rec['prediction']}); truth: **{names[query.target]}** ({query.target})."
             f" From `{path.name}`, query `{rec['id']}`."]
    return "\n".join(lines) + "\n"


def examples_section(run: Path, eval_data: Callable[[str], Path], tasks: list[str], figures: Path,
                     per_task: int = 4) -> str:
    """Held-out images with the model's output beside the ground truth, from the saved predictions."""
    from PIL import Image, ImageDraw

    from fewshot_eval.datasets import load_split

    rows = []
    for task in tasks:
        if task not in ("caption", "vqa"):
            continue
        files = sorted((run / "eval" / task / "predictions").glob("*.jsonl"))
        # the largest shot count under RICES is the model at its best; fall back to any file
        ranked = sorted(files, key=lambda f: ("rices" in f.name, max(map(int, re.findall(r"(\d+)shot", f.name)
                                                                          or [0]))))
        if not ranked:
            continue
        # read_jsonl skips a line an interrupted run left unfinished (the evaluation redid that example)
        preds = {str(p["id"]): p for p in read_jsonl(ranked[-1], required=("id", "prediction"))}
        preds = list(preds.values())[:per_task]
        split = None
        results = json.loads((run / "eval" / task / "results.json").read_text())["results"]
        if results:
            split = results[0]["split"]
        examples = {ex.id: ex for ex in load_split(task, eval_data(task), split).examples}
        for p in preds:
            ex = examples.get(str(p["id"]))
            if ex is not None:
                truth = ex.references[0] if task == "caption" else f"{ex.question} {ex.target}"
                rows.append((task, ex.media, p["prediction"], truth, ranked[-1].stem))
    if not rows:
        return f"{SECTIONS[4]}\n\nNo captioning or VQA predictions were saved.\n"
    thumb, width = 96, 560
    canvas = Image.new("RGB", (width, len(rows) * (thumb + 8) + 8), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (task, media, pred, truth, _) in enumerate(rows):
        y = 8 + i * (thumb + 8)
        canvas.paste(Image.open(media).convert("RGB").resize((thumb, thumb)), (8, y))
        draw.text((thumb + 16, y + 4), f"[{task}]", fill=(90, 90, 90))
        draw.text((thumb + 16, y + 28), f"model: {pred}"[:80], fill=(20, 20, 160))
        draw.text((thumb + 16, y + 52), f"truth: {truth}"[:80], fill=(20, 120, 20))
    canvas.save(figures / "examples.png")
    lines = [SECTIONS[4], "", "![held-out examples](figures/examples.png)", "",
             "| task | model | ground truth | image |", "|---|---|---|---|"]
    lines += [f"| {t} | {p} | {g} | `{Path(m).name}` |" for t, m, p, g, _ in rows]
    lines.append(f"\nFrom the prediction files {sorted({r[4] for r in rows})}.")
    return "\n".join(lines) + "\n"


def gates_section(run: Path, figures: Path) -> tuple[str, list[tuple[int, float, float]]]:
    from safetensors import safe_open

    weights = _need(run / "stage2" / "model" / "model.safetensors", "stage2")
    gates: dict[int, dict[str, float]] = {}
    with safe_open(str(weights), "pt") as f:
        for key in f.keys():
            if match := re.search(r"(\d+)\D*\.(alpha_xattn|alpha_dense)$", key):
                gates.setdefault(int(match.group(1)), {})[match.group(2)] = math.tanh(f.get_tensor(key).item())
    if not gates:
        raise ReportError(f"{weights} holds no alpha_xattn / alpha_dense gates: rerun stage 2")
    table = [(layer, g.get("alpha_xattn", 0.0), g.get("alpha_dense", 0.0)) for layer, g in sorted(gates.items())]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3))
    xs = range(len(table))
    ax.bar([x - 0.2 for x in xs], [t[1] for t in table], width=0.4, label="tanh(alpha_xattn)")
    ax.bar([x + 0.2 for x in xs], [t[2] for t in table], width=0.4, label="tanh(alpha_dense)")
    ax.set_xticks(list(xs), [str(t[0]) for t in table])
    ax.set_xlabel("cross-attention block (inserted before decoder layer)")
    ax.set_ylabel("gate value")
    ax.legend()
    fig.tight_layout()
    fig.savefig(figures / "gates.png", dpi=100)
    plt.close(fig)
    lines = [SECTIONS[5], "", "How much each layer listens to vision (0 = the frozen LM unchanged).", "",
             "![gates](figures/gates.png)", "", "| block | tanh(alpha_xattn) | tanh(alpha_dense) |", "|---|---|---|"]
    lines += [f"| {layer} | {a:+.4f} | {d:+.4f} |" for layer, a, d in table]
    return "\n".join(lines) + "\n", table


def write_report(run: Path, data: Path, budget: str, eval_data: Callable[[str], Path],
                 timings: dict[str, float], tasks: list[str] | None = None) -> Path:
    """Build ``run/report.md`` (+ ``run/figures/*.png`` and ``run/report.json`` with the numbers used)."""
    if tasks is None:
        tasks = sorted(p.name for p in (run / "eval").iterdir() if (p / "results.json").exists()) \
            if (run / "eval").is_dir() else []
    figures = run / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    s1, n1 = stage1_section(run, figures)
    s2, n2 = stage2_section(run, figures)
    s3, results = fewshot_section(run, tasks, figures)
    s_prompt = prompt_section(run, eval_data, figures) if "bind" in tasks else f"{SECTIONS[3]}\n\nNo bind task.\n"
    s4 = examples_section(run, eval_data, tasks, figures)
    s5, gates = gates_section(run, figures)
    total = sum(timings.values())
    header = [
        f"# Flamingo pipeline report: budget `{budget}`", "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M')} on {platform.machine()} with {os.cpu_count()} CPU cores "
        f"({platform.processor() or platform.platform()}). Data: `{data}`.", "",
        "| stage | seconds |", "|---|---|",
        *[f"| {k} | {v:.0f} |" for k, v in timings.items()], f"| total | {total:.0f} |", "",
    ]
    atomic_write_text(run / "report.json", json.dumps(
        {"budget": budget, "timings": timings, "stage1": n1, "stage2": n2, "fewshot": results,
         "gates": [{"block": b, "xattn": a, "dense": d} for b, a, d in gates]}, indent=1))
    path = run / "report.md"
    atomic_write_text(path, "\n".join(header) + "\n" + "\n".join([s1, s2, s3, s_prompt, s4, s5]))
    return path
