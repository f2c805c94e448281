"""`flamingo train` with hostile inputs (issue 15): no hang, one-line errors, previous runs never clobbered."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from test_data_world import make_world

from contrastive_encoder.shared.checkpoint import latest_checkpoint
from contrastive_encoder.shared.runlog import read_metrics
from flamingo_core.mixture import DatasetMixture, EmptySourceError
from flamingo_core.train import main

FAST = ["--model", "tiny", "--vision-encoder", "", "--weights", "m3w=0,ltip=1,align=0,vtp=0", "--batch-size", "2",
        "--no-eval", "--no-progress", "--cpu", "--log-every", "1", "--warmup-steps", "1"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.getbasetemp())


@pytest.fixture
def no_hang():
    """Fail (instead of hanging the suite) when a run does not end within a minute."""
    def on_alarm(*_):
        raise TimeoutError("flamingo train did not end within 60 s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


def test_a_source_without_one_readable_sample_stops_with_a_clear_error(world, tmp_path, capsys, no_hang):
    rows = [json.loads(line) for line in (world / "m3w" / "train.jsonl").read_text().splitlines()][:3]
    for r in rows:
        r["images"] = [f"missing/{i}" if i else i for i in r["images"]]
    bad = tmp_path / "allbad.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rc = main(["--data", str(world), "--model", "tiny", "--vision-encoder", "", "--source",
               f"m3w=interleaved:{bad}", "--weights", "m3w=1,ltip=0,align=0,vtp=0", "--max-steps", "4", "--no-eval",
               "--no-progress", "--cpu", "--out", str(tmp_path / "run")])
    assert rc == 2
    err = one_line_error(capsys)
    assert "training source 'm3w' gave no readable sample" in err and "all 3 distinct samples" in err
    assert "--weights m3w=0" in err


def test_the_mixture_gives_up_on_a_source_after_a_bounded_number_of_draws():
    class Skipped:
        reason, where = "image file not found", "bad.jsonl:1"

    draws = []

    def endless_bad():
        while True:
            draws.append(1)
            yield {"skipped": [Skipped()], "meta": []}

    mixture = DatasetMixture({"m3w": endless_bad()}, {"m3w": 1.0}, max_bad_draws=5)
    with pytest.raises(EmptySourceError, match="no readable sample in 5 batches.*bad.jsonl:1"):
        mixture.next()
    assert len(draws) == 5


def test_training_again_into_a_previous_run_is_refused(world, tmp_path, capsys, no_hang):
    out = tmp_path / "run"
    args = ["--data", str(world), *FAST, "--max-steps", "2", "--save-every", "1", "--out", str(out)]
    assert main(args) == 0
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(args) == 2
    err = one_line_error(capsys)
    assert "previous `flamingo train` run" in err and "--resume latest" in err and "--overwrite" in err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before  # nothing touched
    # --overwrite: a new run from step 0 whose checkpoints are not pruned in favour of the old run's
    (out / "notes.md").write_text("mine")
    assert main([*args[:-4], "--max-steps", "1", "--save-every", "1", "--out", str(out), "--overwrite"]) == 0
    assert latest_checkpoint(out).name == "step_00000001"
    assert (out / "notes.md").read_text() == "mine"
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r] == [1]


def test_a_foreign_non_empty_out_is_refused_and_overwrite_keeps_its_files(world, tmp_path, capsys, no_hang):
    home = tmp_path / "home"
    (home / "checkpoints").mkdir(parents=True)  # looks like a run folder, holds none of this command's outputs
    (home / "model").mkdir()
    (home / "checkpoints" / "mine.txt").write_text("mine")
    (home / "model" / "my_weights.bin").write_text("mine")
    (home / "thesis.tex").write_text("precious")
    mine = sorted(p.relative_to(home).as_posix() for p in home.rglob("*"))
    assert main(["--data", str(world), *FAST, "--max-steps", "1", "--out", str(home)]) == 2
    assert "not empty" in one_line_error(capsys)
    assert sorted(p.relative_to(home).as_posix() for p in home.rglob("*")) == mine
    assert main(["--data", str(world), *FAST, "--max-steps", "1", "--out", str(home), "--overwrite"]) == 0
    assert set(mine) <= {p.relative_to(home).as_posix() for p in home.rglob("*")}
    assert (home / "model" / "my_weights.bin").read_text() == "mine"


def test_another_stages_run_is_refused_even_with_overwrite(world, tmp_path, capsys):
    from contrastive_encoder.shared.outputs import prepare_run_dir

    stage1 = prepare_run_dir(tmp_path / "stage1", "contrastive-encoder train", ["checkpoints/step_*"])
    (stage1 / "checkpoints" / "step_00000003").mkdir(parents=True)
    for extra in ([], ["--overwrite"]):
        assert main(["--data", str(world), *FAST, "--max-steps", "1", "--out", str(stage1), *extra]) == 2
        assert "is a `contrastive-encoder train` run" in one_line_error(capsys)
    assert os.listdir(stage1 / "checkpoints") == ["step_00000003"]


@pytest.mark.parametrize("damaged", ["model/model.safetensors", "optimizer.safetensors", "optimizer.json",
                                     "rng.safetensors", "state.json"])
def test_resuming_from_a_damaged_checkpoint_names_the_file(world, tmp_path, capsys, damaged, no_hang):
    out = tmp_path / "run"
    args = ["--data", str(world), *FAST, "--save-every", "1", "--out", str(out)]
    assert main([*args, "--max-steps", "1"]) == 0
    path = latest_checkpoint(out) / damaged
    path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 2)])
    capsys.readouterr()
    assert main([*args, "--max-steps", "2", "--resume", "latest"]) == 2
    assert str(path) in one_line_error(capsys)


def test_held_out_data_without_a_readable_sample_is_an_error_not_a_zero_loss(world, tmp_path, capsys, no_hang):
    rows = [json.loads(line) for line in (world / "ltip" / "val.jsonl").read_text().splitlines()][:3]
    bad = tmp_path / "val.jsonl"
    bad.write_text("".join(json.dumps(dict(r, image=f"missing/{i}.png")) + "\n" for i, r in enumerate(rows)))
    args = [a for a in FAST if a != "--no-eval"]
    assert main(["--data", str(world), *args, "--max-steps", "1", "--eval-data", str(bad),
                 "--eval-samples", "3", "--out", str(tmp_path / "run")]) == 2
    err = one_line_error(capsys)
    assert "held-out data" in err and "missing/0.png" in err


def test_infinite_dataset_weights_are_refused(world, tmp_path, capsys):
    assert main(["--data", str(world), *FAST[:4], "--weights", "ltip=inf", "--out", str(tmp_path / "r")]) == 2
    assert "finite numbers >= 0" in one_line_error(capsys)


def test_out_that_is_a_file_fails_before_training(world, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["--data", str(world), *FAST, "--max-steps", "1", "--out", str(tmp_path / "file")]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "is a file, expected a folder" in err and "\n" not in err
    assert "parameters:" not in captured.out  # refused before any model was built


@pytest.mark.parametrize("flag, value, expected", [
    ("--p-next", "5", "--p-next: expected a number in [0, 1], got 5"),
    ("--video-frames", "-1", "--video-frames: expected an integer >= 0, got -1"),
    ("--batch-size", "0", "--batch-size: expected an integer >= 1, got 0"),
    ("--max-steps", "-3", "--max-steps: expected an integer >= 0"),
    ("--lr", "0", "--lr: expected a number > 0"),
])
def test_out_of_range_flags_are_refused_by_the_parser(capsys, flag, value, expected):
    assert main([flag, value]) == 2
    assert expected in one_line_error(capsys)


def test_metrics_do_not_repeat_steps_after_a_resume(world, tmp_path, no_hang):
    out = tmp_path / "run"
    args = ["--data", str(world), *FAST, "--save-every", "2", "--out", str(out)]
    assert main([*args, "--max-steps", "2"]) == 0
    with open(out / "metrics.jsonl", "a") as fh:  # logged by a run killed before its step-4 checkpoint
        fh.write(json.dumps({"step": 3, "loss": -1.0}) + "\n")
    assert main([*args, "--max-steps", "3", "--resume", "latest"]) == 0
    records = [r for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    assert [r["step"] for r in records] == [1, 2, 3] and records[-1]["loss"] != -1.0


def test_resume_latest_without_a_checkpoint_is_one_line(tmp_path, world, capsys):
    assert main(["--data", str(world), *FAST, "--out", str(tmp_path / "new"), "--resume", "latest"]) == 2
    assert "no checkpoint under" in one_line_error(capsys)
    assert not Path(tmp_path / "new").exists()  # refused before anything was written
