"""GATED XATTN-DENSE: zero gates are the identity; phi masking (immediate and all-media); no NaN without media."""

import torch

from flamingo_core import GatedCrossAttentionBlock


def make(only_immediate=True, gate=1.0):
    torch.manual_seed(0)
    block = GatedCrossAttentionBlock(32, 16, heads=2, dim_head=8, ff_mult=2,
                                     only_attend_immediate_media=only_immediate).eval()
    with torch.no_grad():
        block.alpha_xattn.fill_(gate)
        block.alpha_dense.fill_(gate)
    return block


# tokens 0-1 before any media, 2-3 after media 1, 4-6 after media 2
PHI = torch.tensor([[0, 0, 1, 1, 2, 2, 2]])
R = 4


def run(block, visual, y):
    return block(y, PHI, block.media_kv(visual), R)


def test_zero_gates_are_identity():
    block = make(gate=0.0)
    y = torch.randn(1, 7, 32)
    assert torch.equal(run(block, torch.randn(1, 2, R, 16), y), y)


def test_immediate_media_masking():
    block = make()
    y, visual = torch.randn(1, 7, 32), torch.randn(1, 2, R, 16)
    changed = visual.clone()
    changed[:, 0] = torch.randn(R, 16)  # a different image 1
    a, b = run(block, visual, y), run(block, changed, y)
    torch.testing.assert_close(a[:, 4:], b[:, 4:], atol=0, rtol=0)  # tokens after image 2 cannot see image 1
    assert not torch.allclose(a[:, 2:4], b[:, 2:4])  # tokens after image 1 see it
    torch.testing.assert_close(a[:, :2], b[:, :2], atol=0, rtol=0)


def test_all_media_mode_sees_earlier_images():
    block = make(only_immediate=False)
    y, visual = torch.randn(1, 7, 32), torch.randn(1, 2, R, 16)
    changed = visual.clone()
    changed[:, 0] = torch.randn(R, 16)
    a, b = run(block, visual, y), run(block, changed, y)
    assert not torch.allclose(a[:, 4:], b[:, 4:])
    torch.testing.assert_close(a[:, :2], b[:, :2], atol=0, rtol=0)


def test_tokens_without_media_get_no_visual_signal_and_no_nan():
    block = make()
    y = torch.randn(1, 7, 32)
    phi0 = torch.zeros(1, 7, dtype=torch.long)
    out = block.attn(y, phi0, block.media_kv(torch.randn(1, 2, R, 16)), R)
    assert torch.equal(out, torch.zeros_like(out))
    y.requires_grad_(True)
    block(y, phi0, block.media_kv(torch.randn(1, 2, R, 16)), R).sum().backward()
    assert torch.isfinite(y.grad).all()
