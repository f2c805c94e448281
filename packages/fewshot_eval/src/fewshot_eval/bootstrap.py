"""Uncertainty of a few-shot score: a percentile bootstrap 95% confidence interval of the mean over queries,
and over trials when there are several (Efron & Tibshirani, "An Introduction to the Bootstrap", 1993, Ch. 13).

The input is one score per query per trial, on the scale of the reported mean: VQA accuracy per question, top-1
/ top-5 as 0 or 100 per query, CIDEr per image. CIDEr's per-image scores keep the IDF weights computed from the
whole evaluated set (``metrics.cider``): the bootstrap resamples the images' scores, not the corpus the weights
come from, so their mean is exactly the reported CIDEr while each resample's mean approximates CIDEr recomputed
on that resample (whose IDF would shift with the duplicated images).

Each resample draws the queries with replacement, the same query indices for every trial (paired: the trials
scored the same queries, so a query's difficulty is shared between them, not noise), and the trials with
replacement. The statistic is the mean of the resampled (trials x queries) table; the interval is its 2.5th
and 97.5th percentiles (``numpy.quantile``, linear interpolation). Deterministic: the generator is
``numpy.random.default_rng(seed)``, drawing first the query indices ``integers(0, N, size=(B, N))``, then, only
when ``T > 1``, the trial indices ``integers(0, T, size=(B, T))``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["N_BOOTSTRAP", "bootstrap_ci"]

N_BOOTSTRAP = 1000  # resamples; the 2.5% tails then rest on 25 resamples each


def bootstrap_ci(scores, n_bootstrap: int = N_BOOTSTRAP, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``scores``.

    Args:
        scores: (T, N) per-query scores of T trials over the same N queries, or (N,) for one trial.
        n_bootstrap: resamples B.
        seed: seed of the resampling (see the module docstring for the exact draws).
        level: coverage of the interval.

    Returns:
        (lo, hi) on the scale of ``scores``; (nan, nan) without queries.
    """
    s = np.asarray(scores, dtype=np.float64)
    s = s[None] if s.ndim == 1 else s
    if s.ndim != 2:
        raise ValueError(f"scores must be (trials, queries) or (queries,), got shape {s.shape}")
    if n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be at least 1 resample, got {n_bootstrap}")
    n_trials, n = s.shape
    if n == 0 or n_trials == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    q_idx = rng.integers(0, n, size=(n_bootstrap, n))
    # how often each query is drawn, (B, N): the mean over the resampled queries is a weighted mean, which keeps
    # memory at B x N whatever the number of trials
    rows = np.arange(n_bootstrap)[:, None] * n
    weights = np.bincount((rows + q_idx).ravel(), minlength=n_bootstrap * n).reshape(n_bootstrap, n)
    per_trial = s @ weights.T / n  # (T, B): each trial's mean over the resampled queries
    if n_trials > 1:
        t_idx = rng.integers(0, n_trials, size=(n_bootstrap, n_trials))
        stats = per_trial[t_idx, np.arange(n_bootstrap)[:, None]].mean(axis=1)  # (B,)
    else:
        stats = per_trial[0]
    tail = (1.0 - level) / 2
    lo, hi = np.quantile(stats, [tail, 1.0 - tail])
    return float(lo), float(hi)
