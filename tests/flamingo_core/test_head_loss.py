"""LinearHeadNLL against cross-entropy on the concatenated logits, outside the model."""

import pytest
import torch
import torch.nn.functional as F

from flamingo_core import head_loss
from flamingo_core.head_loss import LinearHeadNLL


@pytest.mark.parametrize("tile,chunk", [(1024, 64), (300, 7)])
def test_linear_head_nll_matches_cross_entropy_with_scaled_upstream_gradient(monkeypatch, tile, chunk):
    monkeypatch.setattr(head_loss, "VOCAB_TILE", tile)  # 300: four tiles of a 1000-row head, the last one short
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(1000, 32, generator=g)
    rows = torch.randn(2, 32, generator=g).requires_grad_(True)
    hidden = torch.randn(40, 32, generator=g).requires_grad_(True)
    targets = torch.randint(0, 1002, (40,), generator=g)
    targets[:3] = torch.tensor([1000, 1001, 999])  # both new tokens and the head's last id
    ref = F.cross_entropy(torch.cat([hidden @ weight.t(), hidden @ rows.t()], -1), targets, reduction="sum")
    ref_h, ref_r = torch.autograd.grad(3.0 * ref, [hidden, rows])
    loss = LinearHeadNLL.apply(hidden, targets, weight, chunk, rows)
    got_h, got_r = torch.autograd.grad(3.0 * loss, [hidden, rows])
    assert torch.allclose(loss, ref, rtol=1e-5)
    assert torch.allclose(got_h, ref_h, rtol=1e-4, atol=1e-5)
    assert torch.allclose(got_r, ref_r, rtol=1e-4, atol=1e-5)


def test_linear_head_nll_refuses_a_trainable_head():
    weight = torch.randn(10, 4, requires_grad=True)
    with pytest.raises(ValueError, match="must be frozen"):
        LinearHeadNLL.apply(torch.randn(3, 4), torch.zeros(3, dtype=torch.long), weight, 8, torch.randn(2, 4))
