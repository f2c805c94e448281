"""A 2-process run (torchrun, gloo on CPU) gives the same predictions and results as a 1-process run: queries
are split across processes and gathered on the main one, which alone scores and writes results."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from fewshot_helpers import FakeModel

from fewshot_eval.evaluate import evaluate


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _predictions(out: Path) -> dict:
    preds = {}
    for f in sorted((out / "predictions").glob("*.jsonl")):
        stem = f.name.split(".rank")[0]
        for line in f.read_text().splitlines():
            rec = json.loads(line)
            preds[(stem, rec["id"])] = rec
    return preds


@pytest.mark.slow
@pytest.mark.distributed
def test_two_processes_equal_one(coco_dir, tmp_path):
    single = evaluate(FakeModel(), "caption", coco_dir, shots=[0, 2], selection=["random", "rices"], trials=2,
                      batch_size=2, out_dir=tmp_path / "one", progress=False)  # fmt: skip
    worker = Path(__file__).parent / "dist_worker.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
         str(worker), str(coco_dir), str(tmp_path / "two")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "results.json").read_text())["results"]
    assert [(r["selection"], r["shots"], r["n"], r["scores"]) for r in two] == [
        (r["selection"], r["shots"], r["n"], r["scores"]) for r in single
    ]
    files = sorted(p.name for p in (tmp_path / "two" / "predictions").glob("caption_rices_2shot*"))
    assert files == ["caption_rices_2shot_ens1_trial0.rank0.jsonl", "caption_rices_2shot_ens1_trial0.rank1.jsonl"]
    assert _predictions(tmp_path / "two") == _predictions(tmp_path / "one")
