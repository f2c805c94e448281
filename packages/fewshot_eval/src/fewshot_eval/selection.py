"""Choosing demonstrations from the support set: seeded random trials, class-balanced trials (classification)
or RICES (Flamingo, arXiv 2204.14198, Sec. 3 and Appendix A.2).

A selector maps a query to an ordered list of support indices. Random selection draws from a generator seeded by
(seed, trial, query id), so a query's demonstrations do not depend on batching, process count or resumption.
Zero-shot prompts use ``ZeroShotSelector`` whatever the method: the paper's two text-only demonstrations are
fixed, not chosen by (or retrieved for) the query, so they cannot carry the query's answer.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from fewshot_eval.rices import RICES

__all__ = [
    "SELECTIONS", "TRIAL_SELECTIONS", "BalancedSelector", "RandomSelector", "RicesSelector", "Selector",
    "ZeroShotSelector", "check_balanced_support", "mean_std",
]  # fmt: skip

SELECTIONS = ("random", "rices", "balanced")
TRIAL_SELECTIONS = ("random", "balanced")  # seeded draws, repeated over --trials; RICES is deterministic
_BALANCED_STREAM = 0x62616C61  # "bala": apart from random selection's stream for the same (seed, trial, id)


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


class BalancedSelector(RandomSelector):
    """Class-balanced random demonstrations (classification): ``k`` shots over ``C`` classes cover ``min(k, C)``
    classes, ``k // C`` examples of each and one more for ``k % C`` classes drawn at random; examples are drawn
    without replacement within their class, never the query itself, and the prompt order is shuffled.

    Which classes get the remainder (or, for ``k < C``, which classes appear) is drawn per (seed, trial, query
    id) without looking at the query's label (the selector is never given it). A strategy blind to the image,
    such as copying a label from the prompt, then scores chance; a gain over chance measures reading the
    images. Choosing the classes by the query's label would put its answer in every prompt.

    Args:
        support_ids: ids of the support examples.
        support_labels: their class names, in the same order.
        seed: base seed.
        trial: trial number; each trial draws different demonstrations.
        classes: the set's classes (default: those of ``support_labels``, in order of appearance).
    """

    def __init__(self, support_ids: Sequence[str], support_labels: Sequence[str], seed: int = 0, trial: int = 0,
                 classes: Sequence[str] | None = None):  # fmt: skip
        super().__init__(support_ids, seed, trial)
        if len(support_labels) != len(self.support_ids):
            raise ValueError(f"{len(support_labels)} labels for {len(self.support_ids)} support examples")
        self.classes = list(classes) if classes is not None else list(dict.fromkeys(support_labels))
        index = {c: j for j, c in enumerate(self.classes)}
        of_class = np.array([index[label] for label in support_labels], dtype=np.int64)
        self.by_class = [np.flatnonzero(of_class == j) for j in range(len(self.classes))]  # support indices

    def select(self, query_ids: Sequence[str], k: int) -> list[list[int]]:
        out, n_classes = [], len(self.classes)
        for qid in query_ids:
            rng = np.random.default_rng([self.seed, self.trial, _stable_hash(str(qid)), _BALANCED_STREAM])
            counts = np.full(n_classes, k // n_classes)
            counts[rng.choice(n_classes, size=k % n_classes, replace=False)] += 1
            excluded = self._pos.get(str(qid), [])
            picked: list[int] = []
            for c, n in enumerate(counts):
                if n == 0:
                    continue
                pool = self.by_class[c][~np.isin(self.by_class[c], excluded)] if excluded else self.by_class[c]
                if n > len(pool):
                    raise ValueError(f"cannot draw {n} demonstrations of class {self.classes[c]!r} from {len(pool)}")
                picked.extend(int(i) for i in rng.choice(pool, size=int(n), replace=False))
            out.append([picked[i] for i in rng.permutation(len(picked))])
        return out


def check_balanced_support(support_labels: Sequence[str], classes: Sequence[str], shots: Sequence[int],
                           shared_labels: Sequence[str], source: object, split: str) -> str | None:  # fmt: skip
    """A one-line message when a class has too few support examples for class-balanced prompts of the largest
    shot count, else None.

    Args:
        support_labels: the support examples' classes.
        classes: the set's classes.
        shots: the shot counts.
        shared_labels: classes of the queries that are also support examples: a query is never its own
            demonstration, so its class has one fewer for it.
        source, split: the support set, named in the message.
    """
    k = max(shots, default=0)
    if k == 0 or not classes:
        return None
    need = math.ceil(k / len(classes))  # the largest per-class count a k-shot prompt can ask for
    have, shared = Counter(support_labels), set(shared_labels)
    short = next((c for c in classes if have[c] - (c in shared) < need), None)
    if short is None:
        return None
    besides = f" ({have[short] - 1} besides a query that is one of them)" if short in shared else ""
    return (f"--shots {k} with --selection balanced needs {need} demonstration{'s' if need > 1 else ''} of each of "
            f"{len(classes)} classes; class {short!r} has {have[short]}{besides} in {source} (split {split!r})")


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
