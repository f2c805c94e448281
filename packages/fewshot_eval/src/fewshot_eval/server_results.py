"""The evaluation server's result file of a split without answers (VQAv2 test-dev / test-std, scored only on
EvalAI): ``[{"question_id": int, "answer": str}, ...]``, one file per (selection, shots, trial), written instead
of scores.

Named as the VQA challenge asks, ``vqa_<task type>_<data type>_<data subtype>_<algorithm>_results.json`` (the
first three from the questions file's ``task_type``, ``data_type``, ``data_subtype``: ``vqa_OpenEnded_mscoco_
test-dev2015_random-4shot-ens1-trial0_results.json``), in ``<out>/server/``. A test-dev run answers every question
of test2015 when that questions file is beside test-dev's (``EvalSet.server_questions``; EvalAI scores test-dev
out of a test-std-sized file), the ones not evaluated with an empty answer. The answers are the predictions as
post-processed for scoring; the server applies the VQA answer normalisation itself.
"""

from __future__ import annotations

import json
from pathlib import Path

from contrastive_encoder.shared.outputs import atomic_write_text
from fewshot_eval.layouts.evalset import EvalSet, read_json_file
from fewshot_eval.layouts.vqa import VQA_QUESTIONS, read_questions

__all__ = ["server_answers", "server_file_name", "write_server_results"]


def _qid(ex_id: str) -> int | str:
    """The question id as the questions file has it (VQA's are integers)."""
    return int(ex_id) if ex_id.lstrip("-").isdigit() else ex_id


def server_file_name(query: EvalSet, stem: str) -> str:
    """The result file's name for the predictions ``stem`` (``<task>_<selection>_<k>shot_ens<E>_trial<t>``)."""
    meta = read_json_file(query.source, VQA_QUESTIONS)
    meta = meta if isinstance(meta, dict) else {}

    def field(key: str, default: str) -> str:
        value = meta.get(key)
        return str(value).replace("-", "") if key == "task_type" and value else str(value or default)

    algorithm = stem.split("_", 1)[1].replace("_", "-")  # '_' separates the name's fields
    return (f"vqa_{field('task_type', 'OpenEnded')}_{field('data_type', 'mscoco')}_"
            f"{field('data_subtype', query.split)}_{algorithm}_results.json")  # fmt: skip


def server_answers(records: dict[str, dict], query: EvalSet) -> list[dict]:
    """The result file's entries: every predicted question, then (with ``query.server_questions``, checked to
    hold them by ``layouts.vqa``) every other question of that file with an empty answer."""
    answers = [{"question_id": _qid(ex.id), "answer": records[ex.id]["prediction"]}
               for ex in query.examples if ex.id in records]  # fmt: skip
    if query.server_questions is None:
        return answers
    done = {a["question_id"] for a in answers}
    every = [q.get("question_id") for q in read_questions(query.server_questions) if isinstance(q, dict)]
    return answers + [{"question_id": qid, "answer": ""} for qid in every if qid not in done]


def write_server_results(out: Path | None, stem: str, records: dict[str, dict], query: EvalSet,
                         progress: bool = False) -> Path:  # fmt: skip
    """Write the result file of one (selection, shots, trial) in ``<out>/server/``; returns its path."""
    if out is None:
        raise ValueError(f"split {query.split!r} of {query.source} is scored by its evaluation server: give an "
                         "output folder for the server's result file")  # fmt: skip
    answers = server_answers(records, query)
    path = out / "server" / server_file_name(query, stem)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(answers))
    if progress:
        print(f"{len(records)} answers for the evaluation server ({len(answers)} questions) in {path}")
    return path
