"""Every evaluation set the ShapesWorld generator writes (docs/formats.md) loads with its task, its media
decode (mp4 through PyAV), and a short run over it completes - the loaders exercised on real files."""

import pytest

shapesworld = pytest.importorskip("shapesworld")

from fewshot_eval.evaluate import evaluate  # noqa: E402
from fewshot_eval.media import load_media  # noqa: E402

SETS = [("caption", "coco"), ("vqa", "vqav2"), ("classify", "classify"), ("classify", "colour"),
        ("video-qa", "videoqa")]  # fmt: skip
COUNTS = {"coco_train": 6, "coco_val": 2, "coco_test": 2, "vqa_train": 6, "vqa_val": 2, "classify_train": 6,
          "classify_val": 2, "colour_train": 6, "colour_val": 2, "videoqa_train": 6, "videoqa_val": 2,
          "ltip_train": 1, "ltip_val": 1, "align_train": 1, "vtp_train": 1, "vtp_val": 1, "m3w_train": 1}  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return shapesworld.generate(tmp_path_factory.mktemp("sw") / "world", seed=0, image_size=32, sizes=COUNTS,
                                video_frames=4)  # fmt: skip


@pytest.mark.parametrize("task,name", SETS)
def test_generated_eval_set_runs(world, task, name, fake_model):
    results = evaluate(fake_model, task, world / "eval" / name, shots=[0, 2], selection=["random", "rices"],
                       trials=1, limit=2, progress=False)  # fmt: skip
    assert results and all(r["n"] == 2 and r["dataset"] == name for r in results)
    if task == "video-qa":
        prompts = [t for call in fake_model.generate_calls for t in call]
        assert prompts and all(t.count("<image>") in (1, 3) for t in prompts)


def test_generated_videos_decode(world):
    from fewshot_eval.datasets import load_task_data

    _, query = load_task_data("video-qa", world / "eval" / "videoqa")
    frames = load_media(query.examples[0])
    assert isinstance(frames, list) and len(frames) == 12 and frames[0].size == (32, 32)  # 4 s at 3 FPS
