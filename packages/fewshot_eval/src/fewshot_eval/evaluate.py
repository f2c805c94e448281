"""The evaluation runner: for every selection method, shot count and trial, prompt the model on every query,
save its predictions as it goes, score them, and summarise trials into ``results.json``.

Order of work (so that bad input fails before long work starts): load and check the data (``prepare_data``),
then the model, then the saved predictions to resume from, then RICES features (support features cached on
disk), then every prompt's demonstrations and length (a prompt over the LM's context is an error before
anything is generated), then the generation. Predictions are appended to
``predictions/<task>_<selection>_<k>shot_ens<E>_trial<t>.rank<r>.jsonl`` one batch at a time, each record
naming the model that made it; a rerun with ``resume=True`` skips every example already there, and refuses
predictions of another model (``model.identifier`` hashes the weights' content). Under ``accelerate launch``
the queries are split across processes and the predictions gathered on the main process, which computes
metrics and writes the results.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from contrastive_encoder.data.jsonl import read_jsonl
from contrastive_encoder.outputs import OutputError, atomic_write_text, prepare_run_dir
from contrastive_encoder.readers import CorruptFileError, read_json
from fewshot_eval.datasets import (
    DEFAULT_IMAGE_TEMPLATE,
    TASKS,
    DataError,
    EvalSet,
    Example,
    load_task_data,
)
from fewshot_eval.ensemble import ensemble_scores
from fewshot_eval.media import check_media, load_media
from fewshot_eval.metrics import cider, topk_accuracy, vqa_accuracy
from fewshot_eval.model import EvalModel, prompt_to_text
from fewshot_eval.postprocess import postprocess
from fewshot_eval.prompts import ZERO_SHOT_DEMOS, PromptTemplate, Shot, build_prompt, get_template
from fewshot_eval.rices import RICES, cached_features
from fewshot_eval.selection import (
    SELECTIONS,
    RandomSelector,
    RicesSelector,
    ZeroShotSelector,
    _stable_hash,
    mean_std,
)

__all__ = [
    "MAX_NEW_TOKENS", "METRICS", "OUTPUT_NAMES", "TaskData", "check_prompt_lengths", "claim_output", "evaluate",
    "prepare_data", "score_predictions",
]  # fmt: skip

MAX_NEW_TOKENS = {"caption": 30, "vqa": 5, "video-caption": 30, "video-qa": 5}  # paper: short VQA answers
METRICS = {
    "caption": ["CIDEr"],
    "video-caption": ["CIDEr"],
    "vqa": ["VQA accuracy"],
    "video-qa": ["VQA accuracy"],
    "classify": ["top-1 accuracy", "top-5 accuracy"],
}
RESULTS_SCHEMA = "fewshot_eval/results/v1"
# what an evaluation writes at the top of its output folder (the default RICES cache included)
# what an evaluation writes in --out (glob patterns): all that --overwrite deletes there
OUTPUT_NAMES = ("predictions/*.rank*.jsonl", "results.json", "results.md", "results.png", "cache/*.npy", "cache/*.json")
_MEDIA = object()  # stands for an image or video where only the prompt's text (its length) is needed


@dataclass
class TaskData:
    """A checked support set and query set (the query set already cut to ``limit``)."""

    task: str
    support: EvalSet
    query: EvalSet


def _demos_needed(k: int) -> int:
    return k if k > 0 else ZERO_SHOT_DEMOS


def prepare_data(
    task: str,
    data: str | Path,
    shots: Sequence[int] = (0,),
    split: str | None = None,
    support_split: str | None = None,
    limit: int | None = None,
    image_template: str = DEFAULT_IMAGE_TEMPLATE,
) -> TaskData:
    """Load the support and query sets of ``task`` and check them, raising a one-line ``DataError``.

    Checks: the files are of the task's format, every media file exists (query images are also opened), and
    the support set holds enough demonstrations for the largest shot count.
    """
    if task not in TASKS:
        raise DataError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    if limit is not None and limit < 1:
        raise DataError(f"--limit must be a positive number of examples, got {limit}")
    if any(k < 0 for k in shots):
        raise DataError(f"shot counts must be >= 0, got {list(shots)}")
    support, query = load_task_data(task, data, split, support_split, image_template)
    if limit is not None:
        query.examples = query.examples[:limit]
    check_media(query.examples, query.source, open_images=True)
    check_media(support.examples, support.source)
    overlap = bool({e.key for e in query.examples} & {e.key for e in support.examples})
    available = len(support) - (1 if overlap else 0)
    for k in shots:
        if _demos_needed(k) > available:
            raise DataError(
                f"{k} shots need {_demos_needed(k)} demonstrations but the support set ({support.source}, split "
                f"{support.split!r}) holds {available}"
            )
    if task == "classify" and query.class_names != support.class_names:
        raise DataError(f"{query.source} and {support.source} have different class lists")
    return TaskData(task, support, query)


class _Dist:
    """Process rank, world size and gathering; accelerate is used only under a multi-process launch."""

    def __init__(self):
        self.state = None
        self.rank, self.world = 0, 1
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            import torch
            from accelerate import PartialState

            # accelerate only forms a CPU process group (gloo) when told it runs on CPU
            self.state = PartialState(cpu=not torch.cuda.is_available())
            self.rank, self.world = self.state.process_index, self.state.num_processes

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def gather(self, records: list) -> list:
        if self.world == 1:
            return records
        from accelerate.utils import gather_object

        return gather_object(records)

    def barrier(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()


def claim_output(out: str | Path, command: str, owned: Sequence[str] = OUTPUT_NAMES, resume: bool = False,
                 overwrite: bool = False) -> Path:
    """Apply the suite's run-folder policy to ``out`` (``contrastive_encoder.outputs.prepare_run_dir``) on the
    main process, every process stopping with the same ``OutputError`` when it refuses.

    A folder holding an evaluation from before ``run.json`` existed (``results.json`` or ``predictions/``) is
    taken as a previous run of ``command``.
    """
    dist = _Dist()
    problem = None
    if dist.is_main:
        try:
            prepare_run_dir(out, command, owned, resume=resume, overwrite=overwrite, flag="--out",
                            legacy=("results.json", "predictions/*.rank*.jsonl"))  # fmt: skip
        except OutputError as e:
            problem = str(e)
    problems = dist.gather([problem] if problem else [])  # also makes the others wait for the main process
    if problems:
        raise OutputError(problems[0])
    return Path(out)


def _embed(model: EvalModel, examples: Sequence[Example], batch_size: int, max_frames: int) -> np.ndarray:
    feats = []
    for i in range(0, len(examples), batch_size):
        images = []
        for ex in examples[i : i + batch_size]:
            media = load_media(ex, max_frames)
            images.append(media[len(media) // 2] if isinstance(media, list) else media)  # video: middle frame
        feats.append(np.asarray(model.embed_images(images), dtype=np.float32))
    return np.concatenate(feats) if feats else np.zeros((0, 1), np.float32)


def score_predictions(task: str, records: dict[str, dict], query: EvalSet) -> dict[str, float]:
    """Metric name -> score (papers' scale: CIDEr x100, accuracies in %) of the saved predictions."""
    by_id = {ex.id: ex for ex in query.examples}
    ids = [i for i in by_id if i in records]
    if task in ("caption", "video-caption"):
        score, _ = cider({i: records[i]["prediction"] for i in ids}, {i: by_id[i].references for i in ids})
        return {"CIDEr": 100 * score}
    if task in ("vqa", "video-qa"):
        score, _ = vqa_accuracy({i: records[i]["prediction"] for i in ids}, {i: by_id[i].references for i in ids})
        return {"VQA accuracy": 100 * score}
    ranked = [records[i]["ranking"] for i in ids]
    labels = [by_id[i].target for i in ids]
    return {"top-1 accuracy": 100 * topk_accuracy(ranked, labels, 1),
            "top-5 accuracy": 100 * topk_accuracy(ranked, labels, 5)}


class _Runner:
    """Prompts one batch of queries for one (selection, shots, trial) and returns prediction records."""

    def __init__(self, model, task, support, template, class_names, num_beams, max_new_tokens, ensemble, seed,
                 max_frames):  # fmt: skip
        self.model, self.task, self.support, self.template = model, task, support, template
        self.class_names, self.num_beams, self.max_new_tokens = class_names, num_beams, max_new_tokens
        self.ensemble, self.seed, self.max_frames = ensemble, seed, max_frames

    def _shot(self, ex: Example, with_media: bool, answer: bool, load: bool = True) -> Shot:
        media = (load_media(ex, self.max_frames) if load else _MEDIA) if with_media else None
        return Shot(media, ex.target if answer else None, ex.question)

    def _shots(self, batch: Sequence[Example], demo_idx: list[list[int]], k: int, load: bool = True):
        text_only = k == 0
        demos = [[self._shot(self.support.examples[i], not text_only, True, load) for i in idx] for idx in demo_idx]
        return demos, [self._shot(ex, True, False, load) for ex in batch]

    def prompt_texts(self, batch: Sequence[Example], demo_idx: list[list[int]], k: int) -> list[str]:
        """The text of each query's prompt (``<image>`` for each media; no media decoded)."""
        demos, queries = self._shots(batch, demo_idx, k, load=False)
        return [prompt_to_text(build_prompt(d, q, self.template, k == 0)) for d, q in zip(demos, queries)]

    def run(self, batch: Sequence[Example], demo_idx: list[list[int]], k: int) -> list[dict]:
        demos, queries = self._shots(batch, demo_idx, k)
        common = [{"id": ex.id, "demos": [self.support.examples[i].id for i in idx], "model": self.model.identifier}
                  for ex, idx in zip(batch, demo_idx)]  # fmt: skip
        if self.task == "classify":
            return [self._classify(c, d, q) for c, d, q in zip(common, demos, queries)]
        prompts = [build_prompt(d, q, self.template, k == 0) for d, q in zip(demos, queries)]
        raw = self.model.generate(prompts, max_new_tokens=self.max_new_tokens, num_beams=self.num_beams)
        return [dict(c, prediction=postprocess(r, self.task), raw=r, prompt=prompt_to_text(p))
                for c, r, p in zip(common, raw, prompts)]  # fmt: skip

    def _classify(self, common: dict, demos: list[Shot], query: Shot) -> dict:
        conts = [self.template.continuation(c) for c in self.class_names]
        text_only = all(d.media is None for d in demos)

        def build_prefix(order):
            return build_prompt([demos[o] for o in order], query, self.template, text_only)

        seed = (self.seed + _stable_hash(common["id"])) % 2**32
        scores = ensemble_scores(self.model, build_prefix, len(demos), conts, k=self.ensemble, seed=seed)
        order = np.argsort(-scores, kind="stable")
        ranking = [self.class_names[i] for i in order]
        return dict(common, prediction=ranking[0], ranking=ranking[:5], prompt=prompt_to_text(build_prefix(range(len(demos)))))


@dataclass
class _Job:
    """One (selection, shots, trial) of an evaluation: saved predictions, and the queries still to predict with
    their demonstrations (support indices)."""

    sel: str
    k: int
    trial: int
    stem: str  # predictions/<stem>.rank<r>.jsonl
    done: dict[str, dict] = field(default_factory=dict)
    todo: list[Example] = field(default_factory=list)
    demo_idx: list[list[int]] = field(default_factory=list)


def check_prompt_lengths(model: EvalModel, runner: _Runner, jobs: Sequence[_Job], source) -> str | None:
    """A one-line message when a prompt and what follows it (the tokens to generate, or the longest class name
    to score) do not fit in the model's context, else None.

    A longer prompt would be cut or run past the LM's positions and give garbage without a word, so the whole
    evaluation is refused before anything is generated (not skipped query by query: the scores of the shot
    counts would then be over different queries). Checked only for models with ``context_length`` and
    ``count_tokens``.
    """
    limit, count = getattr(model, "context_length", None), getattr(model, "count_tokens", None)
    if not limit or count is None:
        return None
    if runner.task == "classify":
        conts = [runner.template.continuation(c) for c in runner.class_names or []]
        extra, what = max(count(conts, continuation=True), default=0), "to score the longest class name"
    else:
        extra, what = runner.max_new_tokens, "to generate"
    for job in jobs:
        if not job.todo:
            continue
        lengths = count(runner.prompt_texts(job.todo, job.demo_idx, job.k))
        over = [i for i, n in enumerate(lengths) if n + extra > limit]
        if over:
            worst = max(over, key=lengths.__getitem__)
            trial = f", trial {job.trial}" if job.sel == "random" else ""
            return (
                f"{runner.task} {job.k}-shot ({job.sel}{trial}): {len(over)} of {len(lengths)} prompts do not fit "
                f"in the language model's context of {limit} tokens; the longest, for query {job.todo[worst].id!r} "
                f"of {source}, is {lengths[worst]} tokens + {extra} {what}; use fewer --shots, a shorter --template"
                + (" or a smaller --max-new-tokens" if runner.task != "classify" else " or shorter class names")
            )
    return None


def _pred_files(out_dir: Path, stem: str) -> list[Path]:
    return sorted((out_dir / "predictions").glob(f"{stem}.rank*.jsonl"))


def _open_append(path: Path):
    """Open a predictions file for appending, ending a line an interruption left unfinished."""
    fh = open(path, "a+", encoding="utf-8")
    if fh.tell() > 0:
        fh.seek(fh.tell() - 1)
        if fh.read(1) != "\n":
            fh.write("\n")
    return fh


def _load_predictions(files: Sequence[Path], model_id: str) -> dict[str, dict]:
    """The saved predictions of ``files`` by query id, refusing any made by another model than ``model_id``."""
    done: dict[str, dict] = {}
    for f in files:
        for rec in read_jsonl(f, required=("id",)):  # a line cut by an interruption is skipped
            if rec.get("model") != model_id:
                made_by = f"model {rec['model']}" if rec.get("model") else "a model it did not record"
                raise OutputError(
                    f"--resume: {f} holds predictions of {made_by}, not of this model ({model_id}); give "
                    "--overwrite to evaluate again from scratch, or choose another --out"
                )
            done[str(rec["id"])] = rec
    return done


def _merge_results(path: Path, new: list[dict]) -> list[dict]:
    """Results already in ``path`` with the records of ``new`` replacing those with the same key."""
    def key(r):
        # not the data fingerprint: a rerun with another --limit replaces the old numbers
        return (r["task"], r.get("dataset"), r["split"], r["shots"], r["selection"], r["ensembling"], r["metric"],
                r["model"])  # fmt: skip

    old = []
    if path.is_file():
        try:
            old = read_json(path).get("results", [])
        except CorruptFileError:  # rewritten from this run's predictions
            old = []
        need = ("task", "split", "shots", "selection", "ensembling", "metric", "model")
        old = [r for r in old if isinstance(r, dict) and all(k in r for k in need)] if isinstance(old, list) else []
    keys = {key(r) for r in new}
    return [r for r in old if key(r) not in keys] + new


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
    max_frames: int = 8,
    progress: bool = True,
) -> list[dict]:
    """Few-shot evaluation of ``model`` on ``task``.

    Args:
        model: an ``EvalModel``.
        task: ``caption``, ``vqa``, ``classify``, ``video-caption`` or ``video-qa``.
        data: the dataset path (see ``datasets``) or a ``TaskData`` from ``prepare_data``.
        shots: shot counts; 0 means two text-only demonstrations.
        selection: ``random`` (``trials`` seeded trials) and/or ``rices`` (one deterministic trial).
        trials: trials for random selection.
        ensemble: orderings of the demonstrations averaged for close-ended tasks (1 = none; paper: 6).
        limit: evaluate only the first ``limit`` queries.
        out_dir: where predictions, ``results.json``, ``results.md`` and ``results.png`` go (None: nowhere).
        resume: continue from the predictions already in ``out_dir``; without it they are overwritten.
        batch_size: queries per ``generate`` call (and images per embedding call).
        num_beams: beams for open-ended decoding.
        max_new_tokens: tokens to generate (default per task, ``MAX_NEW_TOKENS``).
        template: a prompt template overriding the task's (see ``prompts.PromptTemplate``).
        split / support_split: query and support splits (defaults per task).
        image_template: VQA image path template.
        cache_dir: folder for cached RICES support features (default ``<out_dir>/cache``).
        seed: base seed of random selection and ensembling.
        max_frames: frames sampled from each video.
        progress: show progress bars.

    Returns:
        One result record per (selection, shots, metric): task, split, shots, selection, ensembling, metric, n,
        trials, scores, mean, std, model, data.
    """
    unknown = [s for s in selection if s not in SELECTIONS]
    if unknown:
        raise ValueError(f"unknown selection {unknown[0]!r}; expected one of {', '.join(SELECTIONS)}")
    if ensemble < 1:
        raise ValueError(f"ensemble must be at least 1 ordering, got {ensemble}")
    if trials < 1 or batch_size < 1 or num_beams < 1:
        raise ValueError(f"trials, batch size and beams must be >= 1, got {trials}, {batch_size}, {num_beams}")
    if max_new_tokens is not None and max_new_tokens < 1:  # not "0 = the default": say it
        raise ValueError(f"max_new_tokens must be >= 1 (None = the task's default), got {max_new_tokens}")
    if ensemble > 1 and task != "classify":
        raise ValueError(f"prompt ensembling applies to close-ended tasks (classify), not {task!r}")
    td = data if isinstance(data, TaskData) else prepare_data(task, data, shots, split, support_split, limit,
                                                              image_template)  # fmt: skip
    if isinstance(data, TaskData) and limit is not None:
        td.query.examples = td.query.examples[:limit]
    support, query = td.support, td.query
    shots, selection = list(dict.fromkeys(shots)), list(dict.fromkeys(selection))
    tmpl: PromptTemplate = get_template(task, template)
    dist = _Dist()
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        (out / "predictions").mkdir(parents=True, exist_ok=True)
    runner = _Runner(model, task, support, tmpl, support.class_names, num_beams,
                     max_new_tokens or MAX_NEW_TOKENS.get(task, 0), ensemble, seed, max_frames)  # fmt: skip
    mine = query.examples[dist.rank :: dist.world]
    jobs = [_Job(sel, k, t, f"{task}_{sel}_{k}shot_ens{ensemble}_trial{t}")
            for sel in selection for k in shots for t in range(trials if sel == "random" else 1)]  # fmt: skip
    if out is not None and resume:  # before any work: another model's predictions are refused
        for job in jobs:
            job.done = _load_predictions(_pred_files(out, job.stem), model.identifier)

    rices_selector = None
    if "rices" in selection:
        cache = cache_dir if cache_dir is not None else (out / "cache" if out is not None else None)
        rices_selector = _rices_selector(model, support, mine, cache, batch_size, max_frames, dist, progress)
    for job in jobs:  # every prompt's demonstrations, so that every prompt can be checked before generating
        keys = [e.key for e in support.examples]
        if job.k == 0:  # fixed text-only demonstrations: retrieving them by the query image would leak it
            selector = ZeroShotSelector(keys, seed, job.trial)
        else:
            selector = rices_selector if job.sel == "rices" else RandomSelector(keys, seed, job.trial)
        job.todo = [ex for ex in mine if ex.id not in job.done]
        job.demo_idx = selector.select([ex.key for ex in job.todo], _demos_needed(job.k)) if job.todo else []
    problem = check_prompt_lengths(model, runner, jobs, query.source)
    problems = dist.gather([problem] if problem else [])
    if problems:  # every process raises, so that none waits for the others
        raise ValueError(problems[0])

    results: list[dict] = []
    skipped = sum(query.skipped.values())
    for sel in selection:
        n_trials = trials if sel == "random" else 1
        for k in shots:
            per_trial: dict[str, list[float]] = {m: [] for m in METRICS[task]}
            n_scored = 0
            for job in (j for j in jobs if (j.sel, j.k) == (sel, k)):
                if out is not None and not resume:
                    if dist.is_main:
                        for f in _pred_files(out, job.stem):
                            f.unlink()
                    dist.barrier()
                path = out / "predictions" / f"{job.stem}.rank{dist.rank}.jsonl" if out is not None else None
                desc = f"{task} {sel} {k}-shot trial {job.trial}" if progress and dist.is_main else None
                new = _predict(runner, job, batch_size, path, desc)
                gathered = dist.gather(new)
                if not dist.is_main:
                    continue
                records = {**job.done, **{r["id"]: r for r in gathered}}
                for m, v in score_predictions(task, records, query).items():
                    per_trial[m].append(v)
                n_scored = sum(1 for ex in query.examples if ex.id in records)
            if not dist.is_main:
                continue
            for metric, scores in per_trial.items():
                mean, std = mean_std(scores)
                results.append({
                    "task": task, "split": query.split, "support_split": support.split, "shots": k,
                    "selection": sel, "ensembling": ensemble, "metric": metric, "n": n_scored,
                    "trials": n_trials, "scores": scores, "mean": mean, "std": std,
                    "dataset": query.name, "model": model.identifier, "data": query.identifier,
                    "support": support.identifier, "skipped": skipped,
                })  # fmt: skip
            if out is not None:  # results so far, so that an interrupted run still leaves a summary
                _write_outputs(out, results)
    return results


def _rices_selector(model, support: EvalSet, mine: list[Example], cache, batch_size, max_frames, dist: _Dist,
                    progress: bool) -> RicesSelector:  # fmt: skip
    """RICES over the support set: its features from the cache (or computed once), this process's queries'."""
    t0 = time.time()
    encoder_id = str(getattr(model, "encoder_identifier", model.identifier))
    keys = [e.key for e in support.examples]

    def support_features() -> np.ndarray:
        return cached_features(cache, encoder_id, support.fingerprint, keys,
                               lambda: _embed(model, support.examples, batch_size, max_frames))  # fmt: skip

    if dist.state is not None:  # the main process fills the cache, the others read it
        with dist.state.main_process_first():
            feats = support_features()
    else:
        feats = support_features()
    qfeats = _embed(model, mine, batch_size, max_frames)
    if progress and dist.is_main:
        print(f"RICES: {len(support)} support and {len(mine)} query features in {time.time() - t0:.1f}s")
    return RicesSelector(RICES(feats, keys), {ex.key: f for ex, f in zip(mine, qfeats)})


def _predict(runner: _Runner, job: _Job, batch_size: int, path: Path | None, desc: str | None) -> list[dict]:
    """Prediction records for ``job.todo``, appended to ``path`` (flushed to disk) batch by batch."""
    new: list[dict] = []
    fh = _open_append(path) if path is not None else None
    try:
        for i in tqdm(range(0, len(job.todo), batch_size), desc=desc, disable=desc is None, leave=False):
            recs = runner.run(job.todo[i : i + batch_size], job.demo_idx[i : i + batch_size], job.k)
            new.extend(recs)
            if fh is not None:
                fh.write("".join(json.dumps(r) + "\n" for r in recs))
                fh.flush()
                os.fsync(fh.fileno())  # what is written survives an interruption; --resume starts after it
    finally:
        if fh is not None:
            fh.close()
    return new


def _write_outputs(out: Path, results: list[dict]) -> None:
    from fewshot_eval.report import write_report

    merged = _merge_results(out / "results.json", results)
    atomic_write_text(out / "results.json", json.dumps({"schema": RESULTS_SCHEMA, "results": merged}, indent=1))
    write_report(merged, out)
