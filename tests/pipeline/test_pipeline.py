"""The whole chain on the tiny presets and a tiny generated world: every stage's outputs exist and load, the
report holds every section and repeats the numbers the stages logged, finished stages are skipped, an
interrupted stage completes on rerun, and bad folders give clear errors."""

from __future__ import annotations

import json
import math
import re
import shutil
from collections import namedtuple

import pytest

import pipeline_report
import run_pipeline
from fewshot_eval.metrics.coco_caption import CORPUS_METRICS


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    run, world = root / "run", root / "world"
    assert run_pipeline.main(["--budget", "tiny", "--out", str(run), "--data", str(world)]) == 0
    return run, world


def test_stage_outputs_exist_and_load(tiny_run):
    from contrastive_encoder.vision import load_vision_encoder
    from flamingo_core import Flamingo

    run, world = tiny_run
    assert (world / "world.json").is_file()
    for stage in ("data", "stage1", "vision", "stage2", "eval", "report"):
        assert (run / stage / ".done").is_file(), stage
    encoder = load_vision_encoder(run / "vision")
    model = Flamingo.from_pretrained(run / "stage2" / "model")
    assert model.vision_encoder.identifier == encoder.identifier
    for task in run_pipeline.BUDGETS["tiny"].eval_tasks:
        results = json.loads((run / "eval" / task / "results.json").read_text())["results"]
        assert {r["selection"] for r in results} == set(run_pipeline.BUDGETS["tiny"].selections[task])
        assert {r["shots"] for r in results} == set(run_pipeline.BUDGETS["tiny"].eval_shots)
        assert all((r["ci95"] is None) == (r["metric"] in CORPUS_METRICS) for r in results)  # BLEU-4: none
        if task == "bind":  # novel labels on the colour set: chance is one in eight by construction
            assert {r["labels"] for r in results} == {"nonce"}
            assert {r["chance"] for r in results if r["metric"] == "top-1 accuracy"} == {12.5}


def test_report_has_every_section_and_figure(tiny_run):
    run, _ = tiny_run
    report = (run / "report.md").read_text()
    for section in pipeline_report.SECTIONS:
        assert section in report
    for fig in re.findall(r"\]\((figures/[^)]+)\)", report):
        assert (run / fig).stat().st_size > 0, fig
    assert len(re.findall(r"\]\((figures/[^)]+)\)", report)) == 6
    # the prompt panel is one saved novel-label prompt: its nonce names and the model's answer, as recorded
    panel = report.split(pipeline_report.SECTIONS[3])[1].split("\n## ")[0]
    stem = re.search(r"From `([^`]+)`, query `([^`]+)`", panel)
    rec = next(r for r in map(json.loads, (run / "eval" / "bind" / "predictions" / stem.group(1)).open())
               if str(r["id"]) == stem.group(2))
    assert f"**{rec['names'][rec['prediction']]}** ({rec['prediction']})" in panel and "with 2 demonstrations" in panel


def test_report_numbers_are_the_logged_ones(tiny_run):
    from safetensors.torch import load_file

    from contrastive_encoder.shared.runlog import read_metrics

    run, _ = tiny_run
    report = (run / "report.md").read_text()
    # stage 1: the last zero-shot accuracy logged for each set
    last = {}
    for m in read_metrics(run / "stage1" / "metrics.jsonl"):
        for k, v in m.items():
            if k.startswith("zero_shot/") and k.endswith("/top1"):
                last[k.split("/")[1]] = v
    assert last
    for name, acc in last.items():
        assert f"| {name} | {acc:.1%} |" in report
    # stage 2: the held-out loss before and after training
    held = [m["eval_loss"] for m in read_metrics(run / "stage2" / "metrics.jsonl") if "eval_loss" in m]
    assert f"Held-out caption loss {held[0]:.3f}" in report and f"-> {held[-1]:.3f}" in report
    # stage 3: a few-shot cell
    r = json.loads((run / "eval" / "vqa" / "results.json").read_text())["results"][0]
    row = [ln for ln in report.splitlines() if ln.startswith(f"| vqa | {r['dataset']} | {r['metric']} | {r['selection']} |")]
    assert row and f"{r['mean']:.2f}" in row[0]
    # gates: tanh of the saved parameters
    weights = load_file(str(run / "stage2" / "model" / "model.safetensors"))
    gate = next(k for k in weights if k.endswith("alpha_xattn"))
    assert f"{math.tanh(weights[gate].item()):+.4f}" in report


def test_rerun_skips_finished_stages(tiny_run, capsys):
    run, world = tiny_run
    before = (run / "report.md").read_text()
    assert run_pipeline.main(["--budget", "tiny", "--out", str(run), "--data", str(world)]) == 0
    out = capsys.readouterr().out
    assert out.count("done earlier, skipped") == 6
    assert (run / "report.md").read_text() == before


def test_interrupted_stage_completes_on_rerun(tiny_run, capsys):
    run, world = tiny_run
    # as if killed during the VQA evaluation: no markers past it, a half-written prediction line, no report
    for marker in ("eval/.done", "eval/vqa/.done", "report/.done"):
        (run / marker).unlink()
    (run / "report.md").unlink()
    pred = sorted((run / "eval" / "vqa" / "predictions").glob("*.jsonl"))[-1]
    pred.write_text(pred.read_text()[:-20])
    assert run_pipeline.main(["--budget", "tiny", "--out", str(run), "--data", str(world)]) == 0
    out = capsys.readouterr().out
    assert "few-shot vqa" in out and "few-shot caption" not in out  # finished tasks were not redone
    assert all(s in (run / "report.md").read_text() for s in pipeline_report.SECTIONS)


def test_folder_from_another_budget_is_refused(tiny_run, capsys):
    run, world = tiny_run
    assert run_pipeline.main(["--budget", "quick", "--out", str(run), "--data", str(world)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "delete" in err and str(run) in err


def test_missing_stage_output_is_named(tiny_run, tmp_path, capsys):
    run, world = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    shutil.rmtree(copy / "stage2" / "model")
    (copy / "report" / ".done").unlink()
    (copy / "pipeline.json").write_text(json.dumps({"budget": "tiny", "seed": 0, "data": str(world)}))
    assert run_pipeline.main(["--budget", "tiny", "--out", str(copy), "--data", str(world)]) == 2
    err = capsys.readouterr().err
    assert "model.safetensors is missing" in err and "rerun" in err
    assert f"delete {copy / 'stage2'}" in err
    assert not (copy / "report.md").exists()


def test_too_little_disk_is_refused(tmp_path, monkeypatch, capsys):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(run_pipeline.shutil, "disk_usage", lambda _: usage(10, 10, 1024))
    assert run_pipeline.main(["--budget", "tiny", "--out", str(tmp_path / "r"), "--data", str(tmp_path / "w")]) == 2
    assert "free some space" in capsys.readouterr().err
