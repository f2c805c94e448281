"""``Flamingo.encode_media(..., media_frame_positions=)``: video at inference (paper Appendix B.1.2, arXiv
2204.14198), 30 frames at 3 FPS on time embeddings trained on 8 frames at 1 FPS, through the whole model."""

from __future__ import annotations

import pytest
import torch
from fc_helpers import make_model

TRAINED = 8  # time embeddings, one per frame of a 1-FPS training clip
AT_TRAINED_TIMES = torch.arange(0, 3 * TRAINED, 3)  # frames 0, 3, ..., 21 of a 3-FPS clip: 0 s, 1 s, ..., 7 s


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return make_model(max_frames=TRAINED).eval()


def _clips(model, videos: int = 2, frames: int = 30) -> torch.Tensor:
    size = 32  # the tiny preset's conv tower reads any size; 32 keeps 30-frame clips quick
    gen = torch.Generator().manual_seed(0)
    return torch.randn(1, videos, frames, 3, size, size, generator=gen)  # (B, N, T, C, H, W)


def test_30_frames_at_3_fps_equal_8_frames_at_1_fps_at_the_trained_frame_times(model):
    clips = _clips(model)
    keep = torch.zeros(1, 2, 30, dtype=torch.bool)
    keep[..., AT_TRAINED_TIMES] = True  # only the frames at trained times reach the resampler
    at_3_fps = model.perceiver.frame_positions(30, frame_spacing=1 / 3)  # (30,)
    with torch.no_grad():
        eight = model.encode_media(clips[:, :, AT_TRAINED_TIMES])  # 8 frames at 1 FPS, the trained embeddings
        thirty = model.encode_media(clips, media_frame_mask=keep, media_frame_positions=at_3_fps)
        per_video = model.encode_media(clips, media_frame_mask=keep,
                                       media_frame_positions=at_3_fps.expand(1, 2, 30))  # (B, N, T)
        by_length = model.encode_media(clips, media_frame_mask=keep)  # no positions: placed by the 8 kept
    torch.testing.assert_close(thirty, eight, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(per_video, eight, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(by_length, eight, atol=1e-4)  # the positions are what makes them equal


def test_per_video_positions_follow_their_video_past_padding_slots(model):
    clips = _clips(model, videos=3)
    positions = torch.stack([torch.arange(30) / 3, torch.arange(30) / 3, torch.arange(30) / 6])[None]  # (1, 3, 30)
    mask = torch.tensor([[True, False, True]])  # the middle slot is padding: not encoded
    with torch.no_grad():
        got = model.encode_media(clips, mask, media_frame_positions=positions)
        third = model.encode_media(clips[:, 2:], media_frame_positions=positions[:, 2:])
        at_first_videos_positions = model.encode_media(clips[:, 2:], media_frame_positions=positions[0, 0])
    torch.testing.assert_close(got[:, 2:], third, atol=1e-5, rtol=1e-5)  # its own positions, not its slot's
    assert not torch.allclose(third, at_first_videos_positions, atol=1e-4)
    assert not bool(got[:, 1].any())  # a padding slot stays zero


def test_bad_media_frame_positions_are_named(model):
    with pytest.raises(ValueError, match=r"media_frame_positions must have shape \(30,\) or \(1, 2, 30\) for media"
                                         r" of shape \(1, 2, 30, .*\), got \(8,\)"):
        model.encode_media(_clips(model), media_frame_positions=torch.arange(8.0))
