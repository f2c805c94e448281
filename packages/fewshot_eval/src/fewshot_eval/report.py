"""Reporting: a Markdown table and a plot of score against number of shots, one line per selection method -
this model's version of Figure 2 (middle) of the Flamingo paper (arXiv 2204.14198), with 95% confidence
intervals (``bootstrap``) and, for classification, the chance level."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from contrastive_encoder.shared.outputs import atomic_write_text
from contrastive_encoder.shared.readers import CorruptFileError, read_json

__all__ = ["RESULTS_SCHEMA", "markdown_table", "merge_results", "plot_scores", "write_report", "write_results"]

RESULTS_SCHEMA = "fewshot_eval/results/v1"


def _series(results: Sequence[dict]) -> dict[tuple, dict[int, dict]]:
    """(task, dataset, labels, metric, selection, ensembling) -> shots -> record."""
    series: dict[tuple, dict[int, dict]] = defaultdict(dict)
    for r in results:
        key = (r["task"], r.get("dataset", ""), r.get("labels", "true"), r["metric"], r["selection"], r["ensembling"])
        series[key][int(r["shots"])] = r
    return series


def _task_label(task: str, labels: str) -> str:
    return f"{task} (nonce labels)" if labels == "nonce" else task


def _cell(r: dict | None) -> str:
    """``mean [lo, hi]``; results written before intervals were recorded show ``mean ± std`` over trials."""
    if r is None:
        return ""
    if r.get("ci95"):
        lo, hi = r["ci95"]
        return f"{r['mean']:.2f} [{lo:.2f}, {hi:.2f}]"
    return f"{r['mean']:.2f} ± {r['std']:.2f}" if r["trials"] > 1 else f"{r['mean']:.2f}"


def _notes(results: Sequence[dict]) -> list[str]:
    """What the table's cells mean, and which metrics were left out and why (once per dataset)."""
    notes = []
    if any(r.get("ci95") for r in results):
        b = max(int(r.get("n_bootstrap") or 0) for r in results)
        notes.append(
            "Cells: mean [95% confidence interval], a percentile bootstrap over the queries and, for random and "
            f"balanced selection, over the trials (the mean is over trials; their scores and std are in results.json); "
            f"{b} resamples."
        )
    if any(not r.get("ci95") and r["trials"] > 1 for r in results):
        notes.append("Cells without an interval: mean ± std over trials.")
    if any(r["metric"] == "BLEU-4" for r in results):
        notes.append("BLEU-4 is a corpus statistic (not a mean over images): no bootstrap interval.")
    scorers = sorted({r["scorer"] for r in results if r.get("scorer")})
    if scorers:
        notes.append(f"Caption metrics computed by {' and '.join(scorers)} (--caption-scorer).")
    chance = sorted({(r.get("dataset", ""), r["metric"], r["chance"]) for r in results if r.get("chance")})
    if chance:
        notes.append("Chance: " + ", ".join(f"{m} {c:.2f} on {d}" for d, m, c in chance) + ".")
    for dataset in sorted({r.get("dataset", "") for r in results if r["task"] == "classify"}):
        metrics = {r["metric"] for r in results if r["task"] == "classify" and r.get("dataset", "") == dataset}
        if "top-1 accuracy" in metrics and "top-5 accuracy" not in metrics:
            notes.append(f"top-5 omitted for {dataset}: 5 or fewer classes (it would be 100% by construction).")
    return notes


def markdown_table(results: Sequence[dict]) -> str:
    """One row per task / labels / metric / selection / ensembling, one column per shot count, notes below."""
    if not results:
        return "No results.\n"
    shots = sorted({int(r["shots"]) for r in results})
    head = "| task | dataset | metric | selection | ensemble | n | " + " | ".join(f"{k}-shot" for k in shots) + " |"
    lines = [head, "|" + "---|" * (6 + len(shots))]
    for (task, dataset, labels, metric, sel, ens), by_k in sorted(_series(results).items()):
        n = max(r["n"] for r in by_k.values())
        cells = [_cell(by_k.get(k)) for k in shots]
        lines.append(f"| {_task_label(task, labels)} | {dataset} | {metric} | {sel} | {ens if ens > 1 else '-'} | {n} | "
                     + " | ".join(cells) + " |")  # fmt: skip
    models = sorted({r["model"] for r in results})
    return "\n".join(lines) + "\n\nModel: " + ", ".join(models) + ".\n\n" + "\n".join(_notes(results)) + "\n"


def _yerr(records: Sequence[dict]) -> list[list[float]]:
    """Asymmetric error bars: the CI's distance below and above the mean (std for records without a CI)."""
    low, high = [], []
    for r in records:
        lo, hi = r["ci95"] if r.get("ci95") else (r["mean"] - r["std"], r["mean"] + r["std"])
        low.append(max(r["mean"] - lo, 0.0))
        high.append(max(hi - r["mean"], 0.0))
    return [low, high]


def plot_scores(results: Sequence[dict], path: str | Path) -> Path | None:
    """PNG of score vs shots, one panel per (task, dataset, metric), one line per labels / selection method with
    its 95% CI as error bars, chance as a dashed line; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    series = _series(results)
    panels = sorted({(t, d, m) for t, d, _, m, _, _ in series})
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.5), squeeze=False)
    for ax, (task, dataset, metric) in zip(axes[0], panels):
        chance = set()
        for (t, d, labels, m, sel, ens), by_k in sorted(series.items()):
            if (t, d, m) != (task, dataset, metric):
                continue
            ks = sorted(by_k)
            label = sel + (f" + ensemble {ens}" if ens > 1 else "") + (" (nonce labels)" if labels == "nonce" else "")
            records = [by_k[k] for k in ks]
            ax.errorbar(ks, [r["mean"] for r in records], yerr=_yerr(records), marker="o", capsize=3, label=label,
                        linestyle=":" if labels == "nonce" else "-")  # fmt: skip
            chance |= {r["chance"] for r in records if r.get("chance")}
        for c in sorted(chance):
            ax.axhline(c, color="grey", linestyle="--", linewidth=1, label="chance")
        ax.set_xlabel("number of shots")
        ax.set_ylabel(metric)
        ax.set_title(f"{task} ({dataset})" if dataset else task)
        ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(results: Sequence[dict], out_dir: str | Path) -> None:
    """``results.md`` and ``results.png`` in ``out_dir``."""
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / "results.md", "# Few-shot results\n\n" + markdown_table(results))
    plot_scores(results, out_dir / "results.png")


def merge_results(path: Path, new: list[dict]) -> list[dict]:
    """Results already in ``path`` with the records of ``new`` replacing those with the same key."""
    def key(r):
        # not the data fingerprint: a rerun with another --limit replaces the old numbers
        return (r["task"], r.get("labels", "true"), r.get("dataset"), r["split"], r["shots"], r["selection"],
                r["ensembling"], r["metric"], r["model"])  # fmt: skip

    old = []
    if path.is_file():
        try:
            old = read_json(path).get("results", [])
        except CorruptFileError:  # rewritten from this run's predictions
            old = []
        need = ("task", "split", "shots", "selection", "ensembling", "metric", "model")
        old = [r for r in old if isinstance(r, dict) and all(k in r for k in need)] if isinstance(old, list) else []
    keys = {key(r) for r in new}
    return [r for r in old if key(r) not in keys] + new


def write_results(out: Path, results: list[dict]) -> None:
    """``results.json`` (this run's records merged into those already there), then ``write_report``."""
    merged = merge_results(out / "results.json", results)
    atomic_write_text(out / "results.json", json.dumps({"schema": RESULTS_SCHEMA, "results": merged}, indent=1))
    write_report(merged, out)
