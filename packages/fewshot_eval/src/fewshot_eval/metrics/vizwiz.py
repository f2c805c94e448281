"""VizWiz VQA accuracy as the VizWiz evaluation code computes it (the ``VQAEval`` of the VizWiz VQA API).

Gurari et al., "VizWiz Grand Challenge: Answering Visual Questions from Blind People" (arXiv 1802.08218). The
questions come from blind people's photos; when the photo cannot answer the question the annotators answer
``"unanswerable"`` and the question's ``answer_type`` is ``"unanswerable"`` (the others: ``"yes/no"``,
``"number"``, ``"other"``). ``"unanswerable"`` is scored like any other answer, so a model must say it to score
there; the evaluation reports the overall accuracy and one per answer type (``vqa.accuracy_by_type``).

Where it differs from the VQA code (``vqa.py``, scorer ``official``):

- the prediction always gets the full normalisation (stripped, punctuation, number words, articles,
  contractions); the annotators' answers are compared as they are, never stripped or normalised (VizWiz
  releases them already processed);
- its contraction table puts a typographic apostrophe (U+2019) where the VQA table has ``'`` - in the values,
  except eight (``ain't``, ``aren't``, ``can't``, ``could've``, ``couldn't``, ``we've``, ``where's``,
  ``who've``), and in the keys, except ``couldn'tve`` and ``hadn'tve`` - so ``"dont"`` becomes ``"don’t"``,
  which an ASCII ``"don't"`` does not equal;
- annotators are left out by position (``i != j``), never by value.

The binary answerability task of VizWiz (average precision of a predicted ``answerable`` probability) is a
separate evaluation and not computed here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fewshot_eval.metrics.vqa import (
    CONTRACTIONS,
    leave_one_out_accuracy,
    process_digit_article,
    process_punctuation,
)

__all__ = ["VIZWIZ_CONTRACTIONS", "vizwiz_accuracy", "vizwiz_normalize", "vizwiz_score"]

_ASCII_VALUES = {"aint", "arent", "cant", "couldve", "couldnt", "weve", "wheres", "whove"}
_ASCII_KEYS = {"couldn'tve", "hadn'tve"}


def _typographic(text: str) -> str:
    return text.replace("'", "\u2019")


# The VQA table with the VizWiz code's apostrophes (module docstring); same keys, in the same order.
VIZWIZ_CONTRACTIONS = {
    (k if k in _ASCII_KEYS else _typographic(k)): (v if k in _ASCII_VALUES else _typographic(v))
    for k, v in CONTRACTIONS.items()
}


def vizwiz_normalize(prediction: str) -> str:
    """The VizWiz code's normalisation of a prediction: stripped, punctuation, then number words, articles and
    its contraction table."""
    text = prediction.replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(text), VIZWIZ_CONTRACTIONS)


def vizwiz_score(prediction: str, answers: Sequence[str]) -> float:
    """VizWiz accuracy (0-1) of one prediction against the annotators' answers (10, compared as given).

    Args:
        prediction: the model's answer, raw.
        answers: the annotators' answers as released (already processed by VizWiz).
    """
    if not answers:
        raise ValueError("a VizWiz question needs at least one reference answer, got none")
    return leave_one_out_accuracy(vizwiz_normalize(prediction), list(answers))


def vizwiz_accuracy(
    predictions: Mapping[str, str], answers: Mapping[str, Sequence[str]]
) -> tuple[float, dict[str, float]]:
    """Mean VizWiz accuracy (0-1) over questions, and the per-question scores.

    Args:
        predictions: question id -> predicted answer.
        answers: question id -> annotators' answers; must hold every id of ``predictions``.
    """
    missing = [k for k in predictions if k not in answers]
    if missing:
        raise ValueError(f"{len(missing)} predictions have no reference answers, e.g. id {missing[0]!r}")
    per_q = {k: vizwiz_score(p, answers[k]) for k, p in predictions.items()}
    return (sum(per_q.values()) / len(per_q) if per_q else 0.0), per_q
