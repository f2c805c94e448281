"""Fixtures for fewshot_eval: tiny datasets on disk in every supported format, and the fake model of
fewshot_helpers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fewshot_helpers import COLOURS, FakeModel, write_image


@pytest.fixture
def fake_model():
    return FakeModel()


def _caption_variants(colour: str) -> list[str]:
    return [f"A {colour} square.", f"a {colour} square on white", f"The square is {colour}.",
            f"A plain {colour} square", f"{colour.capitalize()} square, nothing else."]  # fmt: skip


@pytest.fixture(scope="session")
def coco_dir(tmp_path_factory) -> Path:
    """Karpathy JSON: 12 train, 4 val, 8 test images; the caption names the image's colour."""
    root = tmp_path_factory.mktemp("coco")
    images, n = [], 0
    for split, per_colour in (("train", 3), ("val", 1), ("test", 2)):
        for colour in COLOURS:
            for j in range(per_colour):
                n += 1
                write_image(root / "images" / f"{n:06d}.png", colour, jitter=j * 3)
                images.append({"filepath": "images", "filename": f"{n:06d}.png", "imgid": n, "cocoid": n,
                               "split": split, "sentences": [{"raw": s} for s in _caption_variants(colour)]})  # fmt: skip
    (root / "dataset_coco.json").write_text(json.dumps({"images": images, "dataset": "coco"}))
    return root


@pytest.fixture(scope="session")
def vqa_dir(tmp_path_factory) -> Path:
    """VQAv2 layout: 'what colour is the square?' with 10 answers (8 right, 2 noisy)."""
    root = tmp_path_factory.mktemp("vqav2")
    qid = 0
    for split, per_colour in (("train", 3), ("val", 2)):
        questions, annotations = [], []
        for colour in COLOURS:
            for j in range(per_colour):
                qid += 1
                image_id = qid * 7
                write_image(root / "images" / f"{image_id:012d}.png", colour, jitter=j * 3)
                questions.append({"image_id": image_id, "question": "What colour is the square?", "question_id": qid})
                answers = [colour] * 8 + ["white", f"a {colour}"]
                annotations.append({"question_id": qid, "image_id": image_id, "question_type": "what color",
                                    "answer_type": "other", "multiple_choice_answer": colour,
                                    "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
                                                for i, a in enumerate(answers)]})  # fmt: skip
        (root / f"{split}_questions.json").write_text(json.dumps({"questions": questions}))
        (root / f"{split}_annotations.json").write_text(json.dumps({"annotations": annotations}))
    return root


@pytest.fixture(scope="session")
def classify_dir(tmp_path_factory) -> Path:
    """Class folders train/<colour>/ (3 each) and val/<colour>/ (2 each) + classes.json."""
    root = tmp_path_factory.mktemp("classify")
    for split, per_colour in (("train", 3), ("val", 2)):
        for colour in COLOURS:
            for j in range(per_colour):
                write_image(root / split / colour / f"{j:03d}.png", colour, jitter=j * 3)
    (root / "classes.json").write_text(json.dumps(list(COLOURS)))
    return root


@pytest.fixture(scope="session")
def video_dir(tmp_path_factory) -> Path:
    """Video sets as frame folders: captions in vtp-like rows and QA rows in videoqa layout."""
    root = tmp_path_factory.mktemp("video")
    n = 0
    for split, per_colour in (("train", 2), ("val", 1)):
        cap_rows, qa_rows = [], []
        for colour in COLOURS:
            for _ in range(per_colour):
                for f in range(3):
                    write_image(root / "videos" / f"{n:06d}" / f"{f:02d}.png", colour, jitter=f * 2)
                cap_rows.append({"video": f"videos/{n:06d}", "text": f"A {colour} square stays still."})
                qa_rows.append({"video": f"videos/{n:06d}", "question": "What colour is the square?",
                                "answers": [colour] * 10, "question_id": n})  # fmt: skip
                n += 1
        (root / "caption").mkdir(exist_ok=True)
        (root / "qa").mkdir(exist_ok=True)
        (root / "caption" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in cap_rows))
        (root / "qa" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in qa_rows))
    # rows name videos relative to their file's folder
    for sub in ("caption", "qa"):
        (root / sub / "videos").symlink_to(root / "videos")
    return root


@pytest.fixture
def make_fake():
    return FakeModel


@pytest.fixture
def loads(monkeypatch, make_fake):
    """The fake models the CLI loads (none when it stops before loading): ``cli.load_model`` replaced, and the
    pre-load token counter switched off."""
    from fewshot_eval import cli

    made = []
    monkeypatch.setattr(cli, "load_model", lambda *a, **k: made.append(make_fake()) or made[-1])
    monkeypatch.setattr(cli, "load_token_counter", lambda model_dir: None)
    return made
