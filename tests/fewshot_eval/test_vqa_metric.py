"""VQA accuracy with the official normalisation (GT-Vision-Lab/VQA vqaEval.py) and its corner cases."""

import pytest

from fewshot_eval.metrics.vqa import normalize_answer, process_punctuation, vqa_accuracy, vqa_score


@pytest.mark.parametrize(
    "prediction,gt",
    [("two", "2"), ("Two", "2"), ("a dog", "dog"), ("The dog", "dog"), ("yes.", "yes"), ("Yes", "yes"),
     ("dont", "don't"), ("  yes\n", "yes"), ("none", "0"), ("ten", "10"), ("isnt", "isn't")],
)  # fmt: skip
def test_normalised_prediction_matches_unanimous_answer(prediction, gt):
    assert vqa_score(prediction, [gt] * 10) == 1.0


@pytest.mark.parametrize("prediction", ["dog", "2", "yes", "no"])
def test_wrong_answer_scores_zero(prediction):
    assert vqa_score(prediction, ["cat"] * 10) == 0.0


@pytest.mark.parametrize(
    "matches,expected",
    # leave-one-out over 10 annotators: an annotator who gave the answer leaves matches-1 others, the rest
    # leave `matches`; each subset scores min(m/3, 1); e.g. 2 matches: (2 * 1/3 + 8 * 2/3) / 10 = 0.6
    [(0, 0.0), (1, (1 * 0 + 9 * 1 / 3) / 10), (2, 0.6), (3, (3 * 2 / 3 + 7 * 1) / 10), (4, 1.0), (10, 1.0)],
)
def test_leave_one_out_average(matches, expected):
    answers = ["red"] * matches + ["blue"] * (10 - matches)
    assert vqa_score("red", answers) == pytest.approx(expected)


def test_reference_answers_only_get_punctuation_processing_when_annotators_disagree():
    # Official behaviour: unanimous answers are compared as they are (VQA annotations are pre-normalised).
    assert vqa_score("dog", ["dog."] * 10) == 0.0
    assert vqa_score("dog", ["dog."] * 9 + ["cat"]) == 1.0  # disagreement -> "dog." becomes "dog"
    # ... and never get number/article normalisation unless asked for (user data).
    assert vqa_score("2", ["two"] * 10) == 0.0
    assert vqa_score("2", ["two"] * 10, normalize_references=True) == 1.0


def test_punctuation_rules():
    assert normalize_answer("hot-dog") == "hot dog"  # '-' without a neighbouring space becomes a space
    assert normalize_answer("yes, - no") == "yes no"  # ' -' present: '-' and ',' removed
    assert normalize_answer("1,000") == "1000"  # digit,digit: punctuation removed, not spaced
    assert normalize_answer("3.5") == "3.5"  # period before a digit kept
    assert normalize_answer("t.v.") == "tv"
    assert process_punctuation("a/b") == "a b"


def test_corpus_accuracy_is_mean_over_questions():
    mean, per_q = vqa_accuracy({"1": "two", "2": "cat"}, {"1": ["2"] * 10, "2": ["dog"] * 10})
    assert per_q == {"1": 1.0, "2": 0.0}
    assert mean == 0.5
    with pytest.raises(ValueError, match="no reference answers"):
        vqa_accuracy({"3": "x"}, {"1": ["x"]})
