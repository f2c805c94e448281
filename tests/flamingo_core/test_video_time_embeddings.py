"""Video at inference (paper Appendix B.1.2): trained on 8 frames at 1 FPS, read at 30 frames at 3 FPS, the
resampler's time embeddings linearly interpolated from the trained ones."""

import pytest
import torch

from flamingo_core import PerceiverResampler

TRAINED = 8  # time embeddings, one per frame of a 1-FPS training clip


def make() -> PerceiverResampler:
    torch.manual_seed(0)
    return PerceiverResampler(dim=16, depth=2, heads=2, dim_head=8, num_latents=5, max_frames=TRAINED).eval()


def test_30_frame_inference_with_interpolated_time_embeddings_equals_the_trained_ones_at_the_trained_frame_times():
    model = make()
    positions = model.frame_positions(30, frame_spacing=1 / 3)  # 30 frames at 3 FPS, trained at 1 FPS
    emb = model.time_embeddings_at(positions)  # (30, 1, d)
    trained = model.time_embeddings.detach()
    at_trained_times = torch.arange(0, 3 * TRAINED, 3)  # frames 0, 3, ..., 21 are at 0 s, 1 s, ..., 7 s
    torch.testing.assert_close(emb[at_trained_times], trained, rtol=0, atol=0)
    # between two trained frames: the linear interpolation, by the frame's distance to each
    torch.testing.assert_close(emb[4], trained[1] * 2 / 3 + trained[2] / 3)
    torch.testing.assert_close(emb[5], trained[1] / 3 + trained[2] * 2 / 3)
    # past the trained 7 s the last trained embedding holds
    torch.testing.assert_close(emb[22:], trained[-1:].expand(8, 1, -1))
    # the whole resampler: the 30-frame clip with only its frames at trained times kept equals the 8-frame clip
    x_30 = torch.randn(2, 30, 3, 16)
    keep = torch.zeros(2, 30, dtype=torch.bool)
    keep[:, at_trained_times] = True
    torch.testing.assert_close(model(x_30, frame_mask=keep, frame_positions=positions),
                               model(x_30[:, at_trained_times]), atol=1e-5, rtol=1e-5)
    # and the interpolated frames do reach the output
    assert not torch.allclose(model(x_30, frame_positions=positions), model(x_30[:, at_trained_times]), atol=1e-4)


def test_more_frames_than_trained_spread_over_the_trained_span_by_default():
    model = make()
    positions = model.frame_positions(30)
    assert positions[0] == 0 and positions[-1] == TRAINED - 1 and torch.all(positions.diff() > 0)
    x_30 = torch.randn(1, 30, 3, 16)
    torch.testing.assert_close(model(x_30), model(x_30, frame_positions=positions))
    # up to max_frames frames keep the trained embeddings one to one
    torch.testing.assert_close(model.frame_positions(5), torch.arange(5.0))
    x_5 = torch.randn(1, 5, 3, 16)
    torch.testing.assert_close(model(x_5), model(x_5, frame_positions=torch.arange(5.0)), rtol=0, atol=0)


def test_padded_videos_get_positions_by_their_own_length():
    model = make()
    long, short = torch.randn(1, 12, 3, 16), torch.randn(1, 5, 3, 16)
    batch = torch.cat([long, torch.cat([short, torch.randn(1, 7, 3, 16)], dim=1)])  # short padded to 12 frames
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[1, 5:] = False
    out = model(batch, frame_mask=mask)
    torch.testing.assert_close(out[0], model(long)[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[1], model(short)[0], atol=1e-5, rtol=1e-5)  # trained embeddings 0..4


def test_bad_frame_positions_are_named():
    model = make()
    with pytest.raises(ValueError, match=r"frame_positions must have shape \(3,\) or \(1, 3\)"):
        model(torch.randn(1, 3, 2, 16), frame_positions=torch.arange(4.0))
    with pytest.raises(ValueError, match="frame_positions must be finite and >= 0"):
        model(torch.randn(1, 2, 2, 16), frame_positions=torch.tensor([-1.0, 0.0]))
    with pytest.raises(ValueError, match="frame_spacing must be > 0"):
        model.frame_positions(3, frame_spacing=0.0)
