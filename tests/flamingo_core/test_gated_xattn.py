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


def test_no_trained_parameter_is_0_dim():
    """FSDP refuses 0-dim parameters ("FSDP doesn't support scalar parameters", seen on an H100): the gates are
    (1,) and no other trained tensor of the model is a scalar either."""
    from fc_helpers import make_model

    model = make_model()
    trained = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.endswith("alpha_xattn") for n in trained)
    assert [n for n, p in trained.items() if p.dim() == 0] == []


def test_gates_saved_as_0_dim_scalars_still_load():
    block = make(gate=0.0)
    old = {k: (v.reshape(()) if k.startswith("alpha_") else v) for k, v in make(gate=0.7).state_dict().items()}
    assert old["alpha_xattn"].dim() == 0
    block.load_state_dict(old)
    assert block.alpha_xattn.shape == (1,) and block.alpha_xattn.item() == torch.tensor(0.7).item()
    assert block.alpha_dense.item() == torch.tensor(0.7).item()


def test_adam_moments_of_0_dim_gates_load_and_step():
    from flamingo_core.train.zero import load_optimizer_state

    block = make(gate=0.5)
    opt = torch.optim.AdamW(block.parameters(), lr=1e-2)
    state = opt.state_dict()
    for i, p in enumerate(block.parameters()):  # moments as an older checkpoint holds them for its 0-dim gates
        shape = () if p.dim() == 1 and p.numel() == 1 else p.shape
        state["state"][i] = {"step": torch.tensor(3.0), "exp_avg": torch.full(shape, 0.1),
                             "exp_avg_sq": torch.full(shape, 0.01)}
    load_optimizer_state(opt, state)
    assert opt.state[block.alpha_xattn]["exp_avg"].shape == (1,)
    run(block, torch.randn(1, 2, R, 16), torch.randn(1, 7, 32)).sum().backward()
    opt.step()  # the moments broadcast against (1,) gradients only when their shapes agree
    assert block.alpha_xattn.shape == (1,) and torch.isfinite(block.alpha_xattn).all()
