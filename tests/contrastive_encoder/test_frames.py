"""The two frame policies: training's random 1-FPS window, evaluation's evenly spaced frames."""

from __future__ import annotations

import random

from contrastive_encoder.shared.frames import evenly_spaced, random_window


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
