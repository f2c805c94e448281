"""Scoring an evaluation's saved predictions: each task's metrics on the papers' scale (CIDEr x100, accuracies and
ROC-AUC in %), per query for the bootstrap, and a cell's summary over trials (mean, std, 95% interval)."""

from __future__ import annotations

from fewshot_eval.bootstrap import bootstrap_ci
from fewshot_eval.datasets import VQA_TASKS, DataError, EvalSet
from fewshot_eval.layouts.hateful_memes import POSITIVE_CLASS
from fewshot_eval.metrics import vqa_task_accuracy
from fewshot_eval.metrics.coco_caption import CAPTION_METRICS, caption_scores
from fewshot_eval.metrics.roc_auc import positive_probability, roc_auc, roc_auc_components
from fewshot_eval.selection import mean_std

__all__ = ["METRICS", "chance", "score_predictions", "summarize", "task_metrics"]

METRICS = {
    "caption": list(CAPTION_METRICS),  # CIDEr, BLEU-4, ROUGE-L (metrics.coco_caption)
    "video-caption": list(CAPTION_METRICS),
    **{t: ["VQA accuracy"] for t in VQA_TASKS},
    "video-qa": ["VQA accuracy"],
    "classify": ["top-1 accuracy", "top-5 accuracy"],  # top-5 only over more than 5 classes (task_metrics)
    "hateful-memes": ["ROC-AUC"],  # over the probability of "yes" (metrics.roc_auc)
}
_TOP_K = {"top-1 accuracy": 1, "top-5 accuracy": 5}


def task_metrics(task: str, query: EvalSet) -> list[str]:
    """The metrics of ``task`` on ``query``: top-5 accuracy is omitted over 5 or fewer classes, where it would be
    100% by construction."""
    if task == "classify" and len(query.class_names or []) <= 5:
        return METRICS[task][:1]
    return METRICS[task]


def score_predictions(task: str, records: dict[str, dict], query: EvalSet, per_query: bool = False,
                      vqa_scorer: str = "official", caption_scorer: str = "auto"):  # fmt: skip
    """Metric name -> score (papers' scale: CIDEr x100, accuracies in %) of the saved predictions.

    With ``per_query``, also metric name -> {query id: score} on the same scale (CIDEr per image with the IDF
    of the whole set, VQA accuracy per question, top-k 0 or 100), whose mean is the score: what the bootstrap
    resamples - except for the corpus statistic BLEU-4 (``coco_caption.CORPUS_METRICS``), whose per-image
    scores do not average to it. ROC-AUC (hateful-memes) ranks the queries by the probability of ``yes`` (the
    softmax of the two classes' per-token log-likelihoods, as OpenFlamingo); its per-query values are
    ``roc_auc.roc_auc_components``. ``vqa_scorer``, ``caption_scorer``: see ``evaluate``.

    Raises:
        DataError: ``query`` has no answers to score (a test-dev split: ``server_results`` writes its file).
    """
    if not query.annotated or not query.scored:
        raise DataError(f"{query.source}: split {query.split!r} is not scored here (no annotations, or the "
                        "evaluation server's result file was asked for); its predictions go to the server")  # fmt: skip
    by_id = {ex.id: ex for ex in query.examples}
    ids = [i for i in by_id if i in records]
    if task in ("caption", "video-caption"):
        scores = caption_scores({i: records[i]["prediction"] for i in ids}, {i: by_id[i].references for i in ids},
                                caption_scorer)  # fmt: skip
        means = {m: 100 * v for m, v in scores.means.items()}
        each_q = {m: {i: 100 * v for i, v in each.items()} for m, each in scores.per_image.items()}
    elif task in (*VQA_TASKS, "video-qa"):
        score, each = vqa_task_accuracy(task, {i: records[i]["prediction"] for i in ids},
                                        {i: by_id[i].references for i in ids}, vqa_scorer)  # fmt: skip
        means, each_q = {"VQA accuracy": 100 * score}, {"VQA accuracy": {i: 100 * v for i, v in each.items()}}
    elif task == "hateful-memes":
        labels = [int(by_id[i].target == POSITIVE_CLASS) for i in ids]
        probs = [positive_probability(records[i], POSITIVE_CLASS) for i in ids]
        each_q = {"ROC-AUC": dict(zip(ids, (100 * v for v in roc_auc_components(labels, probs))))}
        means = {"ROC-AUC": 100 * roc_auc(labels, probs)}
    else:
        each_q = {m: {i: 100.0 * (by_id[i].target in records[i]["ranking"][: _TOP_K[m]]) for i in ids}
                  for m in task_metrics(task, query)}  # fmt: skip
        means = {m: (sum(v.values()) / len(v) if v else 0.0) for m, v in each_q.items()}
    return (means, each_q) if per_query else means


def summarize(per_trial: list[dict[str, float]], ids: list[str], n_bootstrap: int, seed: int,
             corpus: list[float] | None = None) -> dict:  # fmt: skip
    """Mean and std over trials of each trial's mean, and the bootstrap CI over the queries every trial scored
    (in query order, so that the resampling is paired across trials). A corpus statistic (BLEU-4) gives its
    trials' scores in ``corpus``: their mean and std, and no interval (resampling its per-image scores would
    bound another number)."""
    scores = corpus if corpus is not None else [sum(t.values()) / len(t) if t else 0.0 for t in per_trial]
    mean, std = mean_std(scores)
    common = [i for i in ids if all(i in t for t in per_trial)]
    ci = (list(bootstrap_ci([[t[i] for i in common] for t in per_trial], n_bootstrap, seed))
          if common and corpus is None else None)  # fmt: skip
    return {"n": len(common), "trials": len(per_trial), "scores": scores, "mean": mean, "std": std, "ci95": ci,
            "n_bootstrap": n_bootstrap}  # fmt: skip


def chance(task: str, metric: str, query: EvalSet) -> dict:
    """Classification's chance level for ``metric`` (a guess among the classes), and the number of classes."""
    if task == "hateful-memes":
        return {"classes": 2, "chance": 50.0}  # ROC-AUC of scores blind to the image
    if task != "classify":
        return {}
    n = len(query.class_names or [])
    return {"classes": n, "chance": 100.0 * min(_TOP_K[metric], n) / n}
