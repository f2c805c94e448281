"""Novel-label classification (Frozen's fast concept binding): the renaming is drawn per episode from the nonce
words, every demonstration's answer and every scored candidate is a nonce word, no true class name reaches the
prompt, the ranking comes back in true names, and bad word lists are one line before the model loads."""

from __future__ import annotations

import json
import re

import pytest

from fewshot_eval import cli
from fewshot_eval.evaluate import evaluate
from fewshot_eval.nonce import EVAL_NONCE_WORDS, nonce_names

CLASSES = ["red", "green", "blue", "yellow"]  # the classify_dir fixture's


def _records(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_the_built_in_words_are_usable_nonce_words():
    assert len(EVAL_NONCE_WORDS) >= 64 and len(set(EVAL_NONCE_WORDS)) == len(EVAL_NONCE_WORDS)
    assert all(re.fullmatch(r"[a-z]{3,7}", w) for w in EVAL_NONCE_WORDS)
    vocabulary = {"red", "green", "blue", "yellow", "orange", "purple", "pink", "brown", "white", "circle", "square",
                  "triangle", "diamond", "star", "cross", "small", "large", "shape", "colour"}  # fmt: skip
    assert not vocabulary & set(EVAL_NONCE_WORDS)


def test_the_renaming_is_fresh_per_episode_and_reproducible():
    one = nonce_names(CLASSES, EVAL_NONCE_WORDS, seed=0, trial=0, query_id="q1")
    assert one == nonce_names(CLASSES, EVAL_NONCE_WORDS, seed=0, trial=0, query_id="q1")
    assert one != nonce_names(CLASSES, EVAL_NONCE_WORDS, seed=0, trial=0, query_id="q2")  # another query
    assert one != nonce_names(CLASSES, EVAL_NONCE_WORDS, seed=0, trial=1, query_id="q1")  # another trial
    assert one != nonce_names(CLASSES, EVAL_NONCE_WORDS, seed=1, trial=0, query_id="q1")  # another seed
    assert list(one) == CLASSES and len(set(one.values())) == 4 and set(one.values()) <= set(EVAL_NONCE_WORDS)
    # over many episodes every word gets used: a subset drawn anew, not a fixed renaming
    used = {w for i in range(200) for w in nonce_names(CLASSES, EVAL_NONCE_WORDS, 0, 0, f"q{i}").values()}
    assert used == set(EVAL_NONCE_WORDS)


@pytest.mark.parametrize("shots", [0, 4])
def test_nonce_prompts_hold_nonce_words_only(shots, classify_dir, fake_model, tmp_path):
    results = evaluate(fake_model, "classify", classify_dir, shots=[shots], selection=["random"], trials=2,
                       labels="nonce", out_dir=tmp_path, progress=False)  # fmt: skip
    assert {r["labels"] for r in results} == {"nonce"} and len(results[0]["scores"]) == 2
    recs = [r for trial in (0, 1) for r in
            _records(tmp_path / "predictions" / f"classify-nonce_random_{shots}shot_ens1_trial{trial}.rank0.jsonl")]
    assert len(recs) == 16
    for rec in recs:
        names = rec["names"]
        assert list(names) == CLASSES and len(set(names.values())) == 4 and set(names.values()) <= set(EVAL_NONCE_WORDS)
        answers = re.findall(r"Output: (.*?)<EOC>", rec["prompt"])
        assert len(answers) == max(shots, 2) and set(answers) <= set(names.values())
        assert not any(re.search(rf"\b{c}\b", rec["prompt"], re.IGNORECASE) for c in CLASSES)
        assert set(rec["ranking"]) == set(CLASSES) and rec["prediction"] == rec["ranking"][0]
    assert len({tuple(r["names"].values()) for r in recs}) > 8  # 16 episodes, (nearly) all renamed differently
    # one scoring call per query, in the order of the records: its candidates are the episode's words, all 4
    assert len(fake_model.loglikelihood_calls) == 16
    for (prefix, conts), rec in zip(fake_model.loglikelihood_calls, recs):
        assert prefix == rec["prompt"]
        assert [c.strip().removesuffix("<EOC>") for c in conts] == list(rec["names"].values())


def test_rankings_come_back_in_true_names(classify_dir, fake_model, tmp_path):
    """RICES puts a same-colour image last and the fake repeats the last demonstration's answer: under nonce
    labels that is the query's word, which must map back to its true class for top-1 to be 100."""
    (res,) = evaluate(fake_model, "classify", classify_dir, shots=[2], selection=["rices"], labels="nonce",
                      out_dir=tmp_path, progress=False)  # fmt: skip
    assert res["mean"] == 100.0 and res["chance"] == 25.0


def test_nonce_and_true_names_share_an_output_folder(classify_dir, fake_model, tmp_path):
    for labels in ("true", "nonce"):
        evaluate(fake_model, "classify", classify_dir, shots=[2], selection=["random"], trials=1, labels=labels,
                 out_dir=tmp_path, progress=False)  # fmt: skip
    saved = json.loads((tmp_path / "results.json").read_text())["results"]
    assert sorted(r["labels"] for r in saved) == ["nonce", "true"]
    assert {p.name for p in (tmp_path / "predictions").iterdir()} == {
        "classify_random_2shot_ens1_trial0.rank0.jsonl", "classify-nonce_random_2shot_ens1_trial0.rank0.jsonl"}
    table = (tmp_path / "results.md").read_text()
    assert "| classify (nonce labels) |" in table and "| classify |" in table


def test_a_given_word_list_replaces_the_built_in_one(classify_dir, fake_model, tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("pim\ntarf\ngleb\nwozzle\nsnib\n")
    evaluate(fake_model, "classify", classify_dir, shots=[2], selection=["random"], trials=1, labels="nonce",
             nonce_words=words, out_dir=tmp_path / "out", progress=False)  # fmt: skip
    recs = _records(tmp_path / "out" / "predictions" / "classify-nonce_random_2shot_ens1_trial0.rank0.jsonl")
    assert {w for r in recs for w in r["names"].values()} <= {"pim", "tarf", "gleb", "wozzle", "snib"}


# ---------------------------------------------------------------- bad input: one line, before the model loads


@pytest.mark.parametrize(
    "words,extra,needle",
    [("dax\nwug\nfep\n", [], "--nonce-words {words}: 3 words for 4 classes; need at least 4"),
     ("dax\nwug\nfep\nDax\n", [], "'Dax' on line 4 repeats line 1"),
     ("dax\nwug\nfep\nRed\n", [], "nonce word 'Red' is a class name of"),
     ("dax\nwug\nfep\nzav toma\n", [], "line 4 ('zav toma') holds whitespace"),
     ("dax\n\nwug\nfep\nzav\n", [], "line 2 is empty"),
     ("dax\nwug\nfep\nzav<EOC>\n", [], "prompt marker <EOC>"),
     (None, ["--nonce-words", "{tmp}/missing.txt"], "missing.txt: no such file"),
     ("dax\nwug\nfep\nzav\n", ["--no-nonce"], "--nonce-words needs --nonce-labels"),
     (None, ["--task", "caption", "--data", "{coco}"], "--nonce-labels applies to --task classify only")],
)  # fmt: skip
def test_bad_nonce_input_is_one_line_before_the_model_loads(words, extra, needle, classify_dir, coco_dir, tmp_path,
                                                            loads, capsys):  # fmt: skip
    (tmp_path / "model").mkdir()
    argv = ["run", "--model", str(tmp_path / "model"), "--task", "classify", "--data", str(classify_dir),
            "--shots", "2", "--out", str(tmp_path / "out"), "--nonce-labels"]  # fmt: skip
    if words is not None:
        (tmp_path / "words.txt").write_text(words)
        argv += ["--nonce-words", str(tmp_path / "words.txt")]
    fmt = dict(tmp=tmp_path, coco=coco_dir, words=tmp_path / "words.txt")
    if "--no-nonce" in extra:
        argv.remove("--nonce-labels")
    argv += [a.format(**fmt) for a in extra if a != "--no-nonce"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err and needle.format(**fmt) in err, err
    assert loads == [] and not (tmp_path / "out").exists()
