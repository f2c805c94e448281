"""kill -9 at random moments while both stages train and while a model is exported (issue 15): the previous
checkpoint and the previous export still load, no temporary folder is taken for a checkpoint, and the stale
ones are cleaned when the next run starts."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from contrastive_encoder.shared.checkpoint import latest_checkpoint

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "contrastive_encoder"))
sys.path.insert(0, str(ROOT / "tests" / "flamingo_core"))

from ce_helpers import write_pairs  # noqa: E402

KILLS = 2


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def kill_after_first_checkpoint(proc: subprocess.Popen, out: Path, rng: random.Random, known: set[str]) -> None:
    """Wait for a checkpoint newer than ``known``, then kill -9 the run a random moment later."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        ckpt = latest_checkpoint(out)
        if ckpt is not None and ckpt.name not in known:
            break
        time.sleep(0.02)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()[-2000:]}"
    time.sleep(rng.uniform(0.0, 0.6))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*") if ".tmp-" in p.name or ".old-" in p.name)


def test_stage1_killed_during_training_and_export_keeps_loadable_checkpoints_and_exports(tmp_path):
    from contrastive_encoder.model import DualEncoder
    from contrastive_encoder.train import load_checkpoint

    pairs = write_pairs(tmp_path / "pairs")
    out, rng = tmp_path / "run", random.Random(15)
    args = ["contrastive_encoder.cli", "train", "--model", "tiny", "--data", str(pairs), "--batch-size", "6",
            "--max-steps", "100000", "--save-every", "1", "--keep-checkpoints", "2", "--num-workers", "0", "--no-progress",
            "--max-minutes", "0", "--out", str(out)]
    seen: set[str] = set()
    for k in range(KILLS):
        kill_after_first_checkpoint(start(args + (["--resume", "latest"] if k else [])), out, rng, seen)
        ckpt = latest_checkpoint(out)
        assert ckpt is not None and not ckpt.name.startswith(".")
        load_checkpoint(ckpt, DualEncoder.from_pretrained(ckpt / "model"))
        seen.add(ckpt.name)
    # the next start removes the killed runs' temporaries (its own save may be running: look before it saves)
    done = subprocess.run([sys.executable, "-m", *args[:args.index("--max-steps")], "--max-steps",
                           str(int(latest_checkpoint(out).name.split("_")[1]) + 1), *args[args.index("--max-steps") + 2:],
                           "--resume", "latest"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert temporaries(out) == []

    export = tmp_path / "export"
    assert subprocess.run([sys.executable, "-m", "contrastive_encoder.cli", "export", "--checkpoint", str(out),
                           "--out", str(export)], capture_output=True, timeout=300).returncode == 0
    for _ in range(KILLS):  # exports of the same run, killed at random moments after the model has loaded
        proc = start(["contrastive_encoder.cli", "export", "--checkpoint", str(out), "--out", str(export)])
        time.sleep(rng.uniform(1.5, 4.0))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        DualEncoder.from_pretrained(export)  # the previous export (or the new one, whole) loads


def test_stage2_killed_during_training_keeps_a_loadable_checkpoint(tmp_path):
    from test_data_world import make_world

    import flamingo_core as fc
    from flamingo_core.train import load_checkpoint

    world = make_world(tmp_path)
    out, rng = tmp_path / "run", random.Random(15)
    args = ["flamingo_core.train", "--data", str(world), "--model", "tiny", "--vision-encoder", "", "--weights",
            "m3w=1,ltip=0.2,align=0,vtp=0", "--batch-size", "4", "--max-steps", "100000", "--max-minutes", "0",
            "--save-every", "1", "--keep-checkpoints", "2", "--no-eval", "--no-progress", "--cpu", "--out", str(out)]
    seen: set[str] = set()
    for k in range(KILLS):
        kill_after_first_checkpoint(start(args + (["--resume", "latest"] if k else [])), out, rng, seen)
        ckpt = latest_checkpoint(out)
        assert ckpt is not None and not ckpt.name.startswith(".")
        state = load_checkpoint(ckpt, fc.create_model("tiny"))
        assert int(state["step"]) == int(ckpt.name.split("_")[1])
        seen.add(ckpt.name)
    step = int(latest_checkpoint(out).name.split("_")[1])
    i = args.index("--max-steps")
    done = subprocess.run([sys.executable, "-m", *args[:i], "--max-steps", str(step + 1), *args[i + 2:],
                           "--resume", "latest"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert temporaries(out) == []
