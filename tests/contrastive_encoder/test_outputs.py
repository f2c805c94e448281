"""The output-folder policy every writer shares: atomic saves, refusing foreign folders, run folders, kills."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from contrastive_encoder.shared.outputs import (
    MANIFEST,
    RUN_MARKER,
    OutputError,
    atomic_save_dir,
    check_save_target,
    clean_stale,
    prepare_run_dir,
)

OWNED = ("checkpoints/step_*", "metrics.jsonl", "model")
LEGACY = ("checkpoints/step_*/state.json",)


def save(target: Path, text: str, **kw) -> None:
    with atomic_save_dir(target, **kw) as tmp:
        (tmp / "weights.txt").write_text(text)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "tok.txt").write_text(text)


def test_a_previous_save_is_replaced_whole_and_no_temporary_is_left(tmp_path):
    save(tmp_path / "m", "old")
    save(tmp_path / "m", "new")
    assert (tmp_path / "m" / "weights.txt").read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["m"]
    assert json.loads((tmp_path / "m" / MANIFEST).read_text())["files"] == ["sub/tok.txt", "weights.txt"]


def test_saved_files_get_the_usual_permissions(tmp_path):
    save(tmp_path / "m", "x")
    mask = os.umask(0)
    os.umask(mask)
    assert (os.stat(tmp_path / "m").st_mode & 0o777) == 0o777 & ~mask
    assert (os.stat(tmp_path / "m" / "weights.txt").st_mode & 0o777) == 0o666 & ~mask


def test_a_foreign_folder_is_refused_and_kept(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(OutputError, match="not empty and is not a model this suite saved.*--overwrite"):
        save(tmp_path / "mine", "x")
    assert os.listdir(tmp_path / "mine") == ["thesis.tex"]
    assert sorted(os.listdir(tmp_path)) == ["mine"]  # the temporary went too


def test_overwrite_into_a_foreign_folder_keeps_its_other_files(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    save(tmp_path / "mine", "one", overwrite=True)
    save(tmp_path / "mine", "two", overwrite=True)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"
    assert (tmp_path / "mine" / "weights.txt").read_text() == "two"


def test_a_user_file_added_to_a_save_makes_it_foreign(tmp_path):
    save(tmp_path / "m", "old")
    (tmp_path / "m" / "notes.md").write_text("mine")
    with pytest.raises(OutputError):
        save(tmp_path / "m", "new")
    save(tmp_path / "m", "new", overwrite=True)
    assert (tmp_path / "m" / "notes.md").read_text() == "mine"


def test_a_file_or_an_unwritable_target_is_one_clear_error(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="is a file, expected a folder"):
        check_save_target(tmp_path / "f", flag="--out")
    with pytest.raises(OutputError, match="a parent of it is a file"):
        check_save_target(tmp_path / "f" / "sub" / "m", flag="--out")
    if os.geteuid() != 0:  # root writes everywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(OutputError, match="cannot write there"):
            check_save_target(locked / "m", flag="--out")


def test_stale_temporaries_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    (tmp_path / f".m.tmp-{dead_pid}-abc").mkdir()
    (tmp_path / f".m.tmp-{os.getpid()}-abc").mkdir()  # a save in progress in this process
    (tmp_path / ".hidden-but-not-ours").mkdir()
    assert clean_stale(tmp_path) == 1
    assert sorted(os.listdir(tmp_path)) == [".hidden-but-not-ours", f".m.tmp-{os.getpid()}-abc"]


def test_a_folder_left_aside_by_a_kill_is_put_back(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    aside = tmp_path / f".m.old-{int(dead.stdout)}-abc"
    aside.mkdir()
    (aside / "weights.txt").write_text("old")
    clean_stale(tmp_path)
    assert (tmp_path / "m" / "weights.txt").read_text() == "old"


SLOW_SAVE = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from contrastive_encoder.shared.outputs import atomic_save_dir
    with atomic_save_dir(Path(sys.argv[1])) as tmp:
        (tmp / "weights.txt").write_text("new, half written")
        print("writing", flush=True)
        time.sleep(60)
""")


def test_kill_9_during_a_save_keeps_the_previous_one_and_the_next_start_cleans_up(tmp_path):
    save(tmp_path / "m", "old")
    proc = subprocess.Popen([sys.executable, "-c", SLOW_SAVE, str(tmp_path / "m")], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert (tmp_path / "m" / "weights.txt").read_text() == "old"
    assert any(".m.tmp-" in n for n in os.listdir(tmp_path))
    save(tmp_path / "m", "new")  # the next save removes the dead writer's temporary
    assert sorted(os.listdir(tmp_path)) == ["m"]


# ---------------------------------------------------------------- run folders


def test_a_new_or_empty_folder_becomes_a_run(tmp_path):
    prepare_run_dir(tmp_path / "run", "x train", OWNED)
    assert json.loads((tmp_path / "run" / RUN_MARKER).read_text())["command"] == "x train"


def test_a_run_that_wrote_nothing_can_start_again(tmp_path):
    prepare_run_dir(tmp_path / "run", "x train", OWNED)  # e.g. stopped by bad data before its first step
    prepare_run_dir(tmp_path / "run", "x train", OWNED)


def test_a_previous_run_needs_resume_or_overwrite_which_deletes_only_its_outputs(tmp_path):
    run = prepare_run_dir(tmp_path / "run", "x train", OWNED)
    (run / "checkpoints" / "step_00000002").mkdir(parents=True)
    (run / "checkpoints" / "mine.txt").write_text("mine")
    (run / "metrics.jsonl").write_text("{}\n")
    save(run / "model", "w")
    (run / "model" / "notes.md").write_text("mine")
    (run / "notes.md").write_text("mine")
    with pytest.raises(OutputError, match="previous `x train` run; give --resume latest .* or --overwrite"):
        prepare_run_dir(run, "x train", OWNED)
    prepare_run_dir(run, "x train", OWNED, resume=True)
    assert (run / "metrics.jsonl").exists()
    prepare_run_dir(run, "x train", OWNED, overwrite=True)
    left = sorted(p.relative_to(run).as_posix() for p in run.rglob("*"))
    assert left == ["checkpoints", "checkpoints/mine.txt", "model", "model/notes.md", "notes.md", RUN_MARKER]


def test_a_foreign_folder_needs_overwrite_and_keeps_its_files(tmp_path):
    home = tmp_path / "home"
    (home / "checkpoints").mkdir(parents=True)  # looks like a run, but holds no checkpoint of this command
    (home / "checkpoints" / "mine.txt").write_text("mine")
    (home / "metrics.jsonl").write_text("not ours")
    with pytest.raises(OutputError, match="not empty and is not a `x train` run"):
        prepare_run_dir(home, "x train", OWNED, legacy=LEGACY)
    prepare_run_dir(home, "x train", OWNED, overwrite=True, legacy=LEGACY)
    assert (home / "checkpoints" / "mine.txt").read_text() == "mine"
    assert (home / "metrics.jsonl").read_text() == "not ours"


def test_another_commands_run_is_refused_even_with_overwrite(tmp_path):
    prepare_run_dir(tmp_path / "run", "a train", OWNED)
    for overwrite in (False, True):
        with pytest.raises(OutputError, match="is a `a train` run, not a `b train` one"):
            prepare_run_dir(tmp_path / "run", "b train", OWNED, overwrite=overwrite)


def test_a_run_from_before_run_json_counts_as_a_previous_run(tmp_path):
    (tmp_path / "old" / "checkpoints" / "step_00000004").mkdir(parents=True)
    (tmp_path / "old" / "checkpoints" / "step_00000004" / "state.json").write_text("{}")
    with pytest.raises(OutputError, match="previous"):
        prepare_run_dir(tmp_path / "old", "x train", OWNED, legacy=LEGACY)
    prepare_run_dir(tmp_path / "old", "x train", OWNED, resume=True, legacy=LEGACY)


def test_stale_checkpoint_temporaries_are_cleaned_when_a_run_starts(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    run = prepare_run_dir(tmp_path / "run", "x train", OWNED)
    (run / "checkpoints" / f".step_00000004.tmp-{int(dead.stdout)}-q").mkdir(parents=True)
    prepare_run_dir(run, "x train", OWNED, resume=True)
    assert os.listdir(run / "checkpoints") == []
