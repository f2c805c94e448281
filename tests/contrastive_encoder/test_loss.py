"""ClipLoss: equals a direct computation of equation 4, is ~ln(batch) at init, and on 2 processes gives the
global loss and (after DDP's averaging) the global gradient, with and without local_loss."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from contrastive_encoder import ClipLoss, create_model


def reference_loss(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Equation 4 written out term by term."""
    n = img.shape[0]
    total = img.new_zeros(())
    for i in range(n):
        s_i2t = torch.stack([scale * img[i] @ txt[j] for j in range(n)])
        s_t2i = torch.stack([scale * txt[i] @ img[j] for j in range(n)])
        total = total - (s_i2t[i] - torch.logsumexp(s_i2t, 0)) - (s_t2i[i] - torch.logsumexp(s_t2i, 0))
    return total / (2 * n)


def random_features(n: int, d: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    img = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=-1)
    return img, txt


def test_loss_matches_reference_and_gradient():
    img, txt = random_features(7, 5)
    img.requires_grad_(True)
    scale = torch.tensor(4.0, requires_grad=True)
    loss = ClipLoss()(img, txt, scale)
    ref = reference_loss(img, txt, scale)
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-6)
    g1 = torch.autograd.grad(loss, (img, scale))
    g2 = torch.autograd.grad(ref, (img, scale))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_logits_and_labels_shapes():
    img, txt = random_features(4, 3)
    loss_fn = ClipLoss()
    per_img, per_txt = loss_fn.get_logits(img, txt, torch.tensor(2.0))
    assert per_img.shape == per_txt.shape == (4, 4)
    torch.testing.assert_close(per_txt, per_img.T)
    assert loss_fn.get_ground_truth(4, img.device).tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("batch", [8, 32])
def test_loss_is_about_ln_batch_at_init(batch):
    # logits have std 14.3 / sqrt(D) = 0.32 for D = 2048, which adds about std^2 / 2 = 0.05 to ln(batch)
    img, txt = random_features(batch, 2048, seed=batch)
    loss = ClipLoss()(img, txt, torch.tensor(math.log(1 / 0.07)).exp())
    assert abs(loss.item() - math.log(batch)) < 0.2, (loss.item(), math.log(batch))


def test_temperature_init_and_clamp():
    model = create_model("tiny")
    assert model.logit_scale.exp().item() == pytest.approx(1 / 0.07, rel=1e-5)
    with torch.no_grad():
        model.logit_scale.fill_(7.0)
    model.clamp_logit_scale()
    assert model.logit_scale.exp().item() == pytest.approx(100.0, rel=1e-5)


@pytest.mark.distributed
def test_two_process_loss_and_gradients_equal_one_process(tmp_path: Path):
    worker = Path(__file__).with_name("_dist_loss_worker.py")
    subprocess.run([sys.executable, str(worker), str(tmp_path)], check=True, timeout=180)
    sys.path.insert(0, str(worker.parent))
    from _dist_loss_worker import BATCH, WORLD, global_features

    img, txt, scale = global_features()
    img.requires_grad_(True), txt.requires_grad_(True), scale.requires_grad_(True)
    ref = reference_loss(img, txt, scale)
    gi, gt, gs = torch.autograd.grad(ref, (img, txt, scale))
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    for local in (False, True):
        losses = torch.stack([r[local]["loss"] for r in ranks])
        if local:  # each rank holds its share; their mean is the global loss
            torch.testing.assert_close(losses.mean(), ref, rtol=1e-5, atol=1e-6)
        else:  # every rank sees the whole global batch
            torch.testing.assert_close(losses, ref.expand(WORLD), rtol=1e-5, atol=1e-6)
        for r, res in enumerate(ranks):
            sl = slice(r * BATCH, (r + 1) * BATCH)
            # DDP averages parameter gradients over ranks: grad / WORLD must be the 1-process gradient
            torch.testing.assert_close(res[local]["gi"] / WORLD, gi[sl], rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(res[local]["gt"] / WORLD, gt[sl], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(torch.stack([r[local]["gs"] for r in ranks]).mean(), gs, rtol=1e-4, atol=1e-6)
