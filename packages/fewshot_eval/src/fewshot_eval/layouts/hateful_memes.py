"""Hateful Memes (Kiela et al., arXiv 2005.04790) in Facebook's release layout: ``<data>/{split}.jsonl``
(``train``, ``dev_seen``, ``test_seen``, ``dev_unseen``, ``test_unseen``) rows ``{"id", "img", "label", "text"}``
with ``label`` 1 for hateful, 0 for not, and ``img`` a path such as ``img/42953.png`` relative to the data folder.

A binary close-ended task as OpenFlamingo evaluates it: the classes are ``no`` (label 0) and ``yes`` (label 1),
the prompt holds the meme's text (``Example.question``), and the metric is ROC-AUC over the probability of
``yes`` (``metrics.roc_auc``). A row without a 0/1 label or text is skipped and counted; a file none of whose
rows has a label (the first release's unlabelled ``test.jsonl``) is an error.
"""

from __future__ import annotations

from pathlib import Path

from contrastive_encoder.shared.records import SkipCounter, read_jsonl, resolve_media_path
from fewshot_eval.layouts.evalset import DataError, EvalSet, Example, skip_reserved

__all__ = ["HATEFUL_MEMES", "HATEFUL_MEMES_CLASSES", "POSITIVE_CLASS", "load_hateful_memes"]

HATEFUL_MEMES = "a Hateful Memes JSON Lines file <data>/<split>.jsonl, rows {'id', 'img', 'label': 0 or 1, 'text'}"
HATEFUL_MEMES_CLASSES = ["no", "yes"]  # class index = label, as OpenFlamingo's HM_CLASSNAMES
POSITIVE_CLASS = "yes"  # hateful: the class whose probability ROC-AUC ranks


def _example(row: dict, jsonl: Path, skipped: SkipCounter, where: str) -> Example | None:
    label, text = row.get("label"), row.get("text")
    if label not in (0, 1) or isinstance(label, bool):
        skipped.skip("label is not 0 or 1", where, strict=False)
        return None
    if not isinstance(text, str) or not isinstance(row["img"], str):
        skipped.skip("no text, or 'img' is not a path", where, strict=False)
        return None
    if skip_reserved(skipped, where, text):
        return None
    name = HATEFUL_MEMES_CLASSES[label]
    return Example(str(row.get("id", row["img"])), resolve_media_path(row["img"], jsonl.parent), name, (name,),
                   question=text)  # fmt: skip


def load_hateful_memes(path: str | Path, split: str) -> EvalSet:
    """Hateful Memes split from ``<path>/<split>.jsonl`` (or the file itself).

    Args:
        path: the data folder (holding the ``.jsonl`` files and ``img/``) or one ``.jsonl`` file.
        split: ``train``, ``dev_seen``, ``test_seen``, ...
    """
    path = Path(path)
    jsonl = path if path.is_file() else path / f"{split}.jsonl"
    if not jsonl.is_file():
        found = sorted(p.stem for p in path.glob("*.jsonl")) if path.is_dir() else []
        present = f" (splits present: {', '.join(found)})" if found else ""
        raise DataError(f"{jsonl}: file not found{present}; task 'hateful-memes' expects {HATEFUL_MEMES}")
    skipped = SkipCounter()
    rows = list(read_jsonl(jsonl, required=("img",), skipped=skipped))
    if rows and not any("label" in row for row in rows):
        raise DataError(f"{jsonl}: no row has a 'label' (an unlabelled test file?); task 'hateful-memes' expects "
                        f"{HATEFUL_MEMES}")  # fmt: skip
    examples = [ex for i, row in enumerate(rows) if (ex := _example(row, jsonl, skipped, f"{jsonl}: row {i + 1}"))]
    if not examples:
        raise DataError(f"{jsonl}: no usable rows; task 'hateful-memes' expects {HATEFUL_MEMES}")
    return EvalSet("hateful-memes", split, jsonl, examples, class_names=list(HATEFUL_MEMES_CLASSES),
                   skipped=skipped)  # fmt: skip
