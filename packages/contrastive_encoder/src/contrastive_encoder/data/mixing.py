"""Which examples each optimizer step sees when training on several datasets at once.

Flamingo (arXiv 2204.14198, appendix on contrastive pretraining) compares three ways of training on several datasets with
weights lambda_m:

- ``accumulation`` (the paper's choice, the default): every step takes one batch from *each* dataset and
  combines the per-dataset gradients by the weighted sum  sum_m lambda_m * grad L_m  before one update;
- ``merge``: one batch per step whose examples come from all datasets (a fixed per-step quota proportional to
  the weights);
- ``round-robin``: one dataset per step, chosen in turn by smooth weighted round-robin, one update per step.

The plan is a pure function of the step: resuming at step s and running on W processes need nothing but s.
Each dataset is read as an endless stream of epochs, each a fresh permutation seeded by (seed, dataset, epoch).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["STRATEGIES", "MicroBatch", "StepPlanner"]

STRATEGIES = ("accumulation", "merge", "round-robin")


@dataclass
class MicroBatch:
    """One forward/backward: global keys ``(dataset, index, seed)`` and the weight of its loss."""

    keys: list[tuple[int, int, int]]
    weight: float

    def shard(self, rank: int, world: int) -> list[tuple[int, int, int]]:
        """This process's contiguous slice of the global batch (rank order = gather order)."""
        per = len(self.keys) // world
        return self.keys[rank * per : (rank + 1) * per]


class StepPlanner:
    """Deterministic per-step micro-batches.

    Args:
        sizes: number of examples in each dataset.
        weights: lambda per dataset (default all 1).
        strategy: one of STRATEGIES.
        batch_size: the *global* batch size of one micro-batch (all processes together).
        seed: shuffling and augmentation seed.
    """

    def __init__(
        self, sizes: list[int], batch_size: int, weights: list[float] | None = None,
        strategy: str = "accumulation", seed: int = 0,
    ):
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy '{strategy}': expected one of {', '.join(STRATEGIES)}")
        weights = [1.0] * len(sizes) if weights is None else [float(w) for w in weights]
        if len(weights) != len(sizes):
            raise ValueError(f"{len(weights)} dataset weights given for {len(sizes)} datasets")
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"dataset weights must be >= 0 with a positive sum, got {weights}")
        if any(n <= 0 for n in sizes):
            raise ValueError(f"every dataset must hold examples, got sizes {sizes}")
        self.sizes, self.weights, self.strategy = list(sizes), weights, strategy
        self.batch_size, self.seed = int(batch_size), int(seed)
        self.quota = self._merge_quota() if strategy == "merge" else None
        self._perms: dict[tuple[int, int], torch.Tensor] = {}
        self._rr = (0, [0.0] * len(sizes), [0] * len(sizes))  # (step, credits, per-dataset batches so far)

    def _merge_quota(self) -> list[int]:
        """Largest-remainder split of the batch in proportion to the weights."""
        total = sum(self.weights)
        exact = [self.batch_size * w / total for w in self.weights]
        quota = [int(x) for x in exact]
        order = sorted(range(len(exact)), key=lambda k: exact[k] - quota[k], reverse=True)
        for k in order[: self.batch_size - sum(quota)]:
            quota[k] += 1
        return quota

    def _index(self, d: int, position: int) -> int:
        epoch, offset = divmod(position, self.sizes[d])
        key = (d, epoch)
        if key not in self._perms:
            if len(self._perms) > 8:
                self._perms.clear()
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + d * 10_007 + epoch)
            self._perms[key] = torch.randperm(self.sizes[d], generator=g)
        return int(self._perms[key][offset])

    def _keys(self, d: int, start: int, count: int) -> list[tuple[int, int, int]]:
        # augmentation seed: unique per (dataset, stream position), independent of the step layout
        return [(d, self._index(d, p), (self.seed + 1) * 7_919_017 + d * 1_000_000_007 + p) for p in range(start, start + count)]

    def _round_robin_state(self, step: int) -> tuple[list[float], list[int]]:
        """Replay smooth weighted round-robin up to ``step`` (cached, so sequential calls are O(1))."""
        at, credits, counts = self._rr
        if step < at:
            at, credits, counts = 0, [0.0] * len(self.sizes), [0] * len(self.sizes)
        credits, counts = list(credits), list(counts)
        total = sum(self.weights)
        while at < step:
            credits = [c + w for c, w in zip(credits, self.weights)]
            k = max(range(len(credits)), key=lambda i: credits[i])
            credits[k] -= total
            counts[k] += 1
            at += 1
        self._rr = (at, credits, counts)
        return credits, counts

    def plan(self, step: int) -> list[MicroBatch]:
        """The micro-batches of optimizer step ``step`` (0-based)."""
        b = self.batch_size
        if self.strategy == "accumulation":
            return [MicroBatch(self._keys(d, step * b, b), w) for d, w in enumerate(self.weights) if w > 0]
        if self.strategy == "merge":
            keys = [k for d, q in enumerate(self.quota) for k in self._keys(d, step * q, q)]
            return [MicroBatch(keys, 1.0)]
        credits, counts = self._round_robin_state(step)
        k = max(range(len(credits)), key=lambda i: credits[i] + self.weights[i])
        return [MicroBatch(self._keys(k, counts[k] * b, b), 1.0)]

    def positions(self, step: int) -> list[int]:
        """Examples consumed from each dataset before ``step`` (saved in checkpoints as the data position)."""
        b = self.batch_size
        if self.strategy == "accumulation":
            return [step * b if w > 0 else 0 for w in self.weights]
        if self.strategy == "merge":
            return [step * q for q in self.quota]
        return [c * b for c in self._round_robin_state(step)[1]]

    def state_dict(self) -> dict:
        return {"sizes": self.sizes, "weights": self.weights, "strategy": self.strategy,
                "batch_size": self.batch_size, "seed": self.seed}
