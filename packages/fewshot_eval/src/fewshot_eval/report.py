"""Reporting: a Markdown table and a plot of score against number of shots, one line per selection method -
this model's version of Figure 2 (middle) of the Flamingo paper (arXiv 2204.14198)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from contrastive_encoder.outputs import atomic_write_text

__all__ = ["markdown_table", "plot_scores", "write_report"]


def _series(results: Sequence[dict]) -> dict[tuple, dict[int, dict]]:
    """(task, dataset, metric, selection, ensembling) -> shots -> record."""
    series: dict[tuple, dict[int, dict]] = defaultdict(dict)
    for r in results:
        key = (r["task"], r.get("dataset", ""), r["metric"], r["selection"], r["ensembling"])
        series[key][int(r["shots"])] = r
    return series


def markdown_table(results: Sequence[dict]) -> str:
    """One row per task / metric / selection / ensembling, one column per shot count: ``mean ± std``."""
    if not results:
        return "No results.\n"
    shots = sorted({int(r["shots"]) for r in results})
    head = "| task | dataset | metric | selection | ensemble | n | " + " | ".join(f"{k}-shot" for k in shots) + " |"
    lines = [head, "|" + "---|" * (6 + len(shots))]
    for (task, dataset, metric, sel, ens), by_k in sorted(_series(results).items()):
        n = max(r["n"] for r in by_k.values())
        cells = []
        for k in shots:
            r = by_k.get(k)
            cells.append("" if r is None else (f"{r['mean']:.2f} ± {r['std']:.2f}" if r["trials"] > 1 else f"{r['mean']:.2f}"))
        lines.append(f"| {task} | {dataset} | {metric} | {sel} | {ens if ens > 1 else '-'} | {n} | " + " | ".join(cells) + " |")
    models = sorted({r["model"] for r in results})
    return "\n".join(lines) + "\n\nModel: " + ", ".join(models) + ". Random selection: mean ± std over trials.\n"


def plot_scores(results: Sequence[dict], path: str | Path) -> Path | None:
    """PNG of score vs shots, one panel per (task, metric), one line per selection method; None without
    matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    series = _series(results)
    panels = sorted({(t, d, m) for t, d, m, _, _ in series})
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.5), squeeze=False)
    for ax, (task, dataset, metric) in zip(axes[0], panels):
        for (t, d, m, sel, ens), by_k in sorted(series.items()):
            if (t, d, m) != (task, dataset, metric):
                continue
            ks = sorted(by_k)
            label = sel + (f" + ensemble {ens}" if ens > 1 else "")
            ax.errorbar(ks, [by_k[k]["mean"] for k in ks], yerr=[by_k[k]["std"] for k in ks], marker="o",
                        capsize=3, label=label)  # fmt: skip
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
