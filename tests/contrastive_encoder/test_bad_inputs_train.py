"""`contrastive-encoder train` and `export` with hostile inputs (issue 15): one-line errors, nothing lost."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch
from safetensors.torch import load_file

from contrastive_encoder.cli import main
from contrastive_encoder.model import DualEncoder
from contrastive_encoder.shared.checkpoint import latest_checkpoint
from contrastive_encoder.shared.runlog import read_metrics

BASE = ["--model", "tiny", "--num-workers", "0", "--no-progress", "--warmup-steps", "1", "--batch-size", "6", "--log-every", "1",
        "--max-minutes", "0"]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.fixture
def run(tmp_path, pairs_file):
    out = tmp_path / "run"
    assert main(["train", *BASE, "--data", str(pairs_file), "--max-steps", "2", "--out", str(out)]) == 0
    return out


def test_export_refuses_a_folder_it_did_not_write_and_deletes_nothing(tmp_path, run, capsys, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("precious")
    capsys.readouterr()
    assert main(["export", "--checkpoint", str(run), "--out", str(home)]) == 2
    assert f"--out {home}: folder is not empty" in one_line_error(capsys)
    assert os.listdir(home) == ["thesis.tex"]
    monkeypatch.chdir(home)
    assert main(["export", "--checkpoint", str(run), "--out", "."]) == 2
    assert "--overwrite" in one_line_error(capsys)
    assert os.listdir(home) == ["thesis.tex"]


def test_export_replaces_its_own_export_and_overwrite_keeps_foreign_files(tmp_path, run, capsys):
    out = tmp_path / "export"
    assert main(["export", "--checkpoint", str(run), "--out", str(out)]) == 0
    assert main(["export", "--checkpoint", str(run), "--out", str(out)]) == 0  # a previous export: replaced
    DualEncoder.from_pretrained(out)
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "thesis.tex").write_text("precious")
    assert main(["export", "--checkpoint", str(run), "--out", str(tmp_path / "home"), "--overwrite"]) == 0
    assert (tmp_path / "home" / "thesis.tex").read_text() == "precious"
    DualEncoder.from_pretrained(tmp_path / "home")
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(out).st_mode & 0o777 == 0o777 & ~mask  # not mkdtemp's 0700


def test_training_again_into_a_previous_run_is_refused_until_resume_or_overwrite(run, pairs_file, capsys):
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    capsys.readouterr()
    args = ["train", *BASE, "--data", str(pairs_file), "--max-steps", "2", "--out", str(run)]
    assert main(args) == 2
    err = one_line_error(capsys)
    assert "previous `contrastive-encoder train` run" in err and "--resume latest" in err and "--overwrite" in err
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == before
    (run / "notes.md").write_text("mine")
    assert main([*args, "--overwrite"]) == 0
    assert (run / "notes.md").read_text() == "mine"
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl") if "loss" in r] == [1, 2]  # not mixed
    assert main(["train", *BASE, "--data", str(pairs_file), "--max-steps", "3", "--out", str(run), "--resume", "latest"]) == 0
    assert latest_checkpoint(run).name == "step_00000003"


def test_a_bad_export_folder_is_refused_before_training(tmp_path, pairs_file, capsys):
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "thesis.tex").write_text("precious")
    out = tmp_path / "run"
    assert main(["train", *BASE, "--data", str(pairs_file), "--max-steps", "2", "--out", str(out),
                 "--export", str(tmp_path / "home")]) == 2
    assert "--export" in one_line_error(capsys)
    assert latest_checkpoint(out) is None


def test_a_zero_shot_set_that_cannot_be_evaluated_is_refused_before_training(tmp_path, pairs_file, capsys):
    (tmp_path / "flat").mkdir()  # images but no class folders
    (tmp_path / "flat" / "a.png").write_bytes((pairs_file.parent / "images" / "train_0000.png").read_bytes())
    out = tmp_path / "run"
    assert main(["train", *BASE, "--data", str(pairs_file), "--max-steps", "2", "--out", str(out),
                 "--zero-shot", str(tmp_path / "flat")]) == 2
    assert str(tmp_path / "flat") in one_line_error(capsys)
    assert latest_checkpoint(out) is None


def test_resuming_a_finished_run_trains_nothing_and_keeps_its_summary(run, pairs_file, capsys):
    summary = (run / "summary.json").read_text()
    assert main(["train", *BASE, "--data", str(pairs_file), "--max-steps", "2", "--out", str(run), "--resume",
                 "latest"]) == 0
    assert "nothing to train" in capsys.readouterr().out
    assert (run / "summary.json").read_text() == summary


@pytest.mark.parametrize("weight", ["nan", "inf", "-1"])
def test_bad_dataset_weights_are_refused_by_the_parser(tmp_path, pairs_file, capsys, weight):
    assert main(["train", *BASE, "--data", str(pairs_file), "--data-weights", weight, "--out",
                 str(tmp_path / "r")]) == 2
    assert "--data-weights" in one_line_error(capsys)


def test_a_damaged_saved_tokenizer_is_named(tmp_path, run, capsys):
    out = tmp_path / "export"
    assert main(["export", "--checkpoint", str(run), "--out", str(out)]) == 0
    tok = next((out / "tokenizer").glob("*.json"))
    tok.write_text("{bad")
    capsys.readouterr()
    assert main(["eval", "--model", str(out), "--retrieval", str(tmp_path / "none.jsonl")]) == 2
    err = one_line_error(capsys)
    assert "tokenizer" in err and "config.json" not in err


def test_out_that_is_a_file_is_one_line(tmp_path, pairs_file, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["train", *BASE, "--data", str(pairs_file), "--max-steps", "2", "--out", str(tmp_path / "file")]) == 2
    assert "is a file, expected a folder" in one_line_error(capsys)
    assert main(["export", "--checkpoint", str(tmp_path / "nope"), "--out", str(tmp_path / "file")]) == 2
    assert "is a file" in one_line_error(capsys)


def test_a_diverging_run_stops_with_exit_3_and_keeps_only_finite_checkpoints(tmp_path, pairs_file, capsys):
    out = tmp_path / "nan"
    rc = main(["train", *BASE, "--data", str(pairs_file), "--max-steps", "4", "--lr", "1e30", "--grad-clip", "0",
               "--warmup-steps", "0", "--save-every", "1", "--keep-checkpoints", "1", "--out", str(out)])
    assert rc == 3
    err = one_line_error(capsys)
    assert "non-finite" in err and ("last good checkpoint" in err or "no checkpoint" in err)
    ckpt = latest_checkpoint(out)
    if ckpt is not None:
        assert str(ckpt) in err
        for k, v in load_file(str(ckpt / "model" / "model.safetensors")).items():
            assert torch.isfinite(v).all(), f"{k} is not finite in {ckpt}"
    stopped = [r for r in read_metrics(out / "metrics.jsonl") if r.get("stopped") == "non-finite"]
    assert len(stopped) == 1


@pytest.mark.parametrize("flag, value, expected", [
    ("--batch-size", "0", "--batch-size: expected an integer >= 1, got 0"),
    ("--max-steps", "0", "--max-steps: expected an integer >= 1"),
    ("--lr", "-1", "--lr: expected a number > 0"),
    ("--keep-checkpoints", "-2", "--keep-checkpoints: expected an integer >= 0"),
])
def test_out_of_range_flags_are_refused_by_the_parser(pairs_file, capsys, flag, value, expected):
    assert main(["train", *BASE, "--data", str(pairs_file), flag, value]) == 2
    assert expected in one_line_error(capsys)


def test_metrics_do_not_repeat_steps_after_a_resume(tmp_path, pairs_file):
    out = tmp_path / "run"
    args = ["train", *BASE, "--data", str(pairs_file), "--max-steps", "4", "--save-every", "2",
            "--out", str(out)]
    assert main([*args, "--stop-after", "2"]) == 0
    # the interrupted run logged step 3 and was killed before its next checkpoint
    with open(out / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps({"step": 3, "loss": 1.0}) + "\n" + '{"step": 4, "lo')
    assert main([*args, "--resume", "latest"]) == 0
    steps = [r["step"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    assert steps == [1, 2, 3, 4]
    assert all(math.isfinite(r["loss"]) and r["loss"] != 1.0 for r in read_metrics(out / "metrics.jsonl")
               if r["step"] == 3 and "loss" in r)
