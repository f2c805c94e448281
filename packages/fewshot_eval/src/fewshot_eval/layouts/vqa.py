"""VQAv2's layout, also OK-VQA's, VizWiz's and TextVQA's in it: ``{split}_questions.json`` +
``{split}_annotations.json`` in a folder (or VQAv2's own names, ``v2_OpenEnded_mscoco_val2014_questions.json`` +
``v2_mscoco_val2014_annotations.json``), images found by an image template (``layouts.image_template``).

A split with a questions file and no annotations file (VQAv2 ``test-dev`` / ``test``) loads without answers
(``EvalSet.annotated`` False): its predictions are for the evaluation server (``server_results``). Beside
``test-dev``'s questions, the ``test`` questions file (``..._test2015_questions.json``) is remembered as
``EvalSet.server_questions``: the server scores test-dev from a file answering every test2015 question.

Bad input: one question without an annotation, or one annotation without answer texts, is skipped and counted
(a single bad record); an annotations file none of whose annotations has answers, or one holding a question id
that the questions file lacks (the two files are not a pair: another split's or another version's), is an
error naming the file.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from contrastive_encoder.shared.records import SkipCounter
from fewshot_eval.layouts.evalset import (
    DataError,
    EvalSet,
    Example,
    answer_texts,
    find_split_file,
    guess_format,
    read_json_file,
    skip_reserved,
)
from fewshot_eval.layouts.image_template import DEFAULT_IMAGE_TEMPLATE, ImageTemplate

__all__ = ["VQA_ANNOTATIONS", "VQA_QUESTIONS", "load_vqa", "read_questions"]

VQA_QUESTIONS = "a VQA questions JSON ({'questions': [{'image_id', 'question', 'question_id'}]})"
VQA_ANNOTATIONS = "a VQA annotations JSON ({'annotations': [{'question_id', 'answers': [{'answer'}]}]})"


def read_questions(qfile: Path) -> list:
    """The ``questions`` list of a VQA questions file."""
    qdata = read_json_file(qfile, VQA_QUESTIONS)
    if not isinstance(qdata, dict) or not isinstance(qdata.get("questions"), list):
        raise DataError(f"{qfile}: looks like {guess_format(qdata)}, but task 'vqa' expects {VQA_QUESTIONS}")
    return qdata["questions"]


def _annotations(afile: Path, qfile: Path, questions: list) -> dict:
    """Question id -> annotation; the whole file refused when it cannot be the questions file's pair."""
    adata = read_json_file(afile, VQA_ANNOTATIONS)
    anns = adata.get("annotations") if isinstance(adata, dict) else None
    if not isinstance(anns, list) or (anns and not (isinstance(anns[0], dict) and "answers" in anns[0])):
        raise DataError(f"{afile}: looks like {guess_format(adata)}, but task 'vqa' expects {VQA_ANNOTATIONS}")
    by_qid = {a.get("question_id"): a for a in anns if isinstance(a, dict)}
    asked = {q.get("question_id") for q in questions if isinstance(q, dict)}
    unknown = [qid for qid in by_qid if qid not in asked]
    if unknown:
        raise DataError(f"{afile}: {len(unknown)} of its {len(by_qid)} annotations answer question ids that "
                        f"{qfile.name} lacks (first: {unknown[0]!r}); expected the annotations of the same split "
                        "and version as the questions")  # fmt: skip
    if by_qid and not any(answer_texts(a.get("answers")) for a in by_qid.values()):
        raise DataError(f"{afile}: no annotation has answer texts; expected {VQA_ANNOTATIONS}")
    return by_qid


def _example(q: dict, ann: dict | None, folder: Path, split: str, images: ImageTemplate, skipped: SkipCounter,
             where: str, annotations: str) -> Example | None:  # fmt: skip
    """One question's example (None: skipped and counted); ``ann`` None in a split without annotations."""
    answers: tuple[str, ...] = ()
    target = ""
    if ann is None and annotations:
        skipped.skip(f"question without an annotation in {annotations}", where, strict=False)
        return None
    if ann is not None:
        answers = answer_texts(ann.get("answers"))
        if not answers:
            skipped.skip("annotation without answer texts", where, strict=False)
            return None
        mc = ann.get("multiple_choice_answer")
        target = str(mc) if isinstance(mc, (str, int, float)) and str(mc).strip() else Counter(answers).most_common(1)[0][0]
    if q.get("image_id") is None or not isinstance(q.get("question"), str) or not q["question"].strip():
        skipped.skip("question without image_id or text", where, strict=False)
        return None
    if skip_reserved(skipped, where, q["question"], target, *answers):
        return None
    return Example(id=str(q["question_id"]), media=images.path(folder, split, q["image_id"]), target=target,
                   references=answers, question=q["question"])  # fmt: skip


def _server_questions(folder: Path, qfile: Path, questions: list) -> Path | None:
    """The test questions file beside test-dev's, which must hold every test-dev question id; None without it."""
    server = find_split_file(folder, ["test_questions.json"], "*test*questions*.json", VQA_QUESTIONS, "test",
                             required=False)  # fmt: skip
    if server is None or server == qfile:
        return None
    every = {q.get("question_id") for q in read_questions(server) if isinstance(q, dict)}
    missing = [q.get("question_id") for q in questions if isinstance(q, dict) and q.get("question_id") not in every]
    if missing:
        raise DataError(f"{server}: {len(missing)} question ids of {qfile.name} are not in it (first: "
                        f"{missing[0]!r}); expected the test questions that hold test-dev's")  # fmt: skip
    return server


def load_vqa(path: str | Path, split: str, image_template: str = DEFAULT_IMAGE_TEMPLATE) -> EvalSet:
    """VQA split from its questions file and, when the split has one, its annotations file, in a folder.

    Args:
        path: the folder (or one of the two files; the other is found beside it).
        split: ``train`` / ``val`` / ``test-dev`` / ...
        image_template: where the images are (``layouts.image_template``: one template, one per split, or
            ``coco``).
    """
    path = Path(path)
    images = ImageTemplate(image_template)
    folder = path.parent if path.is_file() else path
    if not folder.is_dir():
        raise DataError(f"{path}: no such folder; expected a folder with {split}_questions.json and annotations")
    qfile = find_split_file(folder, [f"{split}_questions.json"], f"*{split}*questions*.json", VQA_QUESTIONS, split)
    afile = find_split_file(folder, [f"{split}_annotations.json"], f"*{split}*annotations*.json", VQA_ANNOTATIONS,
                            split, required=False)  # fmt: skip
    questions = read_questions(qfile)
    by_qid = _annotations(afile, qfile, questions) if afile is not None else {}
    examples, skipped = [], SkipCounter()
    for i, q in enumerate(questions):
        where = f"{qfile}: questions[{i}]"
        if not isinstance(q, dict):
            skipped.skip("entry is not a JSON object", where, strict=False)
            continue
        ex = _example(q, by_qid.get(q.get("question_id")), folder, split, images, skipped, where,
                      afile.name if afile is not None else "")  # fmt: skip
        if ex is not None:
            examples.append(ex)
    if not examples:
        what = f"an annotation with answers in {afile}" if afile is not None else "an image_id and a text"
        raise DataError(f"{qfile}: no question has {what}")
    images.check_roots([ex.media for ex in examples], split, qfile)
    server = _server_questions(folder, qfile, questions) if afile is None and split == "test-dev" else None
    return EvalSet("vqa", split, qfile, examples, skipped=skipped, annotated=afile is not None,
                   server_questions=server)  # fmt: skip
