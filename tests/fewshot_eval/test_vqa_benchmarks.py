"""Each VQA benchmark is scored as its evaluation does, with the scorer chosen by ``--vqa-scorer``, and the scorer
is recorded in results.json."""

import dataclasses
import json
import sys

import pytest

from fewshot_eval.config import EvalConfig
from fewshot_eval.datasets import TASKS, VQA_TASKS
from fewshot_eval.evaluate import evaluate
from fewshot_eval.metrics import okvqa
from fewshot_eval.metrics.okvqa import OKVQAStemmer
from fewshot_eval.metrics.vqa_benchmarks import vqa_task_accuracy
from fewshot_eval.prompts import DEFAULT_TEMPLATES
from fewshot_eval.protocols import PROTOCOLS

R = "\u2019"


def test_vizwiz_official_is_the_vizwiz_code_the_others_the_vqa_code():
    preds, refs = {"1": "dont know"}, {"1": [f"don{R}t know"] * 10}
    assert vqa_task_accuracy("vizwiz", preds, refs)[0] == 1.0  # VizWiz's contraction table
    assert vqa_task_accuracy("vizwiz", preds, refs, "openflamingo")[0] == 0.0  # the VQA table: "don't know"
    assert vqa_task_accuracy("vqa", preds, refs)[0] == 0.0
    mixed = {"1": ["Dog"] * 5 + ["cat"] * 5}  # VizWiz never normalises the answers; the VQA code does here
    assert vqa_task_accuracy("vizwiz", {"1": "dog"}, mixed)[0] == 0.0
    assert vqa_task_accuracy("textvqa", {"1": "dog"}, mixed)[0] == 1.0


def test_okvqa_stems_before_any_scorer(monkeypatch):
    monkeypatch.setattr(okvqa, "_DEFAULT", [OKVQAStemmer(str.split, lambda t: [(w, "NNS") for w in t],
                                                          lambda w: w, lambda w: w.rstrip("s"))])  # fmt: skip
    for scorer in ("official", "official-2017", "openflamingo"):
        assert vqa_task_accuracy("okvqa", {"1": "dogs"}, {"1": ["dog"] * 10}, scorer)[0] == 1.0
    assert vqa_task_accuracy("vqa", {"1": "dogs"}, {"1": ["dog"] * 10})[0] == 0.0


def test_bad_task_or_scorer_is_named():
    with pytest.raises(ValueError, match="unknown VQA task 'caption'"):
        vqa_task_accuracy("caption", {}, {})
    with pytest.raises(ValueError, match="unknown VQA scorer 'legacy'"):
        vqa_task_accuracy("vqa", {}, {}, "legacy")


def test_task_names_have_a_prompt_and_the_config_passes_the_scorer():
    assert set(VQA_TASKS) <= set(TASKS) and all(t in DEFAULT_TEMPLATES for t in VQA_TASKS)
    cfg = EvalConfig(model="m", task="vizwiz", data="d", vqa_scorer="openflamingo")
    assert cfg.evaluate_kwargs()["vqa_scorer"] == "openflamingo"
    assert EvalConfig(model="m", task="vqa", data="d").evaluate_kwargs()["vqa_scorer"] is None  # the protocol's
    assert PROTOCOLS["flamingo"].vqa_scorer == "official" and PROTOCOLS["openflamingo"].vqa_scorer == "openflamingo"


@pytest.mark.parametrize("task,scorer", [("vqa", "official"), ("textvqa", "openflamingo"), ("vizwiz", "official")])
def test_results_record_the_scorer(vqa_dir, fake_model, tmp_path, monkeypatch, task, scorer):
    ev = sys.modules["fewshot_eval.scoring"]
    used = []
    monkeypatch.setattr(ev, "vqa_task_accuracy", lambda t, p, r, s: used.append((t, s)) or vqa_task_accuracy(t, p, r, s))
    results = evaluate(fake_model, task, vqa_dir, shots=[2], selection=["rices"], out_dir=tmp_path,
                       progress=False, vqa_scorer=scorer)  # fmt: skip
    assert [(r["task"], r["metric"], r["vqa_scorer"]) for r in results] == [(task, "VQA accuracy", scorer)]
    assert used and set(used) == {(task, scorer)}  # the scores were computed with it
    saved = json.loads((tmp_path / "results.json").read_text())["results"]
    assert [r["vqa_scorer"] for r in saved] == [scorer]
    with pytest.raises(ValueError, match="unknown VQA scorer 'legacy'; expected one of official"):
        evaluate(fake_model, task, vqa_dir, shots=[0], vqa_scorer="legacy")


def test_score_predictions_uses_the_scorer(vqa_dir):
    from fewshot_eval.datasets import load_vqa
    from fewshot_eval.scoring import score_predictions

    query = load_vqa(vqa_dir, "val")
    ex = query.examples[0]
    query.examples = [dataclasses.replace(ex, references=(ex.target,) * 10)]  # unanimous
    records = {ex.id: {"prediction": ex.target.upper() + "."}}
    by = {s: score_predictions("vqa", records, query, vqa_scorer=s)["VQA accuracy"] for s in ("official", "openflamingo")}
    assert by == {"official": 0.0, "openflamingo": 100.0}
