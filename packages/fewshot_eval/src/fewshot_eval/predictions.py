"""An evaluation's saved predictions: one file per job and process, ``predictions/<stem>.rank<r>.jsonl``, appended
one batch at a time so that an interrupted run keeps what it made, and read back by ``--resume``, which refuses
the predictions of another model."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from contrastive_encoder.shared.outputs import OutputError
from contrastive_encoder.shared.records import read_jsonl
from fewshot_eval.runner import Job, Runner

__all__ = ["load_predictions", "pred_files", "predict"]


def pred_files(out_dir: Path, stem: str) -> list[Path]:
    """The job's predictions files of every process (``stem``: ``Job.stem``)."""
    return sorted((out_dir / "predictions").glob(f"{stem}.rank*.jsonl"))


def _open_append(path: Path):
    """Open a predictions file for appending, ending a line an interruption left unfinished."""
    fh = open(path, "a+", encoding="utf-8")
    if fh.tell() > 0:
        fh.seek(fh.tell() - 1)
        if fh.read(1) != "\n":
            fh.write("\n")
    return fh


def load_predictions(files: Sequence[Path], model_id: str) -> dict[str, dict]:
    """The saved predictions of ``files`` by query id, refusing any made by another model than ``model_id``."""
    done: dict[str, dict] = {}
    for f in files:
        for rec in read_jsonl(f, required=("id",)):  # a line cut by an interruption is skipped
            if rec.get("model") != model_id:
                made_by = f"model {rec['model']}" if rec.get("model") else "a model it did not record"
                raise OutputError(
                    f"--resume: {f} holds predictions of {made_by}, not of this model ({model_id}); give "
                    "--overwrite to evaluate again from scratch, or choose another --out"
                )
            done[str(rec["id"])] = rec
    return done


def predict(runner: Runner, job: Job, batch_size: int, path: Path | None, desc: str | None) -> list[dict]:
    """Prediction records for ``job.todo``, appended to ``path`` (flushed to disk) batch by batch."""
    new: list[dict] = []
    fh = _open_append(path) if path is not None else None
    try:
        for i in tqdm(range(0, len(job.todo), batch_size), desc=desc, disable=desc is None, leave=False):
            recs = runner.run(job.todo[i : i + batch_size], job.demo_idx[i : i + batch_size], job.k, job.trial)
            new.extend(recs)
            if fh is not None:
                fh.write("".join(json.dumps(r) + "\n" for r in recs))
                fh.flush()
                os.fsync(fh.fileno())  # what is written survives an interruption; --resume starts after it
    finally:
        if fh is not None:
            fh.close()
    return new
