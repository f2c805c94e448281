"""The evaluation's jobs and its prompting: one job per (selection, shots, trial), each with its demonstration
selector, and the runner that turns a batch of queries into prompts, calls the model and returns the prediction
records (Flamingo, arXiv 2204.14198, Sec. 3; nonce labels: Frozen, arXiv 2106.13884, Sec. 4.1).

A job's stem names its predictions file, ``<task>[-nonce]_<selection>_<k>shot_ens<E>_trial<t>``. Under nonce
labels the runner renames every class per query (``nonce.nonce_names``) in the demonstrations' answers and in the
scored candidates, and keeps the ranking in true class names, so the metrics are those of true labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fewshot_eval.datasets import CLOSE_ENDED_TASKS, EvalSet, Example
from fewshot_eval.ensemble import ensemble_scores
from fewshot_eval.media import load_media
from fewshot_eval.model import prompt_to_text
from fewshot_eval.nonce import nonce_names
from fewshot_eval.prompts import Shot, build_prompt
from fewshot_eval.protocols import PROTOCOLS, Protocol
from fewshot_eval.selection import (
    TRIAL_SELECTIONS,
    BalancedSelector,
    RandomSelector,
    RicesSelector,
    ZeroShotSelector,
    _stable_hash,
)

__all__ = ["Job", "Runner", "job_selector", "plan_jobs"]

_MEDIA = object()  # stands for an image or video where only the prompt's text (its length) is needed


class Runner:
    """Prompts one batch of queries for one (selection, shots, trial) and returns prediction records; under
    nonce labels every class is renamed per query (``nonce.nonce_names``) in its demonstrations and candidates."""

    def __init__(self, model, task, support, template, class_names, num_beams, max_new_tokens, ensemble, seed,
                 video, nonce_words=None, protocol: Protocol = PROTOCOLS["flamingo"]):  # fmt: skip
        self.model, self.task, self.support, self.template = model, task, support, template
        self.class_names, self.num_beams, self.max_new_tokens = class_names, num_beams, max_new_tokens
        self.ensemble, self.seed, self.video, self.nonce_words = ensemble, seed, video, nonce_words
        self.protocol = protocol

    def names(self, ex: Example, trial: int) -> dict[str, str] | None:
        """The query's episode: class name -> what its prompt calls it (None: the names themselves)."""
        if self.nonce_words is None:
            return None
        return nonce_names(self.class_names, self.nonce_words, self.seed, trial, ex.id)

    def _shot(self, ex: Example, with_media: bool, answer: str | None, load: bool = True) -> Shot:
        media = (load_media(ex, self.video) if load else _MEDIA) if with_media else None
        return Shot(media, answer, ex.question)

    def _shots(self, batch: Sequence[Example], demo_idx: list[list[int]], k: int, trial: int, load: bool = True):
        names = [self.names(ex, trial) for ex in batch]
        demos = [[self._shot(d, k > 0, nm[d.target] if nm else self.protocol.demo_text(d.target, d.references), load)
                  for d in (self.support.examples[i] for i in idx)] for idx, nm in zip(demo_idx, names)]  # fmt: skip
        return demos, [self._shot(ex, True, None, load) for ex in batch], names

    def prompt_texts(self, batch: Sequence[Example], demo_idx: list[list[int]], k: int, trial: int = 0) -> list[str]:
        """The text of each query's prompt (``<image>`` for each media; no media decoded)."""
        demos, queries, _ = self._shots(batch, demo_idx, k, trial, load=False)
        return [prompt_to_text(build_prompt(d, q, self.template, k == 0)) for d, q in zip(demos, queries)]

    def candidates(self) -> list[str]:
        """Every answer a classification prompt may score: the class names, or all the nonce words."""
        return list(self.nonce_words if self.nonce_words is not None else self.class_names or [])

    def run(self, batch: Sequence[Example], demo_idx: list[list[int]], k: int, trial: int = 0) -> list[dict]:
        demos, queries, names = self._shots(batch, demo_idx, k, trial)
        common = [{"id": ex.id, "demos": [self.support.examples[i].id for i in idx], "model": self.model.identifier}
                  for ex, idx in zip(batch, demo_idx)]  # fmt: skip
        if self.task in CLOSE_ENDED_TASKS:
            return [self._classify(c, d, q, nm) for c, d, q, nm in zip(common, demos, queries, names)]
        prompts = [build_prompt(d, q, self.template, k == 0) for d, q in zip(demos, queries)]
        raw = self.model.generate(prompts, max_new_tokens=self.max_new_tokens, num_beams=self.num_beams,
                                  **self.protocol.decoding)  # fmt: skip
        return [dict(c, prediction=self.protocol.postprocess(r, self.task), raw=r, prompt=prompt_to_text(p))
                for c, r, p in zip(common, raw, prompts)]  # fmt: skip

    def _classify(self, common: dict, demos: list[Shot], query: Shot, names: dict[str, str] | None) -> dict:
        # the candidates are what this prompt calls the classes; the ranking is kept in true class names
        conts = [self.template.continuation(names[c] if names else c) for c in self.class_names]
        text_only = all(d.media is None for d in demos)

        def build_prefix(order):
            return build_prompt([demos[o] for o in order], query, self.template, text_only)

        seed = (self.seed + _stable_hash(common["id"])) % 2**32
        scores = ensemble_scores(self.model, build_prefix, len(demos), conts, k=self.ensemble, seed=seed)
        order = np.argsort(-scores, kind="stable")
        ranking = [self.class_names[i] for i in order]
        episode = {"names": names} if names else {}
        return dict(common, prediction=ranking[0], ranking=ranking[:5], scores=[float(scores[i]) for i in order[:5]],
                    **episode,
                    prompt=prompt_to_text(build_prefix(range(len(demos)))))  # fmt: skip


@dataclass
class Job:
    """One (selection, shots, trial) of an evaluation: saved predictions, and the queries still to predict with
    their demonstrations (support indices)."""

    sel: str
    k: int
    trial: int
    stem: str  # predictions/<stem>.rank<r>.jsonl
    done: dict[str, dict] = field(default_factory=dict)
    todo: list[Example] = field(default_factory=list)
    demo_idx: list[list[int]] = field(default_factory=list)


def plan_jobs(task: str, shots, selection, trials: int, ensemble: int, labels: str) -> list[Job]:
    """Every (selection, shots, trial) of an evaluation; the stem names its predictions, labels included, so that
    a nonce and a true-name evaluation can share an output folder."""
    name = task + ("-nonce" if labels == "nonce" else "")
    return [Job(sel, k, t, f"{name}_{sel}_{k}shot_ens{ensemble}_trial{t}")
            for sel in selection for k in shots for t in range(trials if sel in TRIAL_SELECTIONS else 1)]  # fmt: skip


def job_selector(job: Job, support: EvalSet, seed: int, rices: RicesSelector | None):
    """The job's demonstration selector; None for RICES without its features (before the model is loaded)."""
    keys = [e.key for e in support.examples]
    if job.k == 0:  # fixed text-only demonstrations: retrieving them by the query image would leak it
        return ZeroShotSelector(keys, seed, job.trial)
    if job.sel == "balanced":
        return BalancedSelector(keys, [e.target for e in support.examples], seed, job.trial, support.class_names)
    return rices if job.sel == "rices" else RandomSelector(keys, seed, job.trial)
