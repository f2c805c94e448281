"""ROC-AUC equals its definition (the share of positive-negative pairs ordered right, ties one half) on small
cases with and without ties, and sklearn's roc_auc_score where sklearn is installed; its per-query components
average to it."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fewshot_eval.metrics.roc_auc import roc_auc, roc_auc_components


def _pairwise(labels, scores) -> float:
    pos = [s for y, s in zip(labels, scores) if y == 1]
    neg = [s for y, s in zip(labels, scores) if y == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def _cases(n_cases: int = 400):
    rng = np.random.default_rng(0)
    for i in range(n_cases):
        n = int(rng.integers(2, 40))
        labels = rng.integers(0, 2, n)
        labels[:2] = (0, 1)  # both classes
        rng.shuffle(labels)
        # half the cases on a coarse grid, so that scores tie within and across classes
        scores = rng.integers(0, 4, n) / 3 if i % 2 else rng.normal(size=n)
        yield labels.tolist(), scores.tolist()


def test_known_values():
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75  # sklearn's documented example
    assert roc_auc([0, 1], [0.3, 0.3]) == 0.5 and roc_auc([1, 0], [0.9, 0.1]) == 1.0 and roc_auc([1, 0], [0, 1]) == 0
    assert roc_auc([1, 0, 1, 0, 1], [0.5, 0.5, 0.9, 0.2, 0.5]) == 5 / 6  # exact: 5/6 rounded once


def test_equals_the_pairwise_definition_and_the_components_average_to_it():
    for labels, scores in _cases():
        auc = roc_auc(labels, scores)
        assert auc == pytest.approx(_pairwise(labels, scores), abs=1e-15)
        assert np.mean(roc_auc_components(labels, scores)) == pytest.approx(auc, abs=1e-12)
        assert roc_auc(labels, [-s for s in scores]) == pytest.approx(1 - auc, abs=1e-15)


def test_equals_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    for labels, scores in _cases(2000):
        assert roc_auc(labels, scores) == pytest.approx(metrics.roc_auc_score(labels, scores), abs=1e-15)


@pytest.mark.parametrize("labels,scores,match", [
    ([1, 1], [0.2, 0.3], "needs both classes"), ([0, 2], [0.2, 0.3], "0 or 1"),
    ([0, 1], [0.2], "one score per label"), ([0, 1], [0.2, float("nan")], "NaN"),
])  # fmt: skip
def test_bad_input(labels, scores, match):
    with pytest.raises(ValueError, match=match):
        roc_auc(labels, scores)
