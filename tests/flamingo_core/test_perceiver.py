"""Perceiver Resampler: fixed output size whatever T and S, time order matters, padding frames are ignored."""

import pytest
import torch

from flamingo_core import PerceiverResampler


def make(**kw):
    torch.manual_seed(0)
    return PerceiverResampler(dim=16, depth=2, heads=2, dim_head=8, num_latents=5, max_frames=4, **kw).eval()


@pytest.mark.parametrize("t,s", [(1, 1), (1, 49), (3, 16), (4, 7)])
def test_output_shape_independent_of_time_and_space(t, s):
    out = make()(torch.randn(2, t, s, 16))
    assert out.shape == (2, 5, 16)
    assert torch.isfinite(out).all()


def test_reordering_video_frames_changes_output():
    model = make()
    x_f = torch.randn(1, 3, 6, 16)
    reordered = x_f[:, [2, 0, 1]]
    assert not torch.allclose(model(x_f), model(reordered), atol=1e-4)
    # without the time embeddings the resampler is permutation invariant over frames: the embeddings are the cause
    with torch.no_grad():
        model.time_embeddings.zero_()
    torch.testing.assert_close(model(x_f), model(reordered), atol=1e-5, rtol=1e-5)


def test_padding_frames_are_masked():
    model = make()
    x_f = torch.randn(1, 2, 6, 16)
    padded = torch.cat([x_f, torch.randn(1, 2, 6, 16)], dim=1)  # 2 garbage frames
    mask = torch.tensor([[True, True, False, False]])
    torch.testing.assert_close(model(padded, frame_mask=mask), model(x_f), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(model(padded), model(x_f), atol=1e-4)


def test_more_frames_than_time_embeddings_interpolate_them():
    model = make()
    x_f = torch.randn(1, 7, 3, 16)  # 7 frames on 4 trained time embeddings (test_video_time_embeddings.py)
    out = model(x_f)
    assert out.shape == (1, 5, 16) and torch.isfinite(out).all()
    assert not torch.allclose(out, model(x_f[:, [6, 5, 4, 3, 2, 1, 0]]), atol=1e-4)  # time order still matters


def test_latents_receive_gradients():
    model = make().train()
    model(torch.randn(2, 2, 3, 16)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
