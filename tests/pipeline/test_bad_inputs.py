"""`tools/run_pipeline.py` and `tools/shapesworld.py` with hostile inputs and kills (issue 15): one-line errors for
unusable output folders, nothing deleted that the tools did not write, no stage process outliving the pipeline,
and stage reruns that resume, or start again, as their folders require."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import run_pipeline
import shapesworld as sw

TOOLS = Path(run_pipeline.__file__).resolve().parent
WORLD = {k: 0 for k in sw.PRESETS["small"]} | {"ltip_train": 2, "colour_val": 1}


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


def unwritable(tmp_path: Path) -> Path:
    """A folder path no file can be created in (root ignores permission bits; /sys refuses even root)."""
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        return ro / "out"
    probe = Path("/sys/flamingo-suite-test")
    try:
        probe.mkdir()
    except OSError:
        return probe
    probe.rmdir()
    pytest.skip("no unwritable location on this machine")


# ------------------------------------------------------------------------------------- run_pipeline --out


def pipeline_argv(out: Path, tmp_path: Path) -> list[str]:
    return ["--budget", "tiny", "--out", str(out), "--data", str(tmp_path / "world")]


def test_pipeline_out_that_is_a_file_or_unwritable_is_one_line(tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    for out, expected in ((a_file, "is a file"), (a_file / "run", "a parent of it is a file"),
                          (unwritable(tmp_path), "cannot write there")):
        assert run_pipeline.main(pipeline_argv(out, tmp_path)) == 2
        err = one_line_error(capsys)
        assert err.startswith("error: ") and str(out) in err and expected in err
    assert a_file.read_text() == "mine" and not (tmp_path / "world").exists()


def test_pipeline_refuses_a_foreign_folder_and_keeps_its_files(tmp_path, capsys):
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("precious")
    (tmp_path / "world").write_text("a file: were the folder accepted, the data stage would fail at once")
    assert run_pipeline.main(pipeline_argv(home, tmp_path)) == 2
    assert "--overwrite" in one_line_error(capsys)
    assert os.listdir(home) == ["thesis.tex"]


def test_a_run_folder_written_before_the_budget_rename_is_still_recognised(tmp_path):
    """pipeline.json of older runs names the budget "preset": the same run continues, another one is refused."""
    out, data = tmp_path / "run", tmp_path / "world"
    out.mkdir()
    (out / "pipeline.json").write_text(json.dumps({"preset": "tiny", "seed": 0, "data": str(data)}))
    run_pipeline.Pipeline("tiny", out, data, 0).check_folder()
    with pytest.raises(run_pipeline.PipelineError, match=f"delete {out} or pass another --out"):
        run_pipeline.Pipeline("quick", out, data, 0).check_folder()
    assert json.loads((out / "pipeline.json").read_text())["preset"] == "tiny"  # read, not rewritten


def test_every_budgets_training_commands_parse(tmp_path, monkeypatch):
    from contrastive_encoder.cli import parse_args as stage1
    from flamingo_core.train import parse_args as stage2

    monkeypatch.setattr(run_pipeline, "_cli", lambda name: name)
    calls: list[list[str]] = []
    for name in run_pipeline.BUDGETS:
        p = run_pipeline.Pipeline(name, tmp_path / name, tmp_path / "world", 0)
        calls.clear()
        monkeypatch.setattr(p, "sh", lambda args, log_name: calls.append(args))
        p.stage_encoder()
        p.stage_flamingo()
        s1, s2 = stage1(calls[0][1:]), stage2(calls[1][2:])
        assert s1.model == p.budget.stage1_model and s2.model == p.budget.stage2_model


# --------------------------------------------------------------------------------- the stage process dies too


FAKE_STAGE = """#!{python}
import os, time
null = os.open(os.devnull, os.O_WRONLY)
os.dup2(null, 1), os.dup2(null, 2)  # the test reads the pipeline's stderr to its end: do not hold it open
open({pidfile!r}, "w").write(str(os.getpid()))
time.sleep(60)
"""

DRIVER = """
import sys
sys.path.insert(0, {tools!r})
import run_pipeline
run_pipeline._cli = lambda name: {fake!r}  # every stage command is the fake one
run_pipeline.Pipeline.stage_data = lambda self: None  # no world needed
sys.exit(run_pipeline.main(["--budget", "tiny", "--out", {out!r}, "--data", {data!r}]))
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie nobody reaped has exited


def _start_pipeline(tmp_path: Path) -> tuple[subprocess.Popen, int]:
    pidfile, fake = tmp_path / "stage.pid", tmp_path / "fake-stage"
    fake.write_text(FAKE_STAGE.format(python=sys.executable, pidfile=str(pidfile)))
    fake.chmod(0o755)
    code = DRIVER.format(tools=str(TOOLS), fake=str(fake), out=str(tmp_path / "run"), data=str(tmp_path / "world"))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (pidfile.is_file() and pidfile.read_text()):
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"the fake stage never started: {proc.communicate()[1]}")
        time.sleep(0.05)
    return proc, int(pidfile.read_text())


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.time() + seconds
    while _alive(pid) and time.time() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux-only")
def test_kill_9_of_the_pipeline_takes_its_stage_process_with_it(tmp_path):
    proc, child = _start_pipeline(tmp_path)
    try:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert _gone_within(child, 10), "the stage process outlived a kill -9 of the pipeline"
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)


def test_sigterm_is_passed_to_the_stage_and_the_pipeline_stops(tmp_path):
    proc, child = _start_pipeline(tmp_path)
    try:
        os.kill(proc.pid, signal.SIGTERM)
        rc = proc.wait(timeout=20)
        err = proc.stderr.read().strip()
        assert rc == 128 + signal.SIGTERM and _gone_within(child, 5)
        assert "\n" not in err and "interrupted by SIGTERM during stage 'stage1'" in err and "rerun" in err
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()


# ------------------------------------------------------------------------------ how stages are run again


def _touch_later(path: Path, than: Path | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{}\n")
    if than is not None:
        t = than.stat().st_mtime_ns + 10**9
        os.utime(path, ns=(t, t))


def test_training_stages_resume_restart_or_start_fresh(tmp_path):
    p = run_pipeline.Pipeline("tiny", tmp_path / "run", tmp_path / "world", 0)
    run = tmp_path / "run" / "stage2"
    run.mkdir(parents=True)
    assert p._rerun_flags(run, "vision") == []  # empty: a first run
    _touch_later(p.done_marker("vision"))
    _touch_later(run / "run.json", than=p.done_marker("vision"))
    assert p._rerun_flags(run, "vision") == ["--overwrite"]  # killed before its first checkpoint
    (run / "checkpoints" / ".step_00000002.tmp-1-x").mkdir(parents=True)  # a kill's leftover is no checkpoint
    assert p._rerun_flags(run, "vision") == ["--overwrite"]
    (run / "checkpoints" / "step_00000002").mkdir()
    assert p._rerun_flags(run, "vision") == ["--resume", "latest"]
    _touch_later(p.done_marker("vision"), than=run / "run.json")  # the encoder was exported again since
    assert p._rerun_flags(run, "vision") == ["--overwrite"]


def test_fewshot_reruns_resume_their_predictions_unless_the_model_was_trained_again(tmp_path, monkeypatch):
    monkeypatch.setattr(run_pipeline, "_cli", lambda name: name)
    p = run_pipeline.Pipeline("tiny", tmp_path / "run", tmp_path / "world", 0)
    calls: list[list[str]] = []

    def sh(args: list[str], log_name: str) -> None:  # as if fewshot-eval ran and claimed its folder
        calls.append(args)
        marker = Path(args[args.index("--out") + 1]) / "run.json"
        if "--overwrite" in args or not marker.exists():
            _touch_later(marker)

    monkeypatch.setattr(p, "sh", sh)
    tasks = run_pipeline.BUDGETS["tiny"].eval_tasks
    _touch_later(p.done_marker("stage2"))
    for task in tasks[1:]:
        _touch_later(tmp_path / "run" / "eval" / task / "run.json", than=p.done_marker("stage2"))
    _touch_later(tmp_path / "run" / "eval" / tasks[-1] / ".done", than=p.done_marker("stage2"))
    p.stage_eval()
    ran = {Path(args[args.index("--out") + 1]).name: args for args in calls}  # bind and classify share --task
    assert set(ran) == set(tasks[:-1])  # a finished task is skipped
    assert "--resume" in ran[tasks[0]] and "--overwrite" not in ran[tasks[0]]  # a first run
    assert "--resume" in ran[tasks[1]] and "--overwrite" not in ran[tasks[1]]  # interrupted: continue
    calls.clear()
    _touch_later(p.done_marker("stage2"), than=tmp_path / "run" / "eval" / tasks[-1] / ".done")  # retrained
    p.stage_eval()
    ran = {Path(args[args.index("--out") + 1]).name: args for args in calls}  # bind and classify share --task
    assert set(ran) == set(tasks)
    assert all("--overwrite" in a and "--resume" not in a for a in ran.values())


def test_a_stage_done_before_its_inputs_were_redone_runs_again(tmp_path, capsys):
    p = run_pipeline.Pipeline("tiny", tmp_path / "run", tmp_path / "world", 0)
    ran = []
    _touch_later(p.done_marker("stage1"))
    _touch_later(p.done_marker("vision"), than=p.done_marker("stage1"))
    p.run_stage(3, 6, "vision", "export", lambda: ran.append("vision"), upstream="stage1")
    assert ran == []  # up to date
    _touch_later(p.done_marker("stage1"), than=p.done_marker("vision"))
    p.run_stage(3, 6, "vision", "export", lambda: ran.append("vision"), upstream="stage1")
    assert ran == ["vision"]


# ---------------------------------------------------------------------------------------- shapesworld --out


def test_shapesworld_out_that_is_a_file_or_unwritable_is_one_line(tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    for out, expected in ((a_file, "is a file, expected a folder"), (unwritable(tmp_path), "cannot write")):
        assert sw.main(["--out", str(out), "--quiet"]) == 2
        err = one_line_error(capsys)
        assert str(out) in err and expected in err
    assert a_file.read_text() == "mine"


def test_shapesworld_overwrite_writes_beside_foreign_files(tmp_path, capsys):
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("precious")
    argv = ["--out", str(home), "--quiet", "--image-size", "32", "--video-format", "frames"]
    argv += [f"--count={k}={v}" for k, v in WORLD.items()]
    assert sw.main(argv) == 2
    assert "--overwrite" in one_line_error(capsys) and os.listdir(home) == ["thesis.tex"]
    assert sw.main([*argv, "--overwrite"]) == 0
    assert (home / "thesis.tex").read_text() == "precious" and (home / "world.json").is_file()
    assert len((home / "ltip" / "train.jsonl").read_text().splitlines()) == 2


def test_shapesworld_overwrite_replaces_only_its_own_files(tmp_path):
    world = sw.generate(tmp_path / "w", image_size=32, sizes=WORLD | {"colour_val": 2}, video_format="frames")
    (world / "eval" / "colour" / "val" / "red" / "my-note.txt").write_text("mine")
    with pytest.raises(sw.ShapesWorldError, match="--overwrite"):
        sw.generate(world, image_size=32, sizes=WORLD, video_format="frames")
    sw.generate(world, image_size=32, sizes=WORLD, video_format="frames", overwrite=True)
    red = sorted(p.suffix for p in (world / "eval" / "colour" / "val" / "red").iterdir())
    assert red == [".png", ".txt"]  # the previous world's second image is gone, the note kept
    assert json.loads((world / "world.json").read_text())["options"]["counts"]["colour_val"] == 1
    assert sw.generate(world, image_size=32, sizes=WORLD, video_format="frames") == world  # now the same world


def test_shapesworld_overwrite_refuses_a_world_without_a_file_list(tmp_path):
    world = sw.generate(tmp_path / "w", image_size=32, sizes=WORLD, video_format="frames")
    (world / sw.MANIFEST).unlink()  # as written by the generator before it kept one
    with pytest.raises(sw.ShapesWorldError, match="kept no list of its files"):
        sw.generate(world, seed=1, image_size=32, sizes=WORLD, video_format="frames", overwrite=True)
    assert (world / "world.json").is_file()
