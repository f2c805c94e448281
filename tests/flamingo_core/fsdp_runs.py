"""The ``flamingo train --fsdp`` runs the FSDP2 and sharded-checkpoint tests compare, launched once per session
(torchrun with gloo on CPU processes, the tiny preset) and shared by test_fsdp2.py and test_dcp_checkpoint.py.

- ``one``: 1 process, 6 steps, checkpoints at 3 and 6 (the uninterrupted reference);
- ``two``: 2 processes with half the per-process batch (the same global batch), killed by ``fsdp_kill_worker.py``
  while it writes the checkpoint of step 6: its step 3 checkpoint is the newest;
- ``two_to_one``: 1 process resuming ``two``'s step 3 to step 6;
- ``one_to_two``: 2 processes resuming ``one``'s step 3 to step 6.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from test_data_world import make_world

ARGS = ["--model", "tiny", "--vision-encoder", "", "--weights", "m3w=0.5,ltip=1,align=0.2,vtp=0.03",
        "--max-steps", "6", "--save-every", "3", "--keep-checkpoints", "0", "--no-eval", "--no-progress",
        "--lr", "1e-3", "--warmup-steps", "1", "--fsdp"]
BATCH = {1: ["--batch-size", "4", "--batch-sizes", "m3w=2,vtp=2"], 2: ["--batch-size", "2", "--batch-sizes", "m3w=1,vtp=1"]}
WORKER = Path(__file__).with_name("fsdp_kill_worker.py")
_RUNS: dict[str, tuple[Path, subprocess.CompletedProcess]] = {}


def step_dir(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step_{step:08d}"


def launch(procs: int, args: list[str], worker: bool = False, timeout: int = 240) -> subprocess.CompletedProcess:
    """``flamingo train`` under torchrun with ``procs`` CPU processes (the kill worker instead when ``worker``)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES="")
    target = [str(WORKER)] if worker else ["-m", "flamingo_core.train"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs), *target,
           *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def _ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def run(name: str, base: Path) -> tuple[Path, subprocess.CompletedProcess]:
    """The run ``name`` (module docstring): its folder and finished process, launched on first use."""
    if name in _RUNS:
        return _RUNS[name]
    data = ["--data", str(make_world(base))]
    out = base / f"fsdp-{name}"
    if name == "one":
        proc = _ok(launch(1, [*ARGS, *data, *BATCH[1], "--out", str(out)]))
    elif name == "two":
        proc = launch(2, [*ARGS, *data, *BATCH[2], "--out", str(out)], worker=True)
        assert proc.returncode != 0, "the worker was to be killed during its second save"
    else:
        source, procs = ("two", 1) if name == "two_to_one" else ("one", 2)
        resume = step_dir(run(source, base)[0], 3)
        proc = _ok(launch(procs, [*ARGS, *data, *BATCH[procs], "--out", str(out), "--resume", str(resume)]))
    _RUNS[name] = (out, proc)
    return _RUNS[name]
