"""The weighted dataset mixture of Flamingo (arXiv 2204.14198, Section 3 "Training on a mixture of vision and
language datasets", and Appendix B.1.2 / Table 5).

The paper minimises ``sum_m lambda_m * E_{(x,y) ~ D_m} [-log p(y | x)]`` over M3W, ALIGN, LTIP and VTP
(weights 1.0 / 0.2 / 0.2 / 0.03) and found the *accumulation* strategy best (Table 3, "dataset strategy"):
every update draws one batch from each dataset, back-propagates ``lambda_m * loss_m`` for each in turn, sums the
gradients and takes ONE optimizer step. The ablation's alternative, *round-robin*, is here too
(``SourceSchedule``): each optimizer step trains on the batch of ONE dataset, the datasets taking turns.

``next_token_nll`` is the loss: next-token negative log-likelihood over text tokens, with padding and media
tokens carrying the label ``IGNORE_INDEX``. The mean is guarded, so a batch whose labels are all masked gives a
zero loss (and zero gradients), not NaN. ``token_nll`` is the same sum computed by the model itself, which runs
the frozen LM head (49k x 576 for SmolLM2) and the softmax only at the predicting positions, skipping padding,
media tokens and the last position.

The model contract: the mixture calls the (possibly DDP/FSDP-wrapped) model as ``model(**inputs, ...)``, where
``inputs`` are the batch's ``input_ids`` and ``attention_mask`` and, when the batch has them (not None), its
``media``, ``media_mask``, ``media_frame_mask``, ``segment_ids`` (a packed batch, ``packing``) and ``media_next``
(M3W rows whose tokens attend to the next image, ``Flamingo.phi``). ``token_nll``
(the training and held-out loss) reads ``model(**inputs, labels=labels, loss_reduction="sum").loss``, the summed next-token NLL over the label
positions; ``flamingo_logits`` reads ``model(**inputs).logits`` (B, L, V), or with ``logits_mask=`` (B, L) bool
the (P, V) logits of those positions. ``Flamingo.forward`` is that model; how it computes the summed loss (the
fused head loss, or the logits path under FSDP) is its own choice (``Flamingo.label_nll``).

Across processes the loss of a source is normalised by the number of label tokens in the *global* batch, so
DDP's gradient averaging yields exactly the gradient of the global token mean: a 2-process run equals a
1-process run with the same global batch even when the processes hold different numbers of tokens.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from flamingo_core.data.loader import IGNORE_INDEX

__all__ = [
    "DEFAULT_WEIGHTS",
    "DatasetMixture",
    "EmptySourceError",
    "STRATEGIES",
    "SourceLoss",
    "SourceSchedule",
    "accumulate_gradients",
    "flamingo_logits",
    "next_token_nll",
    "parse_weights",
    "token_nll",
]

DEFAULT_WEIGHTS: dict[str, float] = {"m3w": 1.0, "ltip": 0.2, "align": 0.2, "vtp": 0.03}
STRATEGIES = ("accumulation", "round-robin")  # the dataset strategies of the paper's Table 3


def parse_weights(text: str | Mapping[str, float] | None, names: list[str] | None = None) -> dict[str, float]:
    """``"m3w=1,ltip=0.2"`` -> ``{"m3w": 1.0, "ltip": 0.2}``; missing names get the paper's default (or 0).

    Raises:
        ValueError: a malformed entry, a negative weight, an unknown source name, or all weights zero.
    """
    weights: dict[str, float] = {}
    if isinstance(text, Mapping):
        weights = {k: float(v) for k, v in text.items()}
    elif text:
        for part in text.split(","):
            name, sep, value = part.partition("=")
            try:
                if not sep:
                    raise ValueError
                weights[name.strip()] = float(value)
            except ValueError:
                raise ValueError(f"--weights entry {part!r}: expected NAME=NUMBER, e.g. m3w=1.0,ltip=0.2") from None
    if names is not None:
        unknown = sorted(set(weights) - set(names))
        if unknown:
            raise ValueError(f"--weights names unknown source(s) {unknown}; sources are {names}")
        weights = {n: weights.get(n, DEFAULT_WEIGHTS.get(n, 0.0)) for n in names}
    bad = {k: v for k, v in weights.items() if not (v >= 0 and math.isfinite(v))}
    if bad:
        raise ValueError(f"dataset weights must be finite numbers >= 0, got {bad}")
    if weights and not any(v > 0 for v in weights.values()):
        raise ValueError("at least one dataset weight must be > 0")
    return weights


def next_token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token NLL and the number of predicted tokens.

    Args:
        logits: (B, L, V); position t predicts token t+1.
        labels: (B, L) token ids, IGNORE_INDEX where no loss is taken (padding, media tokens).

    Returns:
        ``(sum_nll, count)``: fp32 scalar and integer scalar. ``sum_nll / max(count, 1)`` is the mean.
    """
    shift_logits = logits[:, :-1].float()  # (B, L-1, V)
    shift_labels = labels[:, 1:]  # (B, L-1)
    count = (shift_labels != IGNORE_INDEX).sum()
    nll = F.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
                          ignore_index=IGNORE_INDEX, reduction="sum")
    return nll, count


def _model_inputs(batch: Mapping[str, Any]) -> dict[str, Any]:
    """The model inputs of a collated batch (the contract in the module docstring)."""
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    for key in ("media", "media_mask", "media_frame_mask", "segment_ids", "media_next"):
        if batch.get(key) is not None:
            inputs[key] = batch[key]
    return inputs


def flamingo_logits(model: torch.nn.Module, batch: Mapping[str, Any],
                    logits_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The model's logits on a collated batch: (B, L, V), or with ``logits_mask`` (B, L) bool only those
    positions' logits, (P, V)."""
    inputs = _model_inputs(batch)
    if logits_mask is not None:
        inputs["logits_mask"] = logits_mask
    return model(**inputs).logits


def token_nll(model: torch.nn.Module, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """``next_token_nll`` of a collated batch, computed by the model: ``(sum_nll, count)``.

    The model returns the summed NLL (``loss_reduction="sum"``), running its head only where a label is
    predicted; the count is that of the batch's label tokens.
    """
    labels = batch["labels"]
    out = model(**_model_inputs(batch), labels=labels, loss_reduction="sum")
    return out.loss, (labels[:, 1:] != IGNORE_INDEX).sum()


@dataclass
class SourceLoss:
    """One source's contribution to a step: summed NLL over this process's tokens and the token counts."""

    sum_nll: float
    count: int  # label tokens on this process
    global_count: int  # the normaliser: label tokens (or sequences, --loss-normalisation) over all processes
    weight: float


def accumulate_gradients(
    model: torch.nn.Module,
    batches: Mapping[str, Mapping[str, Any]],
    weights: Mapping[str, float],
    *,
    global_counts: Mapping[str, int] | None = None,
    world_size: int = 1,
    forward: Callable[[torch.nn.Module, Mapping[str, Any]], torch.Tensor] | None = None,
    backward: Callable[[torch.Tensor], None] | None = None,
    no_sync: Callable[[], contextlib.AbstractContextManager] | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
) -> dict[str, SourceLoss]:
    """The accumulation step: for each source, forward one batch and backprop ``weight * loss``.

    Gradients add up in ``.grad``; the caller takes one optimizer step afterwards. Sources with weight 0 are
    skipped. Under DDP, every backward but the last runs inside ``no_sync()`` so gradients are all-reduced
    once per step.

    Args:
        model: the (possibly DDP-wrapped) model.
        batches: source name -> collated batch (``input_ids``, ``attention_mask``, ``media``, ``labels``).
        weights: source name -> lambda.
        global_counts: source name -> the divisor over all processes: label tokens, or sequences under
            ``--loss-normalisation sequences``; defaults to this process's label tokens.
        world_size: number of processes whose gradients DDP averages.
        forward: ``forward(model, batch) -> logits`` (B, L, V); default: ``token_nll`` (the model's summed loss).
        backward: ``backward(loss)``, e.g. ``accelerator.backward``; defaults to ``loss.backward()``.
        no_sync: context manager factory that suspends gradient all-reduce (``lambda: accelerator.no_sync(m)``).
        autocast: context manager factory for mixed precision around the forward.

    Returns:
        source name -> SourceLoss (this process's summed NLL and counts).
    """
    backward = backward or (lambda loss: loss.backward())
    if forward is None:
        nll = token_nll
    else:
        def nll(m, b):
            logits = forward(m, b)
            return next_token_nll(logits, b["labels"].to(logits.device))
    names = [n for n in batches if weights.get(n, 0.0) > 0]
    out: dict[str, SourceLoss] = {}
    for i, name in enumerate(names):
        batch = batches[name]
        local = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        total = int(global_counts[name]) if global_counts is not None else local
        sync = no_sync() if (no_sync is not None and i < len(names) - 1) else contextlib.nullcontext()
        with sync:
            with autocast() if autocast is not None else contextlib.nullcontext():
                sum_nll, _ = nll(model, batch)
            # guarded mean over the global batch; times world_size because DDP averages over processes
            loss = sum_nll * (world_size / max(total, 1))
            backward(weights[name] * loss)
        out[name] = SourceLoss(float(sum_nll.detach()), local, total, float(weights[name]))
    return out


class SourceSchedule:
    """The dataset strategy: which sources optimizer step ``s`` reads, and the weight each one's loss gets.

    - ``accumulation``: every step reads every source with weight > 0 and back-propagates ``lambda_m * loss_m``.
    - ``round-robin``: every step reads ONE source and back-propagates its loss with weight 1. The weights set
      how often a source's turn comes: smooth weighted round-robin, the schedule of stage 1's
      ``--strategy round-robin`` (``contrastive_encoder.data.mixing.StepPlanner``), so source ``m`` takes
      ``lambda_m / sum(lambda)`` of the steps, spread evenly, ties going to the earlier source (equal weights
      cycle m3w, ltip, align, vtp). Sources with weight 0 never get a turn.

    The schedule is a pure function of the step, the same on every process, so a resumed run (and every DDP
    process) continues the cycle at the right source.

    Args:
        weights: source name -> lambda, in source order.
        strategy: one of ``STRATEGIES``.
    """

    def __init__(self, weights: Mapping[str, float], strategy: str = "accumulation"):
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown dataset strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")
        self.strategy = strategy
        self.weights = {n: float(w) for n, w in weights.items() if w > 0}
        if not self.weights:
            raise ValueError("at least one dataset weight must be > 0")
        self.names = list(self.weights)
        self._turns = None
        if strategy == "round-robin":
            from contrastive_encoder.data.mixing import StepPlanner

            # one example per "dataset", batch 1: only the planner's turn order is used (plan(s) names the
            # source of step s, positions(s) counts every source's turns before s); the loaders keep their own
            # data positions
            self._turns = StepPlanner([1] * len(self.names), 1, list(self.weights.values()), "round-robin")

    def sources(self, step: int) -> list[str]:
        """The sources optimizer step ``step`` (0-based) reads a batch from."""
        if self._turns is None:
            return list(self.names)
        return [self.names[self._turns.plan(step)[0].keys[0][0]]]

    def loss_weights(self, names: list[str]) -> dict[str, float]:
        """The factor on each of a step's source losses.

        Round-robin uses the weights for the frequency of the turns, not as a factor on the loss as well, which
        would count them twice (source m's share of the summed gradient would go as lambda_m**2). Each step is
        then the gradient of one dataset's mean NLL, its size (gradient clipping, learning rate) the same for
        every source, and the expected step is that of ``sum_m lambda_m * loss_m / sum(lambda)``, the
        accumulation objective; compute goes to the sources in proportion to their weights, so a low-weight
        source (VTP, 0.03) costs few forward/backward passes instead of a quarter of them for a small update.
        """
        if self._turns is None:
            return {n: self.weights[n] for n in names}
        return dict.fromkeys(names, 1.0)

    def batches_before(self, step: int) -> dict[str, int]:
        """Batches each source has given before step ``step``: where its loader resumes."""
        if self._turns is None:
            return dict.fromkeys(self.names, step)
        return dict(zip(self.names, self._turns.positions(step)))


class EmptySourceError(ValueError):
    """A source gave no readable sample in a bounded number of draws; the message names it and why."""


class DatasetMixture:
    """Named, weighted, endless batch iterators; ``next()`` gives the batches of the next optimizer step: one per
    source with weight > 0 (``accumulation``), or one of the source whose turn it is (``round-robin``, see
    ``SourceSchedule``). A source's iterator is read only at its turns.

    A batch whose samples were all corrupt is replaced by the source's last good batch with every label
    masked (zero loss, zero gradient), so every process still runs the same forward/backward sequence. A source
    that has not yet given one good batch is read on, but at most ``max_bad_draws`` batches: then it has no
    usable data (every sample missing or corrupt) and ``EmptySourceError`` stops the run instead of a loop
    that never ends.

    Args:
        loaders: source name -> endless iterable of collated batches.
        weights: source name -> lambda.
        on_skip: called with each SkippedSample (counting / logging).
        max_bad_draws: source name (or all) -> batches without a good sample after which the source is given up.
        strategy: ``accumulation`` or ``round-robin``.
        start_step: the optimizer step of the first ``next()`` (a resumed run; the loaders start at
            ``schedule.batches_before(start_step)``).
    """

    def __init__(self, loaders: Mapping[str, Any], weights: Mapping[str, float],
                 on_skip: Callable[[Any], None] | None = None, max_bad_draws: int | Mapping[str, int] = 256,
                 strategy: str = "accumulation", start_step: int = 0):
        self.loaders = dict(loaders)
        self.weights = {n: float(weights.get(n, 0.0)) for n in self.loaders}
        self.active = [n for n in self.loaders if self.weights[n] > 0]
        self.schedule = SourceSchedule({n: self.weights[n] for n in self.active}, strategy)
        self.step = start_step  # the optimizer step whose batches the next call gives
        self.on_skip = on_skip
        self.max_bad_draws = ({n: int(max_bad_draws.get(n, 256)) for n in self.loaders}
                              if isinstance(max_bad_draws, Mapping) else dict.fromkeys(self.loaders, int(max_bad_draws)))
        self._iters: dict[str, Iterator] = {}
        self._last_good: dict[str, dict[str, Any]] = {}
        self._first_skip: dict[str, Any] = {}
        self._skipped_where: dict[str, set[str]] = {}  # distinct samples skipped, until a good batch

    def _next(self, name: str) -> dict[str, Any]:
        if name not in self._iters:
            self._iters[name] = iter(self.loaders[name])
        batch = next(self._iters[name])
        for s in batch.get("skipped", ()):
            self._first_skip.setdefault(name, s)
            if name not in self._last_good:
                self._skipped_where.setdefault(name, set()).add(s.where)
            if self.on_skip is not None:
                self.on_skip(s)
        return batch

    def _no_good_batch(self, name: str, draws: int) -> EmptySourceError:
        first = self._first_skip.get(name)
        example = f" (first: {first.where}: {first.reason})" if first is not None else ""
        return EmptySourceError(
            f"training source {name!r} gave no readable sample in {draws} batches: all "
            f"{len(self._skipped_where.get(name, ()))} distinct samples drawn were skipped{example}; fix the data, "
            f"or give --weights {name}=0 to train without it")

    def next(self) -> dict[str, dict[str, Any]]:
        out = {}
        names = self.schedule.sources(self.step)
        self.step += 1
        for name in names:
            batch = self._next(name)
            if "input_ids" not in batch:
                fallback, draws = self._last_good.get(name), 1
                while fallback is None:  # nothing good seen yet on this source: read on, a bounded number of times
                    if draws >= self.max_bad_draws[name]:
                        raise self._no_good_batch(name, draws)
                    b = self._next(name)
                    draws += 1
                    fallback = b if "input_ids" in b else None
                batch = dict(fallback, labels=torch.full_like(fallback["labels"], IGNORE_INDEX), meta=[])
            else:
                self._last_good[name] = batch
            out[name] = batch
        return out
