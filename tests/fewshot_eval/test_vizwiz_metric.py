"""VizWiz accuracy as the VizWiz evaluation code computes it; the oracle is a line-by-line re-statement of its
``VQAEval.evaluate`` for one question (the file carries no licence, so it is not vendored)."""

import pytest
from vqa_cases import ALL_CASES

from fewshot_eval.metrics.vizwiz import VIZWIZ_CONTRACTIONS, vizwiz_accuracy, vizwiz_normalize, vizwiz_score
from fewshot_eval.metrics.vqa import (
    CONTRACTIONS,
    accuracy_by_type,
    process_digit_article,
    process_punctuation,
)

R = "\u2019"  # the VizWiz table's apostrophe


def vizwiz_reference(pred: str, answers: list[str]) -> float:
    """The VizWiz ``VQAEval.evaluate`` loop body: the prediction normalised with its tables, the answers as
    given, annotators left out by position (``processPunctuation`` / ``processDigitArticle`` are the VQA code's,
    checked against it in test_vqa_metric.py)."""
    res_ans = pred.replace("\n", " ").replace("\t", " ").strip()
    res_ans = process_digit_article(process_punctuation(res_ans), VIZWIZ_CONTRACTIONS)
    gt_acc = []
    for i in range(len(answers)):
        other = [a for j, a in enumerate(answers) if i != j]
        gt_acc.append(min(1, float(len([a for a in other if a == res_ans])) / 3))
    return float(sum(gt_acc)) / len(gt_acc)


def test_equals_the_vizwiz_code_on_every_case():
    bad = [(p, a) for p, a in ALL_CASES if vizwiz_score(p, a) != vizwiz_reference(p, a)]
    assert not bad, f"{len(bad)} cases differ, e.g. {bad[0]}"


def test_contraction_table_has_the_vizwiz_apostrophes():
    assert list(VIZWIZ_CONTRACTIONS.values())[:5] == ["ain't", "aren't", "can't", "could've", "couldn't"]
    assert VIZWIZ_CONTRACTIONS["dont"] == f"don{R}t" and VIZWIZ_CONTRACTIONS["twas"] == f"{R}twas"
    assert VIZWIZ_CONTRACTIONS["weve"] == "we've" and VIZWIZ_CONTRACTIONS["wheres"] == "where's"
    assert VIZWIZ_CONTRACTIONS["whove"] == "who've"
    assert VIZWIZ_CONTRACTIONS["couldn'tve"] == f"couldn{R}t{R}ve"  # an ASCII key ...
    assert VIZWIZ_CONTRACTIONS[f"couldnt{R}ve"] == f"couldn{R}t{R}ve" and "couldnt've" not in VIZWIZ_CONTRACTIONS
    assert VIZWIZ_CONTRACTIONS["hadn'tve"] == f"hadn{R}t{R}ve" and f"let{R}s" in VIZWIZ_CONTRACTIONS
    assert len(VIZWIZ_CONTRACTIONS) == len(CONTRACTIONS)


def test_prediction_normalised_answers_as_given():
    assert vizwiz_normalize("  Unanswerable.\n") == "unanswerable"
    assert vizwiz_score("Unanswerable.", ["unanswerable"] * 8 + ["blurry"] * 2) == 1.0
    assert vizwiz_score("dog", ["Dog"] * 5 + ["cat"] * 5) == 0.0  # answers are never normalised
    assert vizwiz_score("dont know", ["don't know"] * 10) == 0.0  # "don’t know" != "don't know"
    assert vizwiz_score("dont know", [f"don{R}t know"] * 10) == 1.0


def test_corpus_accuracy_per_answer_type():
    mean, per_q = vizwiz_accuracy({"a": "unanswerable", "b": "two", "c": "red"},
                                  {"a": ["unanswerable"] * 10, "b": ["2"] * 10, "c": ["blue"] * 10})  # fmt: skip
    assert per_q == {"a": 1.0, "b": 1.0, "c": 0.0} and mean == pytest.approx(2 / 3)
    types = {"a": "unanswerable", "b": "number", "c": "other"}
    assert accuracy_by_type(per_q, types) == {"unanswerable": 1.0, "number": 1.0, "other": 0.0}
    with pytest.raises(ValueError, match="no reference answers, e.g. id 'z'"):
        vizwiz_accuracy({"z": "x"}, {})
    with pytest.raises(ValueError, match="at least one reference answer"):
        vizwiz_score("x", [])
