"""results.json / results.md / results.png: top-5 only over more than 5 classes (said once under the table
otherwise), cells as ``mean [lo, hi]`` explained under the table, chance recorded for classification, the plot's
error bars the asymmetric CI and a dashed line at chance."""

from __future__ import annotations

import json

import pytest
from fewshot_helpers import COLOURS, write_image

from fewshot_eval.evaluate import evaluate
from fewshot_eval.report import markdown_table, plot_scores


@pytest.fixture(scope="module")
def six_classes(tmp_path_factory):
    root = tmp_path_factory.mktemp("six")
    colours = list(COLOURS)
    for split, n in (("train", 2), ("val", 1)):
        for c in range(6):
            for j in range(n):
                write_image(root / split / f"kind{c}" / f"{j}.png", colours[c % 4], jitter=c * 4 + j)
    return root


def test_top5_only_over_more_than_five_classes(classify_dir, six_classes, fake_model, tmp_path):
    four = evaluate(fake_model, "classify", classify_dir, shots=[2], selection=["random"], trials=1,
                    out_dir=tmp_path / "four", progress=False)  # fmt: skip
    assert [r["metric"] for r in four] == ["top-1 accuracy"] and four[0]["chance"] == 25.0
    table = (tmp_path / "four" / "results.md").read_text()
    note = f"top-5 omitted for {classify_dir.name}: 5 or fewer classes (it would be 100% by construction)"
    assert table.count(note) == 1

    six = evaluate(fake_model, "classify", six_classes, shots=[2], selection=["random"], trials=1,
                   out_dir=tmp_path / "six", progress=False)  # fmt: skip
    assert {r["metric"]: r["chance"] for r in six} == {"top-1 accuracy": pytest.approx(100 / 6),
                                                        "top-5 accuracy": pytest.approx(500 / 6)}
    assert all(r["classes"] == 6 for r in six)
    assert "top-5 omitted" not in (tmp_path / "six" / "results.md").read_text()


def test_cells_show_the_interval_explained_under_the_table(coco_dir, fake_model, tmp_path):
    results = evaluate(fake_model, "caption", coco_dir, shots=[0, 2], selection=["random"], trials=2,
                       out_dir=tmp_path, n_bootstrap=150, progress=False)  # fmt: skip
    table = (tmp_path / "results.md").read_text()
    for r in results:
        if r["metric"] == "BLEU-4":  # a corpus statistic: no interval (_summary), said under the table
            assert r["ci95"] is None and f"{r['mean']:.2f} ± {r['std']:.2f}" in table
            continue
        lo, hi = r["ci95"]
        assert f"{r['mean']:.2f} [{lo:.2f}, {hi:.2f}]" in table
    assert "mean [95% confidence interval], a percentile bootstrap over the queries" in table and "150 resamples" in table
    # a record written before intervals existed still reads, as mean ± std
    old = {k: v for k, v in results[0].items() if k not in ("ci95", "n_bootstrap", "labels")}
    assert f"{old['mean']:.2f} ± {old['std']:.2f}" in markdown_table([old])


def test_plot_error_bars_are_the_interval_and_chance_is_drawn(classify_dir, fake_model, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib.axes import Axes

    results = evaluate(fake_model, "classify", classify_dir, shots=[0, 2], selection=["random"], trials=2,
                       progress=False)  # fmt: skip
    bars, lines = [], []
    errorbar, axhline = Axes.errorbar, Axes.axhline
    monkeypatch.setattr(Axes, "errorbar", lambda self, x, y, yerr=None, **kw: bars.append(yerr) or errorbar(
        self, x, y, yerr=yerr, **kw))  # fmt: skip
    monkeypatch.setattr(Axes, "axhline", lambda self, y=0, **kw: lines.append((y, kw)) or axhline(self, y, **kw))
    assert plot_scores(results, tmp_path / "plot.png").stat().st_size > 1000
    by_k = sorted(results, key=lambda r: r["shots"])
    assert bars == [[[r["mean"] - r["ci95"][0] for r in by_k], [r["ci95"][1] - r["mean"] for r in by_k]]]
    assert [(y, kw["linestyle"]) for y, kw in lines] == [(25.0, "--")]


def test_results_json_records_labels_and_interval(classify_dir, fake_model, tmp_path):
    evaluate(fake_model, "classify", classify_dir, shots=[2], selection=["rices"], out_dir=tmp_path, progress=False)
    (rec,) = json.loads((tmp_path / "results.json").read_text())["results"]
    assert rec["labels"] == "true" and rec["n_bootstrap"] == 1000 and len(rec["ci95"]) == 2
    assert rec["ci95"][0] <= rec["mean"] <= rec["ci95"][1]
