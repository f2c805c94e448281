"""The paper's stage-1 recipe (arXiv 2204.14198, Appendix B.1.3): label smoothing of the contrastive targets,
Adaptive Gradient Clipping of the NFNet (Brock et al., arXiv 2102.06171), Adam with a linear decay."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
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

BASE = ["--model", "tiny", "--num-workers", "0", "--no-progress", "--log-every", "1", "--no-augment",
        "--save-every", "0"]


def test_label_smoothing_changes_the_loss_as_the_formula_says():
    torch.manual_seed(0)
    img, txt = F.normalize(torch.randn(6, 8), dim=-1), F.normalize(torch.randn(6, 8), dim=-1)
    scale = torch.tensor(10.0)
    eps = 0.1
    logits = scale * img @ txt.T  # (N, N): row i's positive is column i
    m = logits.shape[1]

    def smoothed(lg: torch.Tensor) -> torch.Tensor:  # -(1 - eps) log p_ii - eps / M sum_j log p_ij, row mean
        logp = lg.log_softmax(-1)
        return (-(1 - eps) * logp.diagonal() - eps / m * logp.sum(-1)).mean()

    expected = (smoothed(logits) + smoothed(logits.T)) / 2
    torch.testing.assert_close(ClipLoss(label_smoothing=eps)(img, txt, scale), expected)
    plain = (F.cross_entropy(logits, torch.arange(6)) + F.cross_entropy(logits.T, torch.arange(6))) / 2
    torch.testing.assert_close(ClipLoss()(img, txt, scale), plain)  # 0: equation 4 as written
    assert not torch.allclose(expected, plain)
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\), got 1.0"):
        ClipLoss(label_smoothing=1.0)


def _first_batch_loss(pairs, batch: int, eps: float) -> float:
    """The loss of the trainer's first step, by hand: the seed-0 model on the planner's first micro-batch."""
    torch.manual_seed(0)  # what train() does before building the model
    model = create_model("tiny")
    cfg = model.config
    dataset = PairDataset([open_source(pairs)], EvalTransform(cfg.image_size, cfg.image_mean, cfg.image_std))
    keys = StepPlanner(dataset.sizes(), batch, [1.0], "accumulation", seed=0).plan(0)[0].keys
    data = collate_pairs([dataset[k] for k in keys])
    with torch.no_grad():
        return ClipLoss(label_smoothing=eps)(*model(data["pixels"], **model.tokenize(data["text"]))).item()


def test_label_smoothing_flag_reaches_the_training_loss(tmp_path):
    pairs = write_pairs(tmp_path / "pairs", n=12)
    args = ["train", *BASE, "--data", str(pairs), "--batch-size", "6", "--max-steps", "1", "--label-smoothing",
            "0.3", "--out", str(tmp_path / "run")]
    assert main(args) == 0
    first = json.loads((tmp_path / "run" / "summary.json").read_text())["first_loss"]
    assert first == pytest.approx(_first_batch_loss(pairs, 6, 0.3), rel=1e-5)
    assert first != pytest.approx(_first_batch_loss(pairs, 6, 0.0), rel=1e-3)


def test_agc_clips_each_unit_of_the_nfnet_trunk_to_lambda_times_its_weight_norm(tmp_path):
    pairs = write_pairs(tmp_path / "pairs", n=12)
    lr, agc = 1.0, 1e-4  # a tiny lambda: every unit's gradient is clipped
    args = ["train", *BASE, "--data", str(pairs), "--batch-size", "6", "--max-steps", "1", "--optimizer", "sgd",
            "--lr", str(lr), "--warmup-steps", "0", "--weight-decay", "0", "--grad-clip", "0", "--agc", str(agc),
            "--out", str(tmp_path / "run")]
    assert main(args) == 0
    after = load_file(str(latest_checkpoint(tmp_path / "run") / "model" / "model.safetensors"))
    torch.manual_seed(0)
    before = create_model("tiny").state_dict()

    def unit_norms(t: torch.Tensor) -> torch.Tensor:  # one norm per output unit (row / filter), Brock et al.
        return t.norm() if t.ndim <= 1 else t.flatten(1).norm(dim=1)

    checked = 0
    for name, w in before.items():
        if not name.startswith("vision.trunk.") or not w.is_floating_point():
            continue
        step = unit_norms(before[name] - after[name]) / lr  # SGD: the clipped gradient's per-unit norms
        bound = agc * unit_norms(w).clamp(min=1e-3)  # AGC: ||G_i|| <= lambda * max(||W_i||, eps)
        moved = step > 0
        torch.testing.assert_close(step[moved], bound[moved], rtol=1e-3, atol=1e-9, msg=name)
        checked += int(moved.sum())
    assert checked > 100
    proj = unit_norms(before["vision.proj.weight"] - after["vision.proj.weight"]) / lr  # the final linear: not
    assert (proj > 2 * agc * unit_norms(before["vision.proj.weight"])).any()  # clipped (NFNet recipe)


def test_adam_with_linear_decay(tmp_path):
    pairs = write_pairs(tmp_path / "pairs", n=12)
    args = ["train", *BASE, "--data", str(pairs), "--batch-size", "6", "--max-steps", "4", "--optimizer", "adam",
            "--schedule", "linear", "--lr", "0.01", "--warmup-steps", "0", "--out", str(tmp_path / "run")]
    assert main(args) == 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in rows if "lr" in r]
    assert lrs == pytest.approx([0.0075, 0.005, 0.0025, 0.0])  # after steps 1-4 of 4: lr * (1 - step / 4)
    assert main(["train", *BASE, "--data", str(pairs), "--optimizer", "lamb", "--out", str(tmp_path / "bad")]) == 2
    assert main(["train", *BASE, "--data", str(pairs), "--label-smoothing", "1", "--out", str(tmp_path / "bad")]) == 2
