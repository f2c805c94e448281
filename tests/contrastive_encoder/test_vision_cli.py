"""End to end on `tiny`: the CLI trains and the loss falls, export -> load_vision_encoder gives a frozen module
with (B, T, S, d) features for videos, and `contrastive-encoder eval` runs zero-shot and retrieval."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from contrastive_encoder import FrozenVisionEncoder, create_model, load_vision_encoder
from contrastive_encoder.cli import main
from contrastive_encoder.shared.runlog import read_metrics


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from ce_helpers import write_class_folders, write_pairs

    root = tmp_path_factory.mktemp("e2e")
    pairs = write_pairs(root / "pairs", n=12)
    classes = write_class_folders(root / "classes")
    args = ["train", "--model", "tiny", "--data", str(pairs), "--batch-size", "12", "--max-steps", "20", "--lr", "3e-3",
            "--warmup-steps", "2", "--no-augment", "--num-workers", "0", "--no-progress", "--log-every", "1",
            "--out", str(root / "run"), "--zero-shot", str(classes), "--eval-every", "8"]
    assert main(args) == 0
    return root, pairs, classes


def test_cli_train_lowers_the_loss(trained):
    root, _, _ = trained
    losses = [r["loss"] for r in read_metrics(root / "run" / "metrics.jsonl") if "loss" in r]
    assert len(losses) == 20
    # one fixed batch of 12 pairs, memorisable: the loss (about 3 at init) must fall by more than 40%
    assert sum(losses[-3:]) / 3 < 0.6 * sum(losses[:3]) / 3, losses
    evals = [r for r in read_metrics(root / "run" / "metrics.jsonl") if "zero_shot/classes/top1" in r]
    assert [r["step"] for r in evals] == [8, 16, 20]  # periodic evaluation, and at the end
    summary = json.loads((root / "run" / "summary.json").read_text())
    assert summary["step"] == 20 and "classes" in summary["zero_shot"]


def test_export_and_frozen_vision_encoder(trained):
    root, _, _ = trained
    assert main(["export", "--checkpoint", str(root / "run"), "--out", str(root / "export")]) == 0
    enc = load_vision_encoder(root / "export")
    assert isinstance(enc, FrozenVisionEncoder) and not enc.training
    assert all(not p.requires_grad for p in enc.parameters())
    enc.train()  # a parent module's .train() must not unfreeze it
    assert not enc.training
    assert enc.image_size == 32 and enc.embed_dim == 16 and enc.feature_dim == 32
    video = torch.randn(2, 3, 3, 32, 32)  # (B, T, C, H, W)
    feats = enc(video)
    assert feats.shape == (2, 3, 4, 32)  # (B, T, S = 2 x 2, d)
    assert not feats.requires_grad
    torch.testing.assert_close(feats[:, 1], enc(video[:, 1])[:, 0])  # frames are encoded independently
    assert enc(video[:, 0]).shape == (2, 1, 4, 32)
    emb = enc.embed(video[:, 0])
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2))
    # the exported weights are the trained ones, not a fresh model's
    trained_model = create_model(str(root / "export"))
    torch.testing.assert_close(emb, trained_model.encode_image(video[:, 0]))
    x = enc.preprocess(Image.new("RGB", (50, 40), (255, 0, 0)))
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert enc.identifier == load_vision_encoder(root / "export").identifier
    assert enc.identifier != load_vision_encoder("tiny").identifier
    with pytest.raises(ValueError, match="pixels must be"):
        enc(torch.randn(3, 32, 32))


def test_from_dual_encoder_wraps_in_memory_model():
    torch.manual_seed(0)
    model = create_model("tiny")
    enc = FrozenVisionEncoder.from_dual_encoder(model)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(enc.embed(x), model.eval().encode_image(x))
    assert any(p.requires_grad for p in model.parameters())  # the source model is untouched


def test_eval_cli_zero_shot_and_retrieval(trained, tmp_path, capsys):
    root, pairs, classes = trained
    out = tmp_path / "res.json"
    rc = main(["eval", "--model", str(root / "run"), "--zero-shot", str(classes), "--retrieval", str(pairs),
               "--json", str(out), "--template", "a picture of a {class} thing", "--template", "A {class}."])
    assert rc == 0
    res = json.loads(out.read_text())
    zs = res[f"zero_shot:{classes}"]
    assert zs["n"] == 6 and zs["classes"] == 3 and 0.0 <= zs["top1"] <= zs["top5"] == 1.0
    rr = res[f"retrieval:{pairs}"]
    assert rr["images"] == 12 and rr["captions"] == 12
    assert rr["i2t_r1"] <= rr["i2t_r5"] <= rr["i2t_r10"] and rr["t2i_r1"] <= rr["t2i_r5"] <= rr["t2i_r10"]
    assert "zero-shot" in capsys.readouterr().out
    assert main(["eval", "--model", str(root / "run")]) == 2  # nothing to evaluate: one-line error
