"""The bootstrap 95% confidence interval: equal to a direct recomputation of the documented resampling, close to
the normal approximation for a 0/100 score, wider for a wider spread, paired across trials; and every result
record's ci95 is the interval of its own per-query scores."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fewshot_eval.bootstrap import bootstrap_ci
from fewshot_eval.datasets import load_task_data
from fewshot_eval.evaluate import evaluate
from fewshot_eval.metrics import cider, vqa_score
from fewshot_eval.scoring import score_predictions


def _direct(scores: np.ndarray, b: int, seed: int) -> tuple[float, float]:
    """The resampling as bootstrap.py's docstring states it, one resample at a time."""
    rng = np.random.default_rng(seed)
    t, n = scores.shape
    q_idx = rng.integers(0, n, size=(b, n))
    t_idx = rng.integers(0, t, size=(b, t)) if t > 1 else np.zeros((b, 1), dtype=int)
    stats = [scores[t_idx[i]][:, q_idx[i]].mean() for i in range(b)]
    lo, hi = np.quantile(stats, [0.025, 0.975])
    return float(lo), float(hi)


@pytest.mark.parametrize("trials", [1, 3])
def test_equals_a_direct_computation(trials):
    scores = np.random.default_rng(5).uniform(0, 100, size=(trials, 57))
    got = bootstrap_ci(scores, n_bootstrap=300, seed=11)
    assert got == pytest.approx(_direct(scores, 300, 11), abs=1e-9)
    assert got == bootstrap_ci(scores, n_bootstrap=300, seed=11)  # deterministic
    assert got != bootstrap_ci(scores, n_bootstrap=300, seed=12)


def test_a_0_100_score_matches_the_normal_approximation_and_spread_widens_it():
    n, p = 400, 0.3
    hits = np.zeros(n)
    hits[: int(n * p)] = 100.0
    lo, hi = bootstrap_ci(hits, n_bootstrap=4000, seed=0)
    half = 1.96 * 100 * np.sqrt(p * (1 - p) / n)  # 4.49 points
    assert lo == pytest.approx(30.0 - half, abs=0.8) and hi == pytest.approx(30.0 + half, abs=0.8)
    narrow = np.where(hits > 0, 40.0, 25.7)  # the same mean, a seventh of the spread
    nlo, nhi = bootstrap_ci(narrow, n_bootstrap=4000, seed=0)
    assert nlo < narrow.mean() < nhi and (nhi - nlo) < 0.5 * (hi - lo)


def test_trials_are_paired_and_resampled():
    one = np.random.default_rng(1).uniform(0, 100, size=200)
    # identical trials add nothing: the queries are resampled with the same indices for every trial
    assert bootstrap_ci(np.stack([one, one, one]), seed=3) == pytest.approx(bootstrap_ci(one, seed=3), abs=1e-9)
    # trials that disagree (one easy, one hard) widen the interval
    lo1, hi1 = bootstrap_ci(np.stack([one, one]), seed=3)
    lo2, hi2 = bootstrap_ci(np.stack([one - 10, one + 10]), seed=3)
    assert hi2 - lo2 > hi1 - lo1 + 5


def test_per_query_scores_average_to_the_reported_score(coco_dir, vqa_dir, fake_model, tmp_path):
    (res,) = evaluate(fake_model, "vqa", vqa_dir, shots=[2], selection=["random"], trials=1, out_dir=tmp_path,
                      n_bootstrap=200, progress=False)  # fmt: skip
    recs = [json.loads(x) for x in (tmp_path / "predictions" / "vqa_random_2shot_ens1_trial0.rank0.jsonl")
            .read_text().splitlines()]  # fmt: skip
    _, query = load_task_data("vqa", vqa_dir)
    by_id = {r["id"]: r["prediction"] for r in recs}
    per_q = [100 * vqa_score(by_id[ex.id], ex.references) for ex in query.examples]  # in query order
    assert res["mean"] == pytest.approx(np.mean(per_q))
    assert res["ci95"] == pytest.approx(list(bootstrap_ci(per_q, 200, 0)), abs=1e-9)
    assert res["n_bootstrap"] == 200 and res["ci95"][0] <= res["mean"] <= res["ci95"][1]
    saved = json.loads((tmp_path / "results.json").read_text())["results"][0]
    assert saved["ci95"] == pytest.approx(res["ci95"]) and saved["labels"] == "true"

    # CIDEr per image keeps the IDF of the whole set: its mean is the corpus CIDEr
    _, cap_query = load_task_data("caption", coco_dir)
    preds = {ex.id: ["a red square", "a blue square on white"][int(ex.id) % 2] for ex in cap_query.examples}
    means, each = score_predictions("caption", {i: {"prediction": p} for i, p in preds.items()}, cap_query,
                                    per_query=True)  # fmt: skip
    corpus, _ = cider(preds, {ex.id: ex.references for ex in cap_query.examples})
    assert means["CIDEr"] == pytest.approx(100 * corpus) == pytest.approx(np.mean(list(each["CIDEr"].values())))
    assert len(set(each["CIDEr"].values())) > 1  # per image, not the corpus score repeated
