"""ROC-AUC, the area under the receiver operating characteristic curve: Hateful Memes' metric (Kiela et al.,
arXiv 2005.04790), over the probability of the positive ("hateful") class.

Equal to ``sklearn.metrics.roc_auc_score`` on binary labels, ties included: the AUC is the probability that a
random positive scores above a random negative, a tie counting one half (the trapezoid sklearn integrates
between tied points), computed exactly from midranks (Mann-Whitney U) and rounded once to a float.

Per query, ``roc_auc_components`` gives DeLong's structural components (DeLong et al., Biometrics 1988) scaled
so that their mean over all queries is the AUC: a positive's share of negatives it outscores, a negative's share
of positives that outscore it, each weighted by half the set over its class's size. The bootstrap resamples
these, as it resamples CIDEr's per-image scores computed with the whole set's IDF: their mean is exactly the
AUC, and a resample's mean approximates the AUC recomputed on that resample.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

import numpy as np

__all__ = ["positive_probability", "roc_auc", "roc_auc_components"]


def _check(labels: Sequence[int], scores: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    y, s = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"{y.shape} labels but {s.shape} scores; expected one score per label")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels must be 0 or 1, got {sorted(set(y.tolist()) - {0, 1})[:3]}")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == len(y):
        raise ValueError(f"ROC-AUC needs both classes among the labels, got {len(y)} of class {int(y[0])} only"
                         if len(y) else "ROC-AUC of no labels is undefined")  # fmt: skip
    return y.astype(bool), s


def _twice_midranks(s: np.ndarray) -> np.ndarray:
    """2 x the 1-based rank of each score, tied scores sharing the mean of their ranks (an integer, doubled)."""
    order = np.argsort(s, kind="stable")
    sorted_s = s[order]
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])  # first index of each run of ties
    ends = np.r_[starts[1:], len(s)]  # one past its last
    twice = np.empty(len(s), dtype=np.int64)
    for a, b in zip(starts, ends):
        twice[order[a:b]] = a + b + 1  # ranks a+1 .. b average (a + b + 1) / 2
    return twice


def roc_auc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Area under the ROC curve (0-1) of ``scores`` for ``labels`` (1 positive, 0 negative).

    Raises:
        ValueError: labels other than 0/1, NaN scores, lengths that differ, or one class only (as sklearn).
    """
    y, s = _check(labels, scores)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    twice_rank_sum = int(_twice_midranks(s)[y].sum())
    return float(Fraction(twice_rank_sum - n_pos * (n_pos + 1), 2 * n_pos * n_neg))


def roc_auc_components(labels: Sequence[int], scores: Sequence[float]) -> list[float]:
    """Per-query values (0-1 scale, not bounded by 1) whose mean is ``roc_auc(labels, scores)``: the module
    docstring's scaled structural components."""
    y, s = _check(labels, scores)
    n = len(y)
    pos, neg = s[y], s[~y]
    sorted_pos, sorted_neg = np.sort(pos), np.sort(neg)

    def share_below(values: np.ndarray, of: np.ndarray) -> np.ndarray:  # P(other < v) + P(other = v) / 2
        lo = np.searchsorted(of, values, side="left")
        hi = np.searchsorted(of, values, side="right")
        return (lo + hi) / (2 * len(of))

    out = np.empty(n, dtype=np.float64)
    out[y] = share_below(pos, sorted_neg) * n / (2 * len(pos))
    out[~y] = (1 - share_below(neg, sorted_pos)) * n / (2 * len(neg))
    return out.tolist()


def positive_probability(record: dict, positive: str) -> float:
    """The probability of class ``positive`` in a close-ended prediction record: the softmax of the record's
    ``scores`` (per-token log-likelihoods, aligned with its ``ranking`` of class names), as OpenFlamingo takes
    it for Hateful Memes.

    Raises:
        ValueError: the record has no ``scores`` for ``positive``.
    """
    ranking, scores = record.get("ranking"), record.get("scores")
    if not isinstance(ranking, list) or not isinstance(scores, list) or positive not in ranking[: len(scores)]:
        raise ValueError(f"prediction {record.get('id')!r} has no score of class {positive!r} (expected 'ranking' "
                         "and 'scores' of every class, as the close-ended runner writes them)")  # fmt: skip
    s = np.asarray(scores[: len(ranking)], dtype=np.float64)
    p = np.exp(s - s.max())
    return float(p[ranking.index(positive)] / p.sum())
