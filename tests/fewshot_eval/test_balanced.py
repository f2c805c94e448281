"""Class-balanced demonstrations: k shots over C classes cover min(k, C) classes with per-class counts within
one of each other, distinct examples, never the query, shuffled, seeded per (seed, trial, query); too few support
examples of a class is one line before the model loads."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import pytest
from fewshot_helpers import write_image

from fewshot_eval import cli
from fewshot_eval.evaluate import evaluate
from fewshot_eval.selection import BalancedSelector

CLASSES = ["a", "b", "c", "d", "e"]
IDS = [f"{c}{i}" for c in CLASSES for i in range(6)]  # 6 support examples per class
LABELS = [i[0] for i in IDS]


@pytest.mark.parametrize("k", [1, 3, 5, 7, 12, 16])
def test_balanced_counts(k):
    sel = BalancedSelector(IDS, LABELS, seed=0, trial=0)
    queries = [f"q{i}" for i in range(40)] + ["a0", "c3"]  # the last two are support examples themselves
    picks = sel.select(queries, k)
    for q, idx in zip(queries, picks):
        assert len(idx) == k and len(set(idx)) == k  # distinct examples
        assert q not in [IDS[i] for i in idx]  # never the query itself
        counts = Counter(LABELS[i] for i in idx)
        assert len(counts) == min(k, len(CLASSES))  # min(k, C) classes
        per_class = [counts.get(c, 0) for c in CLASSES]
        assert max(per_class) - min(per_class) <= 1  # within one of each other
    assert picks == BalancedSelector(IDS, LABELS, seed=0, trial=0).select(queries, k)  # seeded
    assert picks[:1] == sel.select(queries[:1], k)  # independent of batching


def test_which_classes_get_the_remainder_is_drawn_per_query_and_trial():
    sel = BalancedSelector(IDS, LABELS, seed=0, trial=0)
    subsets = [frozenset(LABELS[i] for i in idx) for idx in sel.select([f"q{i}" for i in range(200)], 2)]
    # every class appears in some 2-shot prompt, in about 2/5 of them: not chosen by anything about the query
    shown = Counter(c for s in subsets for c in s)
    assert set(shown) == set(CLASSES) and all(50 <= n <= 110 for n in shown.values())
    assert sel.select(["q0"], 7) != BalancedSelector(IDS, LABELS, seed=0, trial=1).select(["q0"], 7)
    # the order is shuffled, not grouped by class
    orders = [[LABELS[i] for i in idx] for idx in sel.select([f"q{i}" for i in range(20)], 10)]
    assert any(o != sorted(o) for o in orders)


def test_a_class_without_enough_examples_is_refused():
    with pytest.raises(ValueError, match="cannot draw 2 demonstrations of class 'a' from 1"):
        BalancedSelector(["a0", "a1", "b0", "b1"], ["a", "a", "b", "b"]).select(["a0"], 4)


def test_balanced_selection_end_to_end(classify_dir, fake_model, tmp_path):
    results = evaluate(fake_model, "classify", classify_dir, shots=[4, 6], selection=["balanced"], trials=2,
                       out_dir=tmp_path, progress=False)  # fmt: skip
    assert {(r["shots"], r["trials"]) for r in results} == {(4, 2), (6, 2)}
    classes = {p.parent.name for p in (classify_dir / "train").glob("*/*.png")}
    for trial in (0, 1):
        for k in (4, 6):
            f = tmp_path / "predictions" / f"classify_balanced_{k}shot_ens1_trial{trial}.rank0.jsonl"
            recs = [json.loads(x) for x in f.read_text().splitlines()]
            for rec in recs:
                counts = Counter(d.split("/")[1] for d in rec["demos"])  # ids are <split>/<class>/<file>
                assert sum(counts.values()) == k and set(counts) == classes
                assert max(counts.values()) - min(counts.values()) <= 1


def test_too_few_examples_of_a_class_is_one_line_before_the_model_loads(classify_dir, tmp_path, loads, capsys):
    data = tmp_path / "data"
    shutil.copytree(classify_dir, data)
    for j in range(6):  # 9 red, 3 of each other colour: 18 demonstrations, but 16 balanced shots need 4 of each
        write_image(data / "train" / "red" / f"extra{j}.png", "red", jitter=j)
    (tmp_path / "model").mkdir()
    argv = ["run", "--model", str(tmp_path / "model"), "--task", "classify", "--data", str(data), "--shots", "2",
            "16", "--selection", "random", "balanced", "--out", str(tmp_path / "out")]  # fmt: skip
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert ("--shots 16 with --selection balanced needs 4 demonstrations of each of 4 classes; class 'green' has 3 "
            f"in {data / 'train'} (split 'train')") in err, err
    assert loads == [] and not (tmp_path / "out").exists()


def test_balanced_applies_to_classification_only(coco_dir, tmp_path, loads, capsys):
    (tmp_path / "model").mkdir()
    argv = ["run", "--model", str(tmp_path / "model"), "--task", "caption", "--data", str(coco_dir), "--shots", "2",
            "--selection", "balanced", "--out", str(tmp_path / "out")]  # fmt: skip
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--selection balanced applies to --task classify only" in err
    assert loads == [] and not (tmp_path / "out").exists()
