"""The frame policies: training's random 1-FPS window, evaluation's evenly spaced frames and the paper's 3 FPS."""

from __future__ import annotations

import random

from contrastive_encoder.shared.frames import evenly_spaced, fixed_rate, random_window


def test_random_window_is_a_seeded_1fps_window_inside_the_clip():
    starts = set()
    for seed in range(20):
        times = random_window(30.0, 8, 1.0, random.Random(seed))
        assert [round(b - a, 6) for a, b in zip(times, times[1:])] == [1.0] * 7 and 0 <= times[0] <= 23
        starts.add(times[0])
    assert len(starts) > 1 and random_window(30.0, 8, 1.0, random.Random(3)) == random_window(30.0, 8, 1.0, random.Random(3))
    assert random_window(4.0, 8, 1.0, random.Random(0))[0] == 0.0  # a short clip starts at 0


def test_evenly_spaced_covers_the_clip_first_and_last_kept():
    assert evenly_spaced(30, 8) == [0, 4, 8, 12, 17, 21, 25, 29]
    assert evenly_spaced(5, 8) == [0, 1, 2, 3, 4]
    assert evenly_spaced(9, 1) == [0]


def test_fixed_rate_is_the_papers_30_frames_at_3_fps_cut_at_the_clip_end():
    assert fixed_rate(60.0, 30, 3.0) == [i / 3 for i in range(30)]  # 10 s of a long clip
    assert fixed_rate(4.0, 30, 3.0) == [i / 3 for i in range(12)]  # a 4 s clip: its 12 frames, never padded
    assert fixed_rate(0.2, 30, 3.0) == [0.0]  # the first frame of any clip


def test_fixed_rate_reads_a_frame_folder_as_one_frame_per_second(tmp_path):
    from PIL import Image

    from contrastive_encoder.shared.frames import Clip
    from contrastive_encoder.shared.media import load_video

    for i in range(4):  # frame i shows second i: its red channel is i
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / f"{i:03d}.png")
    clip = load_video(tmp_path, 30, policy="fixed_rate", fps=3.0)
    assert isinstance(clip, Clip) and clip.times == [i / 3 for i in range(12)]
    assert [f.getpixel((0, 0))[0] // 40 for f in clip] == [int(t) for t in clip.times]  # 0,0,0,1,1,1,...
    assert len(load_video(tmp_path, 30, policy="evenly_spaced")) == 4  # the other evaluation policy: no repeats


def test_fixed_rate_reads_an_mp4_at_the_rate_nearest_frame_per_time(tmp_path):
    av = __import__("pytest").importorskip("av")
    import numpy as np

    from contrastive_encoder.shared.media import load_video

    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=6)  # 6 FPS, 24 frames = 4 s; frame j has level j * 10
        s.width = s.height = 32
        s.pix_fmt = "yuv420p"
        for j in range(24):
            for pkt in s.encode(av.VideoFrame.from_ndarray(np.full((32, 32, 3), j * 10, np.uint8), format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    clip = load_video(path, 30, policy="fixed_rate", fps=3.0)
    assert clip.times == [i / 3 for i in range(12)]  # 4 s at 3 FPS
    levels = [float(np.asarray(f).mean()) / 10 for f in clip]
    assert all(abs(lv - 2 * i) < 0.6 for i, lv in enumerate(levels)), levels  # every second source frame
