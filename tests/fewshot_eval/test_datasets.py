"""Loaders read every supported layout; wrong formats, missing media and too many shots fail with one line
naming the file or value, before any model work."""

import json
import shutil

import pytest

from fewshot_eval.datasets import DataError, load_task_data
from fewshot_eval.evaluate import prepare_data
from fewshot_eval.media import load_media


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_karpathy(coco_dir):
    support, query = load_task_data("caption", coco_dir)
    assert (len(support), len(query), query.split) == (12, 8, "test")
    ex = query.examples[0]
    assert ex.target == ex.references[0] and len(ex.references) == 5 and ex.media.is_file()
    _, val = load_task_data("caption", coco_dir / "dataset_coco.json", split="val")
    assert len(val) == 4


def test_vqa(vqa_dir):
    support, query = load_task_data("vqa", vqa_dir)
    assert (len(support), len(query)) == (12, 8)
    ex = query.examples[0]
    assert ex.question == "What colour is the square?" and len(ex.references) == 10
    assert ex.target == "red" and ex.media.name == f"{int(ex.id) * 7:012d}.png"


def test_class_folders_and_jsonl(classify_dir, tmp_path):
    support, query = load_task_data("classify", classify_dir)
    assert support.class_names == ["red", "green", "blue", "yellow"] and len(query) == 8
    assert {e.target for e in query.examples} == set(support.class_names)
    # the same data as JSON Lines with integer labels, images moved out of class folders
    root = tmp_path / "jl"
    for split in ("train", "val"):
        rows = []
        for p in sorted((classify_dir / split).rglob("*.png")):
            dest = root / "imgs" / f"{split}_{p.parent.name}_{p.name}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(p, dest)
            rows.append({"image": f"imgs/{dest.name}", "label": support.class_names.index(p.parent.name)})
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    shutil.copy(classify_dir / "classes.json", root / "classes.json")
    s2, q2 = load_task_data("classify", root)
    assert s2.class_names == support.class_names
    assert sorted(e.target for e in q2.examples) == sorted(e.target for e in query.examples)
    assert all(e.media.is_file() and e.target in e.media.name for e in q2.examples)


def test_video_sets(video_dir):
    support, query = load_task_data("video-caption", video_dir / "caption")
    assert len(support) == 8 and query.examples[0].target.startswith("A red square")
    frames = load_media(query.examples[0])
    assert isinstance(frames, list) and len(frames) == 9  # 3 s at 3 FPS (the paper's inference rate)
    _, qa = load_task_data("video-qa", video_dir / "qa")
    assert qa.examples[0].question and len(qa.examples[0].references) == 10


@pytest.mark.parametrize(
    "task,path,pattern",
    [("caption", "vqa", "no dataset_\\*.json .*VQA questions"),
     ("caption", "vqa/val_questions.json", "looks like a VQA questions file, but task 'caption'"),
     ("vqa", "coco", "no train_questions.json"),
     ("video-caption", "video/qa", "looks like a video-QA file"),
     ("video-qa", "video/caption", "looks like a captioning file"),
     ("classify", "coco", "neither train/ nor train.jsonl")],
)  # fmt: skip
def test_task_format_mismatch(task, path, pattern, coco_dir, vqa_dir, video_dir):
    roots = {"coco": coco_dir, "vqa": vqa_dir, "video": video_dir}
    head, _, rest = path.partition("/")
    with pytest.raises(DataError) as e:
        load_task_data(task, roots[head] / rest if rest else roots[head])
    assert __import__("re").search(pattern, _one_line(e))


def test_missing_and_unreadable_images_fail_before_work(coco_dir, tmp_path):
    root = tmp_path / "coco"
    shutil.copytree(coco_dir, root)
    data = json.loads((root / "dataset_coco.json").read_text())
    test_file = next(im["filename"] for im in data["images"] if im["split"] == "test")
    (root / "images" / test_file).unlink()
    with pytest.raises(DataError) as e:
        prepare_data("caption", root, shots=[0])
    assert test_file in _one_line(e) and "missing" in str(e.value)
    (root / "images" / test_file).write_bytes(b"not a png")
    with pytest.raises(DataError) as e:
        prepare_data("caption", root, shots=[0])
    assert "not a readable image" in _one_line(e) and test_file in str(e.value)


def test_more_shots_than_support(coco_dir):
    with pytest.raises(DataError) as e:
        prepare_data("caption", coco_dir, shots=[4, 16])
    assert "16 shots" in _one_line(e) and "holds 12" in str(e.value)
    prepare_data("caption", coco_dir, shots=[4, 12])


def test_unknown_task_and_bad_limit(coco_dir):
    with pytest.raises(DataError, match="unknown task 'retrieval'"):
        prepare_data("retrieval", coco_dir)
    with pytest.raises(DataError, match="--limit"):
        prepare_data("caption", coco_dir, limit=0)
