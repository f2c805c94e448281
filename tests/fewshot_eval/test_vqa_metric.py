"""VQA accuracy equals the official code it reproduces, question by question, to the last bit.

Oracles: GT-Vision-Lab/VQA's ``vqaEval.py`` at its head (a013f00, scorer ``official``) and before its 2021 fix
(a4f1afd, ``official-2017``), vendored under tests/peers/gt_vision_lab_vqa (BSD licence); OpenFlamingo 2.0.1's
``open_flamingo/eval/vqa_metric.py`` (``openflamingo``) from benchmarks/.peer-site where it is installed. Each runs
on a case set built to exercise every branch of the normalisation, plus a few thousand seeded random cases.
"""

import importlib.util
import re
import warnings
from pathlib import Path

import pytest
from vqa_cases import ALL_CASES, Y10

from fewshot_eval.metrics.vqa import (
    SCORERS,
    accuracy_by_type,
    normalize_answer,
    process_punctuation,
    vqa_accuracy,
    vqa_score,
)

ROOT = Path(__file__).resolve().parents[2]
OFFICIAL = ROOT / "tests" / "peers" / "gt_vision_lab_vqa"
PEER_METRIC = ROOT / "benchmarks" / ".peer-site" / "open_flamingo" / "eval" / "vqa_metric.py"
INSTALL = "bash benchmarks/peers/install_openflamingo.sh"



class _Set:
    """What ``VQAEval`` reads of a ``VQA`` object: ``qa`` and ``getQuesIds``."""

    def __init__(self, qa: dict):
        self.qa = qa

    def getQuesIds(self):  # noqa: N802 - the oracles' name
        return list(self.qa)


def _compile_official(name: str):
    """``VQAEval`` of a vendored official file: its two Python-2 ``print "..."`` statements made calls."""
    src = (OFFICIAL / name).read_text(encoding="utf-8")
    src, n = re.subn(r'^(\s*)print "(.*)"\s*$', r'\1print("\2")', src, flags=re.M)
    assert n == 2, f"{name}: expected the two print statements of vqaEval.py, found {n}"
    namespace: dict = {}
    with warnings.catch_warnings():  # its "\d" in non-raw strings
        warnings.simplefilter("ignore")
        exec(compile(src, str(OFFICIAL / name), "exec"), namespace)
    return namespace["VQAEval"]


def _peer_vqaeval():
    if not PEER_METRIC.is_file():
        pytest.skip(f"OpenFlamingo is not installed in benchmarks/.peer-site: run `{INSTALL}`")
    spec = importlib.util.spec_from_file_location("_peer_vqa_metric", PEER_METRIC)
    module = importlib.util.module_from_spec(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spec.loader.exec_module(module)
    return module.VQAEval


def _oracle_scores(vqa_eval_cls, cases) -> list[float]:
    """Per-question accuracy (0-1, unrounded) the oracle computes for (prediction, answers) cases, run as its
    authors run it: annotation dicts with their answer ids, one result per question, ``evaluate()``."""
    gts = {i: {"question_type": "what", "answer_type": "other",
               "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": j + 1} for j, a in enumerate(ans)]}
           for i, (_, ans) in enumerate(cases)}  # fmt: skip
    res = {i: {"question_id": i, "answer": pred} for i, (pred, _) in enumerate(cases)}
    ev = vqa_eval_cls(_Set(gts), _Set(res), n=2)
    raw: dict = {}
    ev.setEvalQA = lambda qid, acc: raw.__setitem__(qid, acc)  # it stores round(100 * acc, n); keep acc itself
    ev.updateProgress = lambda progress: None
    ev.evaluate()
    return [raw[i] for i in range(len(cases))]


ORACLES = {"official": "vqaEval_a013f00.py.txt", "official-2017": "vqaEval_a4f1afd.py.txt"}


@pytest.mark.parametrize("scorer", sorted(ORACLES))
def test_equals_the_official_code_on_every_case(scorer, capsys):
    expected = _oracle_scores(_compile_official(ORACLES[scorer]), ALL_CASES)
    ours = [vqa_score(pred, answers, scorer) for pred, answers in ALL_CASES]
    bad = [(c, o, e) for c, o, e in zip(ALL_CASES, ours, expected) if o != e]
    assert not bad, f"{len(bad)} of {len(ALL_CASES)} cases differ from the official code, e.g. {bad[0]}"


def test_openflamingo_scorer_equals_openflamingos_copy(capsys):
    expected = _oracle_scores(_peer_vqaeval(), ALL_CASES)
    ours = [vqa_score(pred, answers, "openflamingo") for pred, answers in ALL_CASES]
    bad = [(c, o, e) for c, o, e in zip(ALL_CASES, ours, expected) if o != e]
    assert not bad, f"{len(bad)} of {len(ALL_CASES)} cases differ from OpenFlamingo's vqa_metric.py, e.g. {bad[0]}"


def test_the_case_set_tells_the_scorers_apart():
    """Each pair of scorers disagrees on many cases: a case set on which they agreed would prove nothing."""
    scores = {s: [vqa_score(p, a, s) for p, a in ALL_CASES] for s in SCORERS}
    for i, s in enumerate(SCORERS):
        for t in SCORERS[i + 1 :]:
            differ = sum(x != y for x, y in zip(scores[s], scores[t]))
            assert differ >= 100, f"{s} and {t} differ on only {differ} cases"


@pytest.mark.parametrize(
    "prediction,answers,official,official_2017,openflamingo",
    [("Yes.", Y10, 0.0, 1.0, 1.0),  # unanimous: the official code normalises nothing
     ("two", ["two"] * 10, 1.0, 0.0, 1.0),  # 2017: only the prediction becomes "2"
     ("2", ["two"] * 10, 0.0, 0.0, 1.0),
     ("two", ["2"] * 7 + ["3"] * 3, 1.0, 1.0, 1.0),
     ("two", ["two"] * 7 + ["3"] * 3, 1.0, 0.0, 1.0),  # 2017: the answers get punctuation processing only
     ("Yes", ["yes"], 0.0, 0.0, 0.0),  # one answer: no other annotator is left when it is left out
     ("yes", ["yes "] * 10, 1.0, 0.0, 1.0)],  # 2017 strips the prediction, not the answers
)  # fmt: skip
def test_where_the_scorers_differ(prediction, answers, official, official_2017, openflamingo):
    assert vqa_score(prediction, answers) == official  # the default
    assert vqa_score(prediction, answers, "official-2017") == official_2017
    assert vqa_score(prediction, answers, "openflamingo") == openflamingo


@pytest.mark.parametrize(
    "matches,expected",
    # leave-one-out over 10 annotators: an annotator who gave the answer leaves matches-1 others, the rest
    # leave `matches`; each subset scores min(m/3, 1); e.g. 2 matches: (2 * 1/3 + 8 * 2/3) / 10 = 0.6
    [(0, 0.0), (1, (1 * 0 + 9 * 1 / 3) / 10), (2, 0.6), (3, (3 * 2 / 3 + 7 * 1) / 10), (4, 1.0), (10, 1.0)],
)
@pytest.mark.parametrize("scorer", SCORERS)
def test_leave_one_out_average(matches, expected, scorer):
    answers = ["red"] * matches + ["blue"] * (10 - matches)
    assert vqa_score("red", answers, scorer) == pytest.approx(expected)


def test_punctuation_rules():
    assert normalize_answer("hot-dog") == "hot dog"  # '-' without a neighbouring space becomes a space
    assert normalize_answer("yes, - no") == "yes no"  # ' -' present: '-' and ',' removed
    assert normalize_answer("1,000") == "1000"  # digit,digit: punctuation removed, not spaced
    assert normalize_answer("1,000 a/b") == "1000 ab"  # ... every mark, anywhere in the text
    assert normalize_answer("3.5") == "3.5" and normalize_answer("5.") == "5"  # period kept only before a digit
    assert normalize_answer("t.v.") == "tv"
    assert normalize_answer("." * 40 + "a") == "." * 8 + "a"  # re.UNICODE passed as the count: 32 periods go
    assert process_punctuation("a/b") == "a b"


def test_corpus_accuracy_and_answer_types():
    mean, per_q = vqa_accuracy({"1": "two", "2": "cat"}, {"1": ["2"] * 9 + ["3"], "2": ["dog"] * 10})
    assert per_q == {"1": 1.0, "2": 0.0} and mean == 0.5
    assert accuracy_by_type(per_q, {"1": "number", "2": "other"}) == {"number": 1.0, "other": 0.0}


def test_bad_inputs_name_what_was_expected():
    with pytest.raises(ValueError, match="no reference answers, e.g. id '3'"):
        vqa_accuracy({"3": "x"}, {"1": ["x"]})
    with pytest.raises(ValueError, match="at least one reference answer"):
        vqa_score("x", [])
    with pytest.raises(ValueError, match="unknown VQA scorer 'legacy'; expected one of official, official-2017"):
        vqa_accuracy({}, {}, scorer="legacy")
    with pytest.raises(ValueError, match="scored questions have no type, e.g. id '1'"):
        accuracy_by_type({"1": 1.0}, {})
