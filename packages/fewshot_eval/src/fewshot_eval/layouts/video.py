"""Video splits from JSON Lines: ``<data>/<split>.jsonl`` rows ``{"video", "text"}`` (or ``"captions": [...]``)
for ``video-caption`` and ``{"video", "question", "answers", "question_id"}`` for ``video-qa``; a video is an
mp4 file or a folder of frames."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from contrastive_encoder.shared.records import SkipCounter, read_jsonl, resolve_media_path
from fewshot_eval.layouts.evalset import (
    DataError,
    EvalSet,
    Example,
    answer_texts,
    caption_texts,
    skip_reserved,
)

__all__ = ["load_video_jsonl"]


def _check_rows(file: Path, task: str, first: dict, expected: str) -> None:
    if task == "video-caption" and "text" not in first and "captions" not in first:
        kind = " (this looks like a video-QA file)" if "question" in first else ""
        raise DataError(f"{file}: rows have no 'text'{kind}; task 'video-caption' expects {expected}")
    if task == "video-qa" and ("question" not in first or "answers" not in first):
        kind = " (this looks like a captioning file)" if "text" in first else ""
        raise DataError(f"{file}: rows have no 'question'/'answers'{kind}; task 'video-qa' expects {expected}")


def _example(row: dict, task: str, media: Path, skipped: SkipCounter, where: str) -> Example | None:
    ex_id = str(row.get("question_id", row.get("id", row["video"])))
    if task == "video-caption":
        caps = caption_texts(row["captions"]) if row.get("captions") else caption_texts(row.get("text"))
        if not caps:
            skipped.skip("no caption", where, strict=False)
            return None
        return None if skip_reserved(skipped, where, *caps) else Example(ex_id, media, caps[0], caps)
    answers = answer_texts(row.get("answers"))
    if not answers or not isinstance(row.get("question"), str) or not row["question"].strip():
        skipped.skip("no question or answers", where, strict=False)
        return None
    answer = row.get("answer")
    target = str(answer) if isinstance(answer, (str, int, float)) and str(answer).strip() else (
        Counter(answers).most_common(1)[0][0])
    if skip_reserved(skipped, where, row["question"], target, *answers):
        return None
    return Example(ex_id, media, target, answers, question=row["question"])


def load_video_jsonl(path: str | Path, split: str, task: str) -> EvalSet:
    """Video split from ``<path>/<split>.jsonl`` (or the file itself), for ``video-caption`` or ``video-qa``."""
    path = Path(path)
    file = path if path.is_file() else path / f"{split}.jsonl"
    expected = "rows {'video', 'text'}" if task == "video-caption" else "rows {'video', 'question', 'answers'}"
    if not file.is_file():
        raise DataError(f"{file}: file not found; task {task!r} expects a JSON Lines file with {expected}")
    skipped = SkipCounter()
    rows = list(read_jsonl(file, required=("video",), skipped=skipped))
    if not rows:
        raise DataError(f"{file}: no rows with a 'video'; task {task!r} expects {expected}")
    _check_rows(file, task, rows[0], expected)
    examples = []
    for i, row in enumerate(rows):
        where = f"{file}: row {i + 1}"
        if not isinstance(row["video"], str):
            skipped.skip("'video' is not a path", where, strict=False)
            continue
        ex = _example(row, task, resolve_media_path(row["video"], file.parent), skipped, where)
        if ex is not None:
            examples.append(ex)
    if not examples:
        raise DataError(f"{file}: no usable rows; task {task!r} expects {expected}")
    return EvalSet(task, split, file, examples, skipped=skipped)
