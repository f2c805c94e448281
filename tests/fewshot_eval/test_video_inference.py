"""Video at inference as the paper reads it (Appendix B.1.2, arXiv 2204.14198): 30 frames at 3 FPS, each frame
placed by its time on the 1-FPS axis the time embeddings were trained on, through the evaluation adapter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

fc = pytest.importorskip("flamingo_core")

from contrastive_encoder.shared.frames import Clip  # noqa: E402
from fewshot_eval.datasets import load_task_data  # noqa: E402
from fewshot_eval.media import VideoSampling, load_media  # noqa: E402
from fewshot_eval.model import FlamingoEvalModel  # noqa: E402
from fewshot_eval.prompts import Shot, build_prompt, get_template  # noqa: E402


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = fc.create_model("tiny")  # 4 trained frames
    with torch.no_grad():  # open the gates so that the visual tokens change the text
        for block in m.xattn_layers:
            block.alpha_xattn.fill_(1.0)
            block.alpha_dense.fill_(1.0)
    return m.eval()


def _frames(n, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(n)]


def test_a_3_fps_clip_is_encoded_at_its_frame_times(model):
    adapter = FlamingoEvalModel(model=model, device="cpu")
    frames = _frames(12)
    clip = Clip(frames, [i / 3 for i in range(12)])  # 4 s at 3 FPS
    pixels = model.processor.media_to_tensor(frames)[None, None]
    with torch.no_grad():
        at_times = model.encode_media(pixels, media_frame_positions=torch.arange(12) / 3)[0, 0]
        spread = model.encode_media(pixels)[0, 0]  # no times: spread evenly over the 4 trained frames
    torch.testing.assert_close(adapter._visual(clip), at_times)
    assert not torch.allclose(adapter._visual(clip), spread, atol=1e-4)  # the times are what is used
    # at 1 FPS the frames sit on the trained frames: exactly the trained embeddings, as an untimed list
    one_fps = Clip(frames[:4], [0.0, 1.0, 2.0, 3.0])
    torch.testing.assert_close(adapter._visual(one_fps), adapter._visual(frames[:4]))


def test_timed_clips_give_the_same_answers_with_and_without_the_visual_cache(model):
    cached = FlamingoEvalModel(model=model, device="cpu")
    uncached = FlamingoEvalModel(model=model, device="cpu", cache_visual=False)
    clips = [Clip(_frames(9, seed=s), [i / 3 for i in range(9)]) for s in range(3)]
    demos = [Shot(clips[0], "red"), Shot(clips[1], "blue")]
    prompt = build_prompt(demos, Shot(clips[2]), get_template("video-caption"))
    assert cached.generate([prompt], max_new_tokens=5, num_beams=1) == uncached.generate([prompt], 5, num_beams=1)
    np.testing.assert_allclose(cached.loglikelihood(prompt, [" red<EOC>"]), uncached.loglikelihood(prompt, [" red<EOC>"]),
                               atol=1e-4)
    assert len(uncached._visual_cache) == 0  # cache_visual=False stores nothing


def test_evaluation_reads_videos_at_3_fps_by_default_or_evenly_when_asked(video_dir):
    _, query = load_task_data("video-qa", video_dir / "qa")
    clip = load_media(query.examples[0])  # 3 frames = 3 s at 3 FPS: each shown three times
    assert isinstance(clip, Clip) and clip.times == [i / 3 for i in range(9)]
    even = load_media(query.examples[0], VideoSampling(30, None))
    assert len(even) == 3 and getattr(even, "times", None) is None
    assert len(load_media(query.examples[0], VideoSampling(4, 3.0))) == 4  # at most --video-frames
    with pytest.raises(ValueError, match="video fps must be > 0"):
        load_media(query.examples[0], VideoSampling(30, -1.0))
