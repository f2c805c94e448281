"""The training loop: exact resume, accumulation = weighted sum of per-dataset gradients, 2 processes = 1
process, bad images skipped and counted (or fatal with --strict), and the CLI on `tiny` lowers the loss."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ce_helpers import write_pairs
from safetensors.torch import load_file

from contrastive_encoder import create_model
from contrastive_encoder.cli import main
from contrastive_encoder.data.mixing import StepPlanner
from contrastive_encoder.data.pairs import PairDataset, collate_pairs
from contrastive_encoder.data.sources import open_source
from contrastive_encoder.loss import ClipLoss
from contrastive_encoder.shared.checkpoint import latest_checkpoint
from contrastive_encoder.transforms import EvalTransform

BASE = ["--model", "tiny", "--num-workers", "0", "--no-progress", "--log-every", "1", "--warmup-steps", "1"]


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(latest_checkpoint(run) / "model" / "model.safetensors"))


def test_resume_equals_uninterrupted_run(tmp_path, pairs_file):
    args = [*BASE, "--data", str(pairs_file), "--batch-size", "6", "--max-steps", "4", "--save-every", "2"]
    assert main(["train", *args, "--out", str(tmp_path / "full")]) == 0
    assert main(["train", *args, "--out", str(tmp_path / "cut"), "--stop-after", "2"]) == 0
    assert latest_checkpoint(tmp_path / "cut").name == "step_00000002"
    assert main(["train", *args, "--out", str(tmp_path / "cut"), "--resume", "latest"]) == 0
    full, resumed = final_weights(tmp_path / "full"), final_weights(tmp_path / "cut")
    assert full.keys() == resumed.keys()
    for k in full:
        assert torch.equal(full[k], resumed[k]), f"{k} differs after resume"
    # the resumed run really continued: its weights moved away from the step-2 checkpoint
    ckpt = load_file(str(tmp_path / "cut" / "checkpoints" / "step_00000002" / "model" / "model.safetensors"))
    assert not torch.equal(ckpt["vision.proj.weight"], resumed["vision.proj.weight"])
    # checkpoints hold safetensors and JSON only: nothing to unpickle
    files = {p.suffix for p in latest_checkpoint(tmp_path / "cut").rglob("*") if p.is_file()}
    assert files <= {".safetensors", ".json", ".txt"}, files


def test_accumulation_gradient_is_weighted_sum_of_dataset_gradients(tmp_path):
    a = write_pairs(tmp_path / "a", n=12)
    b = write_pairs(tmp_path / "b", n=10, name="other.jsonl")
    lr, weights, batch = 0.5, (1.0, 0.2), 4
    args = ["train", *BASE, "--data", str(a), "--data", str(b), "--data-weights", *map(str, weights),
            "--batch-size", str(batch), "--max-steps", "1", "--optimizer", "sgd", "--lr", str(lr), "--warmup-steps", "0",
            "--weight-decay", "0", "--grad-clip", "0", "--no-augment", "--out", str(tmp_path / "run")]
    assert main(args) == 0
    after = final_weights(tmp_path / "run")

    torch.manual_seed(0)  # what train() does before building the model
    model = create_model("tiny")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = model.config
    dataset = PairDataset([open_source(a), open_source(b)], EvalTransform(cfg.image_size, cfg.image_mean, cfg.image_std))
    planner = StepPlanner(dataset.sizes(), batch, list(weights), "accumulation", seed=0)
    micro = planner.plan(0)
    assert [m.weight for m in micro] == list(weights) and {k[0] for k in micro[1].keys} == {1}
    total = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for m, w in zip(micro, weights):
        model.zero_grad()
        data = collate_pairs([dataset[k] for k in m.keys])
        ClipLoss()(*model(data["pixels"], **model.tokenize(data["text"]))).backward()
        for n, p in model.named_parameters():
            total[n] += w * p.grad  # the weighted sum of per-dataset gradients, by hand
    for n, g in total.items():
        torch.testing.assert_close((before[n] - after[n]) / lr, g, rtol=1e-4, atol=1e-6, msg=f"gradient of {n}")


@pytest.mark.distributed
@pytest.mark.parametrize(
    "optimizer, lr, atol",
    [
        # plain SGD: the update is the gradient, so the only slack is float summation order in the all-reduce
        ("sgd", "0.1", 1e-6),
        # AdamW divides by sqrt(v): in entries whose gradient is ~0, 1e-7 of summation noise becomes up to ~1e-5
        # of parameter noise; a real mismatch would show at the size of one step (lr = 1e-3)
        ("adamw", "0.001", 5e-5),
    ],
)
def test_two_processes_train_like_one(tmp_path, pairs_file, optimizer, lr, atol):
    args = [*BASE, "--data", str(pairs_file), "--batch-size", "8", "--max-steps", "3", "--save-every", "0",
            "--optimizer", optimizer, "--lr", lr]
    assert main(["train", *args, "--out", str(tmp_path / "one")]) == 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "contrastive_encoder.cli", "train", *args, "--out", str(tmp_path / "two")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["processes"] == 2
    one, two = final_weights(tmp_path / "one"), final_weights(tmp_path / "two")
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=0, atol=atol, msg=f"{k} differs between 1 and 2 processes")
    torch.manual_seed(0)
    init = create_model("tiny").state_dict()
    moved = max((init[k] - one[k]).abs().max().item() for k in one)
    assert moved > 10 * atol  # training moved the weights well beyond the tolerance


def break_images(pairs_file: Path) -> tuple[str, str]:
    rows = [json.loads(line) for line in pairs_file.read_text().splitlines()]
    corrupt = pairs_file.parent / rows[3]["image"]
    corrupt.write_bytes(corrupt.read_bytes()[:40])  # truncated PNG
    missing = pairs_file.parent / rows[7]["image"]
    missing.unlink()
    with open(pairs_file, "a") as fh:
        fh.write("{not json\n")
    return str(corrupt), str(missing)


def test_bad_images_skipped_and_counted(tmp_path, pairs_file):
    corrupt, missing = break_images(pairs_file)
    source = open_source(pairs_file)
    dataset = PairDataset([source], EvalTransform(32))
    samples = [dataset[(0, i, 0)] for i in range(len(source))]
    assert sum(sum(s["skipped"].values()) for s in samples) == 2
    assert all(s["pixels"].shape == (3, 32, 32) for s in samples)
    # the CLI run finishes and reports the two bad images and the bad JSON row
    run = tmp_path / "run"
    assert main(["train", *BASE, "--data", str(pairs_file), "--batch-size", "24", "--max-steps", "1",
                 "--out", str(run)]) == 0
    skipped = json.loads((run / "summary.json").read_text())["skipped"]
    assert sum(skipped.values()) == 3, skipped


def test_strict_mode_names_the_bad_file(tmp_path, pairs_file, capsys):
    corrupt, missing = break_images(pairs_file)
    pairs_file.write_text("\n".join(pairs_file.read_text().splitlines()[:-1]) + "\n")  # only image errors left
    rc = main(["train", *BASE, "--data", str(pairs_file), "--batch-size", "24", "--max-steps", "1", "--strict",
               "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert (corrupt in err or missing in err) and "strict" in err


def test_user_errors_are_one_line(tmp_path, capsys):
    assert main(["train", "--model", "tiny", "--data", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path)]) == 2
    assert "nope.jsonl" in capsys.readouterr().err
    assert main(["train", "--model", "nonexistent", "--data", str(tmp_path), "--out", str(tmp_path)]) == 2
