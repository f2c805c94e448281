"""The evaluation runner: for every selection method, shot count and trial, prompt the model on every query,
save its predictions as it goes, score them, and summarise trials into ``results.json``.

Order of work (so that bad input fails before long work starts): load and check the data (``prepare_data``),
the prompts' lengths from the model folder's tokenizer (``check_context``, before any weight is loaded), then
the model, then the saved predictions to resume from, then RICES features (support features cached on disk),
then every prompt's demonstrations and length (a prompt over the LM's context is an error before anything is
generated), then the generation. Predictions are appended to
``predictions/<task>[-nonce]_<selection>_<k>shot_ens<E>_trial<t>.rank<r>.jsonl`` one batch at a time, each record
naming the model that made it; a rerun with ``resume=True`` skips every example already there, and refuses
predictions of another model (``model.identifier`` hashes the weights' content). Under ``accelerate launch``
the queries are split across processes and the predictions gathered on the main process, which computes
metrics and writes the results.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fewshot_eval.bootstrap import N_BOOTSTRAP
from fewshot_eval.context import check_prompt_lengths, shortest_demos
from fewshot_eval.datasets import (
    CLOSE_ENDED_TASKS,
    DEFAULT_IMAGE_TEMPLATE,
    TASKS,
    DataError,
    EvalSet,
    Example,
    load_task_data,
)
from fewshot_eval.distributed import _Dist, claim_output
from fewshot_eval.media import PAPER_VIDEO, VideoSampling, check_media, load_media
from fewshot_eval.metrics import SCORERS
from fewshot_eval.metrics.coco_caption import (
    CAPTION_METRICS,
    CORPUS_METRICS,
    resolve_caption_scorer,
)
from fewshot_eval.model import EvalModel
from fewshot_eval.nonce import BUILT_IN, EVAL_NONCE_WORDS, LABELS, check_nonce_words, read_nonce_words
from fewshot_eval.predictions import load_predictions, pred_files, predict
from fewshot_eval.prompts import ZERO_SHOT_DEMOS, get_template
from fewshot_eval.protocols import get_protocol
from fewshot_eval.report import write_results
from fewshot_eval.rices import RICES, cached_features
from fewshot_eval.runner import Job, Runner, job_selector, plan_jobs
from fewshot_eval.scoring import chance, score_predictions, summarize, task_metrics
from fewshot_eval.selection import SELECTIONS, RicesSelector, check_balanced_support
from fewshot_eval.server_results import write_server_results

__all__ = [
    "OUTPUT_NAMES", "TaskData", "check_context", "check_plan", "check_prompt_lengths",
    "claim_output", "evaluate", "prepare_data",
]  # fmt: skip

# what an evaluation writes in --out (glob patterns): all that --overwrite deletes there
OUTPUT_NAMES = ("predictions/*.rank*.jsonl", "results.json", "results.md", "results.png", "cache/*.npy", "cache/*.json")


@dataclass
class TaskData:
    """A checked support set and query set (the query set already cut to ``limit``)."""

    task: str
    support: EvalSet
    query: EvalSet


def spread(examples: list[Example], limit: int | None) -> list[Example]:
    """``limit`` examples spread evenly over the set, in its order (all of them without a limit).

    Not the first ``limit``: class folders are read class by class, so the first 32 of a colour set would be
    three or four of its eight colours; every ``n / limit``-th example covers them all, and is the same subset
    on every run.
    """
    if limit is None or limit >= len(examples):
        return list(examples)
    return [examples[(i * len(examples)) // limit] for i in range(limit)]


def _demos_needed(k: int, zero_shot_demos: int = ZERO_SHOT_DEMOS) -> int:
    return k if k > 0 else zero_shot_demos


def _check_flags(task: str, selection: Sequence[str], labels: str, nonce_words: object = None) -> None:
    """What only classification offers, refused for other tasks before their data is read."""
    if labels != "nonce" and nonce_words is not None:
        raise DataError("--nonce-words needs --nonce-labels (the words rename the classes of a nonce evaluation)")
    if labels not in LABELS:
        raise DataError(f"labels must be one of {', '.join(LABELS)}, got {labels!r}")
    if task != "classify" and labels == "nonce":
        raise DataError(f"--nonce-labels applies to --task classify only (it renames classes), not {task!r}")
    if task != "classify" and "balanced" in selection:
        raise DataError(f"--selection balanced applies to --task classify only (it balances classes), not {task!r}")


def check_plan(td: TaskData, shots: Sequence[int], selection: Sequence[str] = ("random",), labels: str = "true",
               nonce_words: str | Path | Sequence[str] | None = None) -> tuple[str, ...] | None:  # fmt: skip
    """Check what the selection methods and labels need of the data, raising a one-line ``DataError``.

    Returns:
        The nonce words of a ``labels="nonce"`` evaluation (``nonce_words``: a file of one word per line, the
        words themselves, or None for ``EVAL_NONCE_WORDS``), else None.
    """
    _check_flags(td.task, selection, labels, nonce_words)
    support, query = td.support, td.query
    if "balanced" in selection:
        shared = {e.key for e in support.examples} & {e.key for e in query.examples}
        problem = check_balanced_support([e.target for e in support.examples], support.class_names or [], shots,
                                         [e.target for e in query.examples if e.key in shared], support.source,
                                         support.split)  # fmt: skip
        if problem:
            raise DataError(problem)
    if labels != "nonce":
        return None
    if nonce_words is None:
        words, source = EVAL_NONCE_WORDS, BUILT_IN
    elif isinstance(nonce_words, (str, Path)):
        words, source = read_nonce_words(nonce_words), f"--nonce-words {nonce_words}"
    else:
        words, source = tuple(nonce_words), "the given nonce words"
    check_nonce_words(words, query.class_names or [], query.source, source)
    return tuple(words)


def prepare_data(
    task: str,
    data: str | Path,
    shots: Sequence[int] = (0,),
    split: str | None = None,
    support_split: str | None = None,
    limit: int | None = None,
    image_template: str = DEFAULT_IMAGE_TEMPLATE,
    selection: Sequence[str] = ("random",),
    labels: str = "true",
    nonce_words: str | Path | Sequence[str] | None = None,
    zero_shot_demos: int = ZERO_SHOT_DEMOS,
    score: bool | None = None,
) -> TaskData:
    """Load the support and query sets of ``task`` and check them, raising a one-line ``DataError``.

    Checks: the files are of the task's format, every media file exists (query images are also opened), the
    support set holds enough demonstrations for the largest shot count, and what ``check_plan`` checks (balanced
    selection's per-class counts, the nonce words).
    """
    if task not in TASKS:
        raise DataError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    if limit is not None and limit < 1:
        raise DataError(f"--limit must be a positive number of examples, got {limit}")
    if any(k < 0 for k in shots):
        raise DataError(f"shot counts must be >= 0, got {list(shots)}")
    _check_flags(task, selection, labels, nonce_words)
    if task == "okvqa":  # its scoring stems with nltk: a missing package or data set is named before any work
        from fewshot_eval.metrics.okvqa import check_stemmer

        check_stemmer()
    support, query = load_task_data(task, data, split, support_split, image_template, score)
    if limit is not None:
        query.examples = spread(query.examples, limit)
    if task == "hateful-memes" and len({e.target for e in query.examples}) < 2:  # ROC-AUC needs both
        raise DataError(f"{query.source}: the {len(query)} queries are all {query.examples[0].target!r}; ROC-AUC "
                        "needs both classes (a larger --limit, or another --split)")  # fmt: skip
    check_media(query.examples, query.source, open_images=True)
    check_media(support.examples, support.source)
    overlap = bool({e.key for e in query.examples} & {e.key for e in support.examples})
    available = len(support) - (1 if overlap else 0)
    if zero_shot_demos < 1:
        raise DataError(f"--zero-shot-demos must be at least 1 text-only demonstration, got {zero_shot_demos}")
    for k in shots:
        if _demos_needed(k, zero_shot_demos) > available:
            raise DataError(
                f"{k} shots need {_demos_needed(k, zero_shot_demos)} demonstrations but the support set ({support.source}, split "
                f"{support.split!r}) holds {available}"
            )
    if task in CLOSE_ENDED_TASKS and query.class_names != support.class_names:
        raise DataError(f"{query.source} and {support.source} have different class lists")
    td = TaskData(task, support, query)
    check_plan(td, shots, selection, labels, nonce_words)
    return td


def _embed(model: EvalModel, examples: Sequence[Example], batch_size: int, video: VideoSampling) -> np.ndarray:
    feats = []
    for i in range(0, len(examples), batch_size):
        images = []
        for ex in examples[i : i + batch_size]:
            media = load_media(ex, video)
            images.append(media[len(media) // 2] if isinstance(media, list) else media)  # video: middle frame
        feats.append(np.asarray(model.embed_images(images), dtype=np.float32))
    return np.concatenate(feats) if feats else np.zeros((0, 1), np.float32)


def _runner(model, td: TaskData, protocol: str, template: str | None, num_beams: int, max_new_tokens: int | None,
            ensemble: int, seed: int, video: VideoSampling, words) -> Runner:
    """The runner of ``td.task`` under ``protocol`` (its template and generation length unless given)."""
    proto = get_protocol(protocol)
    template = template if template is not None else proto.templates.get(td.task)
    max_new = max_new_tokens or proto.max_new_tokens.get(td.task, 0)  # 0: a close-ended task generates nothing
    return Runner(model, td.task, td.support, get_template(td.task, template), td.support.class_names, num_beams,
                  max_new, ensemble, seed, video, words, proto)  # fmt: skip


def check_context(counter, td: TaskData, shots: Sequence[int], selection: Sequence[str] = ("random",), *,
                  trials: int = 3, labels: str = "true", nonce_words=None, template: str | None = None,
                  max_new_tokens: int | None = None, seed: int = 0,
                  zero_shot_demos: int = ZERO_SHOT_DEMOS, protocol: str = "flamingo") -> str | None:  # fmt: skip
    """``check_prompt_lengths`` before the model is loaded: ``counter`` is a ``model.TokenCounter`` (tokenizer
    and context only). Random, balanced and zero-shot prompts are the very prompts of the evaluation; a RICES
    prompt is stood for by the one of the ``k`` demonstrations with the fewest tokens (``context.shortest_demos``),
    so a refusal here is certain and what RICES retrieves is checked again once the model is loaded."""
    if counter is None:
        return None
    words = check_plan(td, shots, selection, labels, nonce_words)
    runner = _runner(None, td, protocol, template, 1, max_new_tokens, 1, seed, PAPER_VIDEO, words)
    jobs = plan_jobs(td.task, list(dict.fromkeys(shots)), list(dict.fromkeys(selection)), trials, 1, labels)
    for job in jobs:
        job.todo = list(td.query.examples)
        selector = job_selector(job, td.support, seed, None)
        if selector is None:
            job.demo_idx = shortest_demos(counter, runner, job.todo, job.k, job.trial)
        else:
            job.demo_idx = selector.select([ex.key for ex in job.todo], _demos_needed(job.k, zero_shot_demos))
    return check_prompt_lengths(counter, runner, jobs, td.query.source, rices_floor=True)


def evaluate(
    model: EvalModel,
    task: str,
    data: str | Path | TaskData,
    shots: Sequence[int] = (0, 4, 8),
    selection: Sequence[str] = ("random",),
    *,
    trials: int = 3,
    ensemble: int = 1,
    limit: int | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    batch_size: int = 8,
    num_beams: int = 3,
    max_new_tokens: int | None = None,
    template: str | None = None,
    split: str | None = None,
    support_split: str | None = None,
    image_template: str = DEFAULT_IMAGE_TEMPLATE,
    cache_dir: str | Path | None = None,
    seed: int = 0,
    max_frames: int = PAPER_VIDEO.frames,
    video_fps: float | None = PAPER_VIDEO.fps,
    progress: bool = True,
    labels: str = "true",
    nonce_words: str | Path | Sequence[str] | None = None,
    n_bootstrap: int = N_BOOTSTRAP,
    zero_shot_demos: int = ZERO_SHOT_DEMOS,
    vqa_scorer: str | None = None,
    caption_scorer: str = "auto",
    protocol: str = "flamingo",
    score: bool | None = None,
) -> list[dict]:
    """Few-shot evaluation of ``model`` on ``task``.

    Args:
        model: an ``EvalModel``.
        task: ``caption``, ``vqa`` (or ``okvqa``, ``vizwiz``, ``textvqa``: ``datasets.VQA_TASKS``), ``classify``,
            ``video-caption`` or ``video-qa``.
        data: the dataset path (see ``datasets``) or a ``TaskData`` from ``prepare_data``.
        shots: shot counts; 0 means two text-only demonstrations.
        selection: ``random`` / ``balanced`` (``trials`` seeded trials; balanced: classify only, classes in
            equal numbers, ``selection.BalancedSelector``) and/or ``rices`` (one deterministic trial).
        trials: trials for random and balanced selection.
        ensemble: orderings of the demonstrations averaged for close-ended tasks (1 = none; paper: 6).
        limit: evaluate ``limit`` queries spread evenly over the query set (``spread``).
        out_dir: where predictions, ``results.json``, ``results.md`` and ``results.png`` go (None: nowhere).
        resume: continue from the predictions already in ``out_dir``; without it they are overwritten.
        batch_size: queries per ``generate`` call (and images per embedding call).
        num_beams: beams for open-ended decoding.
        max_new_tokens: tokens to generate (default per task and protocol, ``Protocol.max_new_tokens``).
        template: a prompt template overriding the task's (see ``prompts.PromptTemplate``).
        split / support_split: query and support splits (defaults per task).
        image_template: VQA image path template.
        cache_dir: folder for cached RICES support features (default ``<out_dir>/cache``).
        seed: base seed of random selection and ensembling.
        max_frames: frames read from each video (paper: 30).
        video_fps: their rate from the clip's start (paper: 3 FPS); None: ``max_frames`` frames spread evenly
            over the whole clip (``media.VideoSampling``).
        progress: show progress bars.
        labels: ``true`` (class names) or ``nonce`` (classify: every class renamed per query, ``fewshot_eval.nonce``).
        nonce_words: the words of a nonce evaluation: a file of one word per line, the words, or None for
            ``nonce.EVAL_NONCE_WORDS``.
        n_bootstrap: resamples of the 95% confidence interval (``bootstrap.bootstrap_ci``, seeded by ``seed``).
        zero_shot_demos: text-only demonstrations of a 0-shot prompt (paper: two; with one, it says, the model
            tends to copy it - the ablation tools/run_ablations.py measures that).
        vqa_scorer: the VQA accuracy of ``metrics.vqa.SCORERS``: ``official`` (today's official code; VizWiz's
            own for ``vizwiz``), ``official-2017`` or ``openflamingo`` (to compare with OpenFlamingo's numbers);
            default the protocol's; recorded in each VQA result as ``vqa_scorer``.
        caption_scorer: CIDEr / BLEU-4 / ROUGE-L computed by ``pycocoevalcap`` (its Java tokenizer), by
            ``python`` (this package's ports, equal to it) or ``auto`` (pycocoevalcap where it and Java are
            installed); the one that ran is recorded in each caption result as ``scorer``.
        protocol: the prompts, decoding and post-processing of open-ended tasks (``protocols.PROTOCOLS``):
            ``flamingo`` (the paper's) or ``openflamingo`` (OpenFlamingo 2.0.1's evaluation); recorded in each
            result as ``protocol``.
        score: None: score, or write the evaluation server's result file for a test split without answers
            (``datasets.load_task_data``); True: score only; False: write that file instead of scoring.

    Returns:
        One result record per (selection, shots, metric): task, labels, split, shots, selection, ensembling,
        metric, n, trials, scores, mean, std, ci95, n_bootstrap, model, data (classify: also classes, chance;
        VQA accuracy: also vqa_scorer; captions: also scorer).
    """
    _check_args(task, selection, ensemble, trials, batch_size, num_beams, max_new_tokens, n_bootstrap)
    video = VideoSampling(max_frames, video_fps).check()
    vqa_scorer = vqa_scorer or get_protocol(protocol).vqa_scorer
    if vqa_scorer not in SCORERS:
        raise ValueError(f"unknown VQA scorer {vqa_scorer!r}; expected one of {', '.join(SCORERS)}")
    caption_scorer = resolve_caption_scorer(caption_scorer)  # before any work: a missing Java is named now
    td = data if isinstance(data, TaskData) else prepare_data(task, data, shots, split, support_split, limit,
                                                              image_template, selection, labels, nonce_words,
                                                              zero_shot_demos, score)  # fmt: skip
    if not td.query.scored and out_dir is None:  # its answers go to a file, before any work
        raise ValueError(f"split {td.query.split!r} is scored by its evaluation server: give out_dir for its file")
    if isinstance(data, TaskData) and limit is not None:
        td.query.examples = spread(td.query.examples, limit)
    words = check_plan(td, shots, selection, labels, nonce_words)
    shots, selection = list(dict.fromkeys(shots)), list(dict.fromkeys(selection))
    runner = _runner(model, td, protocol, template, num_beams, max_new_tokens, ensemble, seed, video, words)
    run = _Evaluation(model, task, td, runner, _Dist(), Path(out_dir) if out_dir is not None else None, resume,
                      batch_size, progress, labels, ensemble, seed, n_bootstrap, zero_shot_demos, vqa_scorer,
                      caption_scorer)  # fmt: skip
    jobs = run.plan(shots, selection, trials, cache_dir, video)
    return run.cells(jobs, selection, shots)


def _check_args(task: str, selection: Sequence[str], ensemble: int, trials: int, batch_size: int, num_beams: int,
                max_new_tokens: int | None, n_bootstrap: int) -> None:  # fmt: skip
    """``evaluate``'s own arguments, refused (``ValueError``) before any data is read."""
    unknown = [s for s in selection if s not in SELECTIONS]
    if unknown:
        raise ValueError(f"unknown selection {unknown[0]!r}; expected one of {', '.join(SELECTIONS)}")
    if ensemble < 1:
        raise ValueError(f"ensemble must be at least 1 ordering, got {ensemble}")
    if trials < 1 or batch_size < 1 or num_beams < 1:
        raise ValueError(f"trials, batch size and beams must be >= 1, got {trials}, {batch_size}, {num_beams}")
    if max_new_tokens is not None and max_new_tokens < 1:  # not "0 = the default": say it
        raise ValueError(f"max_new_tokens must be >= 1 (None = the task's default), got {max_new_tokens}")
    if ensemble > 1 and task not in CLOSE_ENDED_TASKS:
        raise ValueError(f"prompt ensembling applies to close-ended tasks (classify), not {task!r}")
    if n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be at least 1 resample, got {n_bootstrap}")


@dataclass
class _Evaluation:
    """One ``evaluate`` call's checked arguments and process group, shared by its steps (planning the jobs, each
    cell's predictions and scores, the cell's results) so that none of them is a function of a dozen arguments."""

    model: EvalModel
    task: str  # the argument, not ``td.task``: a given TaskData is evaluated as ``task`` says
    td: TaskData
    runner: Runner
    dist: _Dist
    out: Path | None
    resume: bool
    batch_size: int
    progress: bool
    labels: str
    ensemble: int
    seed: int
    n_bootstrap: int
    zero_shot_demos: int
    vqa_scorer: str
    caption_scorer: str  # resolved: pycocoevalcap or python

    def plan(self, shots: list[int], selection: list[str], trials: int, cache_dir, video: VideoSampling) -> list[Job]:
        """Every job with its saved predictions (``resume``), this process's queries still to predict and their
        demonstrations; every process raises before anything is generated when a prompt is over the context."""
        td, dist, out = self.td, self.dist, self.out
        if out is not None:
            (out / "predictions").mkdir(parents=True, exist_ok=True)
        mine = td.query.examples[dist.rank :: dist.world]
        jobs = plan_jobs(self.task, shots, selection, trials, self.ensemble, self.labels)
        if out is not None and self.resume:  # before any work: another model's predictions are refused
            for job in jobs:
                job.done = load_predictions(pred_files(out, job.stem), self.model.identifier)
        cache = cache_dir if cache_dir is not None else (out / "cache" if out is not None else None)
        rices_selector = (_rices_selector(self.model, td.support, mine, cache, self.batch_size, video, dist,
                                          self.progress) if "rices" in selection else None)  # fmt: skip
        for job in jobs:  # every prompt's demonstrations, so that every prompt can be checked before generating
            selector = job_selector(job, td.support, self.seed, rices_selector)
            job.todo = [ex for ex in mine if ex.id not in job.done]
            job.demo_idx = (selector.select([ex.key for ex in job.todo], _demos_needed(job.k, self.zero_shot_demos))
                            if job.todo else [])  # fmt: skip
        problem = check_prompt_lengths(self.model, self.runner, jobs, td.query.source)
        problems = dist.gather([problem] if problem else [])
        if problems:  # every process raises, so that none waits for the others
            raise ValueError(problems[0])
        return jobs

    def cells(self, jobs: list[Job], selection: list[str], shots: list[int]) -> list[dict]:
        """Every (selection, shots) cell in turn, predicted and scored; the result records (main process only)."""
        results: list[dict] = []
        for sel in selection:
            for k in shots:
                per_trial, corpus = self._predict_cell(sel, k, [j for j in jobs if (j.sel, j.k) == (sel, k)])
                if not self.dist.is_main:
                    continue
                results.extend(self._cell_results(sel, k, per_trial, corpus))
                if self.out is not None:  # results so far, so that an interrupted run still leaves a summary
                    write_results(self.out, results)
        return results

    def _predict_cell(self, sel: str, k: int, jobs: list[Job]) -> tuple[dict[str, list[dict[str, float]]], dict]:
        """Predict every trial (job) of one cell: metric -> each trial's per-query scores, and metric -> each
        trial's score, on the main process, which gathers every process's predictions (the others' lists stay
        empty)."""
        task, query, dist, out = self.task, self.td.query, self.dist, self.out
        per_trial: dict[str, list[dict[str, float]]] = {m: [] for m in task_metrics(task, query)}
        corpus: dict[str, list[float]] = {m: [] for m in per_trial}
        for job in jobs:
            if out is not None and not self.resume:
                if dist.is_main:
                    for f in pred_files(out, job.stem):
                        f.unlink()
                dist.barrier()  # deleted before any process appends to its file again
            path = out / "predictions" / f"{job.stem}.rank{dist.rank}.jsonl" if out is not None else None
            desc = f"{task} {sel} {k}-shot trial {job.trial}" if self.progress and dist.is_main else None
            gathered = dist.gather(predict(self.runner, job, self.batch_size, path, desc))
            if not dist.is_main:
                continue
            records = {**job.done, **{r["id"]: r for r in gathered}}
            if not query.scored:  # test-dev: the evaluation server scores the answers (server_results)
                write_server_results(out, job.stem, records, query, self.progress)
                per_trial, corpus = {}, {}
                continue
            means, each_q = score_predictions(task, records, query, per_query=True, vqa_scorer=self.vqa_scorer,
                                              caption_scorer=self.caption_scorer)  # fmt: skip
            for m, each in each_q.items():
                per_trial[m].append(each)
                corpus[m].append(means[m])
        return per_trial, corpus

    def _cell_results(self, sel: str, k: int, per_trial: dict[str, list[dict[str, float]]],
                      corpus: dict[str, list[float]]) -> list[dict]:  # fmt: skip
        """The cell's result records, one per metric (``evaluate``'s Returns)."""
        query, support = self.td.query, self.td.support
        return [{
            "task": self.task, "labels": self.labels, "split": query.split, "support_split": support.split,
            "shots": k, "selection": sel, "ensembling": self.ensemble, "metric": metric,
            **({"zero_shot_demos": self.zero_shot_demos} if k == 0 else {}),
            **summarize(each, [ex.id for ex in query.examples], self.n_bootstrap, self.seed,
                       corpus[metric] if metric in CORPUS_METRICS else None),
            **chance(self.task, metric, query),
            "dataset": query.name, "model": self.model.identifier, "data": query.identifier,
            "support": support.identifier, "skipped": sum(query.skipped.values()), "protocol": self.runner.protocol.name,
            **({"vqa_scorer": self.vqa_scorer} if metric == "VQA accuracy" else {}),
            **({"scorer": self.caption_scorer} if metric in CAPTION_METRICS else {}),
        } for metric, each in per_trial.items()]  # fmt: skip


def _rices_selector(model, support: EvalSet, mine: list[Example], cache, batch_size, video, dist: _Dist,
                    progress: bool) -> RicesSelector:  # fmt: skip
    """RICES over the support set: its features from the cache (or computed once), this process's queries'."""
    t0 = time.time()
    encoder_id = str(getattr(model, "encoder_identifier", model.identifier))
    keys = [e.key for e in support.examples]

    def support_features() -> np.ndarray:
        # a video's feature is its middle frame, which the sampling chooses: it is part of the key
        return cached_features(cache, encoder_id, f"{support.fingerprint}:{video.frames}@{video.fps}", keys,
                               lambda: _embed(model, support.examples, batch_size, video))  # fmt: skip

    if dist.state is not None:  # the main process fills the cache, the others read it
        with dist.state.main_process_first():
            feats = support_features()
    else:
        feats = support_features()
    qfeats = _embed(model, mine, batch_size, video)
    if progress and dist.is_main:
        print(f"RICES: {len(support)} support and {len(mine)} query features in {time.time() - t0:.1f}s")
    return RicesSelector(RICES(feats, keys), {ex.key: f for ex, f in zip(mine, qfeats)})
