"""Prompt ensembling for close-ended tasks (Flamingo, arXiv 2204.14198, Appendix A.2: "we ensemble the
outputs of the model across multiple permutations of the demonstrations").

The log-likelihood of each candidate is computed under several orderings of the same demonstrations and
averaged. Scores are length-normalised (per token) before averaging, as candidates are ranked by per-token
log-likelihood. Combinable with RICES: the demonstrations are retrieved once, then permuted.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np

from fewshot_eval.model import EvalModel, Prompt

__all__ = ["DEFAULT_ENSEMBLE", "ensemble_scores", "normalized_scores", "permutations"]

DEFAULT_ENSEMBLE = 6


def permutations(n: int, k: int, seed: int = 0) -> list[tuple[int, ...]]:
    """``k`` distinct orderings of ``n`` demonstrations (all of them when there are at most ``k``).

    The first is always the original order, so ``k = 1`` means no ensembling.
    """
    if k < 1:
        raise ValueError(f"ensemble size must be at least 1, got {k}")
    if math.factorial(n) <= k:
        return list(itertools.permutations(range(n)))
    rng = np.random.default_rng(seed)
    perms = [tuple(range(n))]
    seen = set(perms)
    while len(perms) < k:
        p = tuple(int(i) for i in rng.permutation(n))
        if p not in seen:
            seen.add(p)
            perms.append(p)
    return perms


def normalized_scores(model: EvalModel, prefix: Prompt, continuations: Sequence[str]) -> np.ndarray:
    """Per-token log-likelihood of each continuation after ``prefix`` (prefix scored once by the model)."""
    out = model.loglikelihood(prefix, list(continuations))
    return np.array([lp / max(n, 1) for lp, n in out], dtype=np.float64)


def ensemble_scores(
    model: EvalModel,
    build_prefix: Callable[[Sequence[int]], Prompt],
    n_demos: int,
    continuations: Sequence[str],
    k: int = DEFAULT_ENSEMBLE,
    seed: int = 0,
) -> np.ndarray:
    """Mean over demonstration orderings of the per-token log-likelihood of each continuation.

    Args:
        model: the model.
        build_prefix: order of demonstration indices -> prompt (demonstrations in that order, then the query).
        n_demos: number of demonstrations.
        continuations: the candidates (e.g. ``" circle<EOC>"`` for every class).
        k: number of orderings.
        seed: seed of the orderings.

    Returns:
        (len(continuations),) averaged scores.
    """
    perms = permutations(n_demos, k, seed)
    return np.mean([normalized_scores(model, build_prefix(p), continuations) for p in perms], axis=0)
