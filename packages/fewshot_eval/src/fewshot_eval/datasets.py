"""The evaluation sets of every task: which layout each task reads (``fewshot_eval.layouts``, one loader a
benchmark layout, docs/formats.md) and which splits are its support and query sets.

Every loader returns an ``EvalSet`` of ``Example`` records and fails with a one-line ``DataError`` naming the
file and what was expected when the file is not of the task's format. A bad record in a file of the right
format (no annotation, no answer text, a caption holding the prompt's own ``<image>`` / ``<EOC>`` markers, an
entry of the wrong type) is skipped and counted in ``EvalSet.skipped``, which the command line reports. Media
are only resolved to paths here; ``fewshot_eval.media`` checks and decodes them.
"""

from __future__ import annotations

from pathlib import Path

from fewshot_eval.layouts.classification import load_classification
from fewshot_eval.layouts.evalset import RESERVED_TOKENS, DataError, EvalSet, Example
from fewshot_eval.layouts.hateful_memes import load_hateful_memes
from fewshot_eval.layouts.image_template import DEFAULT_IMAGE_TEMPLATE
from fewshot_eval.layouts.karpathy import load_karpathy
from fewshot_eval.layouts.video import load_video_jsonl
from fewshot_eval.layouts.vqa import load_vqa

__all__ = [
    "CAPTION_TASKS", "CLOSE_ENDED_TASKS", "DEFAULT_IMAGE_TEMPLATE", "RESERVED_TOKENS", "SERVER_TASKS", "SHORT_ANSWER_TASKS", "TASKS", "VQA_TASKS",
    "DataError", "EvalSet", "Example", "load_classification", "load_hateful_memes", "load_karpathy", "load_split",
    "load_task_data", "load_video_jsonl", "load_vqa",
]  # fmt: skip

# image VQA benchmarks: one format (VQAv2's questions + annotations), each scored as its evaluation does
# (metrics/vqa_benchmarks.py)
VQA_TASKS = ("vqa", "okvqa", "vizwiz", "textvqa")
SHORT_ANSWER_TASKS = (*VQA_TASKS, "video-qa")  # open-ended, answered in a few words
CAPTION_TASKS = ("caption", "video-caption")
# ranked over their class names by log-likelihood (runner), not generated
CLOSE_ENDED_TASKS = ("classify", "hateful-memes")
TASKS = ("caption", *VQA_TASKS, *CLOSE_ENDED_TASKS, "video-caption", "video-qa")
# tasks whose unannotated split (test-dev) is scored by an evaluation server, from the file server_results writes
SERVER_TASKS = ("vqa",)

DEFAULT_SPLITS = {  # (support, query candidates: the first the data has)
    "caption": ("train", ("test", "val")),
    **{t: ("train", ("val",)) for t in VQA_TASKS},
    "classify": ("train", ("val",)),
    "hateful-memes": ("train", ("test_seen", "dev_seen", "dev")),
    "video-caption": ("train", ("val",)),
    "video-qa": ("train", ("val",)),
}


def load_split(task: str, data: str | Path, split: str, image_template: str = DEFAULT_IMAGE_TEMPLATE) -> EvalSet:
    """One split of ``data`` in the format of ``task``."""
    if task == "caption":
        return load_karpathy(data, split)
    if task in VQA_TASKS:
        return load_vqa(data, split, image_template)
    if task == "classify":
        return load_classification(data, split)
    if task == "hateful-memes":
        return load_hateful_memes(data, split)
    if task in ("video-caption", "video-qa"):
        return load_video_jsonl(data, split, task)
    raise DataError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")


def _check_scoring(task: str, support: EvalSet, query: EvalSet, score: bool | None) -> None:
    """Refuse unannotated splits where answers are needed; mark a query set whose predictions go to the
    evaluation server instead of a metric (``EvalSet.scored``)."""
    if not support.annotated:
        raise DataError(f"{support.source}: split {support.split!r} has no annotations file; demonstrations need "
                        "answers: choose a --support-split with annotations (train)")  # fmt: skip
    server = not query.annotated or score is False
    if server and task not in SERVER_TASKS:
        why = "has no annotations file" if not query.annotated else "is to be written for an evaluation server"
        raise DataError(f"{query.source}: split {query.split!r} {why}; task {task!r} expects its annotations "
                        f"(only {', '.join(SERVER_TASKS)} writes an evaluation server's result file)")  # fmt: skip
    if not query.annotated and score:
        raise DataError(f"{query.source}: split {query.split!r} has no annotations to score (its evaluation server "
                        "scores it): drop --score to write the server's result file")  # fmt: skip
    if not query.annotated and score is None and not query.split.startswith("test"):
        raise DataError(f"{query.source}: split {query.split!r} has no annotations file; expected "
                        f"{query.split}_annotations.json beside it (--no-score writes the evaluation server's "
                        "result file instead of scoring)")  # fmt: skip
    query.scored = not server


def load_task_data(
    task: str,
    data: str | Path,
    split: str | None = None,
    support_split: str | None = None,
    image_template: str = DEFAULT_IMAGE_TEMPLATE,
    score: bool | None = None,
) -> tuple[EvalSet, EvalSet]:
    """(support set, query set) of a task; splits default per task (``DEFAULT_SPLITS``: the query split is the
    first of its candidates the data has, e.g. ``test`` else ``val`` for captioning).

    Args:
        score: None: score an annotated query split, write the evaluation server's result file for a ``test*``
            split without annotations (VQAv2 test-dev); True: score, a split without annotations is an error;
            False: write the server's result file, never score.
    """
    if task not in TASKS:
        raise DataError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    default_support, candidates = DEFAULT_SPLITS[task]
    support = load_split(task, data, support_split or default_support, image_template)
    if split is not None:
        query = load_split(task, data, split, image_template)
    else:
        first: DataError | None = None
        for candidate in candidates:
            try:
                query = load_split(task, data, candidate, image_template)
                break
            except DataError as e:
                first = first or e
        else:
            raise first
    _check_scoring(task, support, query, score)
    return support, query
