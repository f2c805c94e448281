"""Choosing demonstrations from the support set: seeded random trials or RICES (Flamingo, arXiv 2204.14198,
Sec. 3 and Appendix A.2).

A selector maps a query to an ordered list of support indices. Random selection draws from a generator seeded by
(seed, trial, query id), so a query's demonstrations do not depend on batching, process count or resumption.
Zero-shot prompts use ``ZeroShotSelector`` whatever the method: the paper's two text-only demonstrations are
fixed, not chosen by (or retrieved for) the query, so they cannot carry the query's answer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from fewshot_eval.rices import RICES

__all__ = ["SELECTIONS", "RandomSelector", "RicesSelector", "Selector", "ZeroShotSelector", "mean_std"]

SELECTIONS = ("random", "rices")


def _stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


class Selector(Protocol):
    def select(self, query_ids: Sequence[str], k: int) -> list[list[int]]:
        """For each query, ``k`` support indices in prompt order."""
        ...


class RandomSelector:
    """Uniformly random demonstrations, never the query itself.

    Args:
        support_ids: ids of the support examples.
        seed: base seed.
        trial: trial number; each trial draws different demonstrations.
    """

    def __init__(self, support_ids: Sequence[str], seed: int = 0, trial: int = 0):
        self.support_ids = [str(i) for i in support_ids]
        self._pos: dict[str, list[int]] = {}
        for i, sid in enumerate(self.support_ids):
            self._pos.setdefault(sid, []).append(i)
        self.seed, self.trial = seed, trial

    def select(self, query_ids: Sequence[str], k: int) -> list[list[int]]:
        out = []
        for qid in query_ids:
            excluded = self._pos.get(str(qid), [])
            n = len(self.support_ids) - len(excluded)
            if k > n:
                raise ValueError(f"cannot draw {k} demonstrations from a support set of {n}")
            rng = np.random.default_rng([self.seed, self.trial, _stable_hash(str(qid))])
            pool = np.setdiff1d(np.arange(len(self.support_ids)), excluded, assume_unique=True)
            out.append([int(i) for i in rng.choice(pool, size=k, replace=False)])
        return out


class ZeroShotSelector(RandomSelector):
    """The same demonstrations for every query (zero-shot's text-only ones): the first ``k`` of one seeded
    permutation of the support set, passing over a query's own entry (when support and queries share a split).
    Arguments as ``RandomSelector``.
    """

    def __init__(self, support_ids: Sequence[str], seed: int = 0, trial: int = 0):
        super().__init__(support_ids, seed, trial)
        self.order = np.random.default_rng([seed, trial, 0]).permutation(len(self.support_ids)).tolist()

    def select(self, query_ids: Sequence[str], k: int) -> list[list[int]]:
        out = []
        for qid in query_ids:
            pool = [i for i in self.order if self.support_ids[i] != str(qid)]
            if k > len(pool):
                raise ValueError(f"cannot draw {k} demonstrations from a support set of {len(pool)}")
            out.append(pool[:k])
        return out


class RicesSelector:
    """The k support examples most similar to the query image, most similar last.

    Args:
        rices: the support index.
        query_features: query id -> (D,) embedding.
    """

    def __init__(self, rices: RICES, query_features: dict[str, np.ndarray]):
        self.rices, self.query_features = rices, query_features

    def select(self, query_ids: Sequence[str], k: int) -> list[list[int]]:
        feats = np.stack([self.query_features[str(q)] for q in query_ids])
        return self.rices.search(feats, k, exclude_ids=[str(q) for q in query_ids])


def mean_std(scores: Sequence[float]) -> tuple[float, float]:
    """Mean and (population) standard deviation over trials; std is 0 for a single trial."""
    a = np.asarray(list(scores), dtype=np.float64)
    if a.size == 0:
        return float("nan"), float("nan")
    return float(a.mean()), float(a.std())
