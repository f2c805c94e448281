"""ShapesWorld generator: determinism, loadability, and captions/answers that agree with the pixels."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import shapesworld as sw
from shapesworld import m3w_pages

SIZE = 40
# small, but enough rows that every caption template and question type shows up
COUNTS = {"ltip_train": 40, "align_train": 60, "vtp_train": 8, "m3w_train": 40, "vqa_train": 40}
DIRECTION_WORDS = {"left": {"left", "leftwards"}, "right": {"right", "rightwards"},
                   "up": {"up", "upwards", "top"}, "down": {"down", "downwards", "bottom"}}
TOOL = Path(__file__).resolve().parents[2] / "tools" / "shapesworld"


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return sw.generate(tmp_path_factory.mktemp("sw") / "world", seed=0, image_size=SIZE, sizes=COUNTS)


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def _frames(path: Path) -> list[np.ndarray]:
    if path.is_dir():
        return [_pixels(f) for f in sorted(path.glob("*.png"))]
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24").astype(int) for f in container.decode(video=0)]


def _nearest_colour(rgb) -> str:
    return min(sw.COLOURS, key=lambda c: sum((int(a) - int(b)) ** 2 for a, b in zip(sw.COLOURS[c], rgb)))


def _centre(img: np.ndarray, x: float, y: float) -> np.ndarray:
    side = img.shape[0]
    return img[int(y * side), int(x * side)]


def _column_of(img: np.ndarray, rgb, tol: int = 0) -> float:
    """Mean column (0 = left edge) of the pixels of one colour, as a fraction of the width."""
    mask = np.abs(img - np.array(rgb)).max(axis=-1) <= tol
    assert mask.any(), f"no pixel of colour {rgb} in the image"
    return float(np.nonzero(mask)[1].mean() + 0.5) / img.shape[1]


def _check_scene_pixels(img: np.ndarray, scene: dict, tol: int = 0) -> None:
    """Plain objects have their exact colour at their centre and their pixels centred on their x."""
    assert img.shape[:2] == (SIZE, SIZE)
    objs = scene["objects"]
    assert objs[0]["r"] == max(o["r"] for o in objs), "the first object must be the largest"
    for o in objs:
        if o["texture"] != "plain":
            continue
        assert np.abs(_centre(img, o["x"], o["y"]) - o["rgb"]).max() <= tol
        assert _nearest_colour(o["rgb"]) == o["colour"]
        if sum(np.array_equal(p["rgb"], o["rgb"]) for p in objs) == 1:
            # x grows rightwards in the pixels too (symmetric shapes: centroid ~ centre; triangle/star off by < r)
            assert abs(_column_of(img, o["rgb"], tol) - o["x"]) < max(o["r"] / 2, 2.5 / SIZE)


# ------------------------------------------------------------------------------------ determinism


def test_same_seed_gives_identical_files_across_processes(world, tmp_path):
    again = tmp_path / "again"
    cmd = [sys.executable, str(TOOL), "--out", str(again), "--seed", "0", "--image-size", str(SIZE), "--quiet"]
    cmd += [f"--count={k}={v}" for k, v in COUNTS.items()]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    first, second = _hashes(world), _hashes(again)
    assert len(first) > 200 and first == second


def test_different_seed_gives_different_files(world, tmp_path):
    other = sw.generate(tmp_path / "other", seed=1, image_size=SIZE, sizes=COUNTS)
    a, b = _hashes(world), _hashes(other)
    shared = [k for k in a.keys() & b.keys() if k.endswith(".png")]  # m3w / vqa file names depend on the draw
    assert len(shared) > 100
    assert sum(a[k] != b[k] for k in shared) > 0.9 * len(shared)
    assert a["ltip/train.jsonl"] != b["ltip/train.jsonl"]


def test_items_do_not_depend_on_other_counts(world, tmp_path):
    fewer = sw.generate(tmp_path / "fewer", seed=0, image_size=SIZE, sizes={**COUNTS, "ltip_train": 3, "align_train": 0})
    assert _jsonl(fewer / "ltip" / "train.jsonl") == _jsonl(world / "ltip" / "train.jsonl")[:3]
    assert (fewer / "vtp" / "train.jsonl").read_bytes() == (world / "vtp" / "train.jsonl").read_bytes()


def test_frame_folder_videos_are_deterministic(tmp_path):
    only = {k: 0 for k in sw.PRESETS["small"]} | {"vtp_train": 3, "videoqa_val": 2}
    a = sw.generate(tmp_path / "a", image_size=SIZE, sizes=only, video_frames=5, video_format="frames")
    b = sw.generate(tmp_path / "b", image_size=SIZE, sizes=only, video_frames=5, video_format="frames")
    assert _hashes(a) == _hashes(b)
    for rec in _jsonl(a / "vtp" / "train.jsonl"):
        folder = a / "vtp" / rec["video"]
        assert folder.is_dir() and [p.name for p in sorted(folder.iterdir())] == [f"{t:02d}.png" for t in range(5)]
        _check_video(folder, rec["scene"], tol=0)


# ---------------------------------------------------------------------------------- loadability


def test_every_jsonl_loads_with_datasets_and_its_media_open(world, tmp_path):
    datasets = pytest.importorskip("datasets")
    files = sorted(world.rglob("*.jsonl"))
    assert {str(f.relative_to(world)) for f in files} >= {
        "ltip/train.jsonl", "ltip/val.jsonl", "align/train.jsonl", "vtp/train.jsonl", "vtp/val.jsonl",
        "m3w/train.jsonl", "eval/vqav2/train_scenes.jsonl", "eval/classify/train.jsonl",
        "eval/colour/val.jsonl", "eval/videoqa/train.jsonl", "eval/videoqa/val.jsonl"}
    for f in files:
        ds = datasets.load_dataset("json", data_files=str(f), split="train", cache_dir=str(tmp_path / "hf"))
        rows = _jsonl(f)
        assert len(ds) == len(rows) > 0, f
        for row in ds:
            assert row.get("scene") is not None or row.get("scenes") is not None, f"{f}: record without scene"
            for key in ("image", "video"):
                if row.get(key):
                    media = f.parent / row[key]
                    if key == "image":
                        Image.open(media).verify()
                    else:
                        assert len(_frames(media)) == row["scene"]["frames"]
            for image in row.get("images") or []:
                if image is not None:
                    Image.open(f.parent / image).verify()


def test_world_json_is_written_last_and_describes_options(world):
    info = json.loads((world / "world.json").read_text())
    assert info["options"]["seed"] == 0 and info["options"]["image_size"] == SIZE
    assert info["options"]["counts"]["ltip_train"] == COUNTS["ltip_train"]
    assert set(info["vocabulary"]["colours"]) == set(sw.COLOURS) and len(info["vocabulary"]["shapes"]) >= 5
    newest = max(p.stat().st_mtime_ns for p in world.rglob("*") if p.is_file() and p.name != "world.json")
    assert (world / "world.json").stat().st_mtime_ns >= newest
    assert not list(world.rglob(".shapesworld-partial"))
    assert info["totals"]["images"] == len([p for p in world.rglob("*.png") if p.parent.parent.name != "videos"])


# ------------------------------------------------------------------------ captions match the pixels


def test_ltip_captions_name_the_main_object_and_agree_with_pixels(world):
    rows = _jsonl(world / "ltip" / "train.jsonl") + _jsonl(world / "ltip" / "val.jsonl")
    textures = Counter()
    for row in rows:
        scene, text = row["scene"], row["text"].lower()
        main = scene["objects"][0]
        assert main["colour"] in text and main["shape"] in text, row["text"]
        _check_scene_pixels(_pixels(world / "ltip" / row["image"]), scene)
        textures.update(o["texture"] for o in scene["objects"])
        _check_left_right_words(row["text"], scene)
    assert set(textures) == set(sw.TEXTURES)
    assert len({len(r["scene"]["objects"]) for r in rows}) == 3
    assert len({r["text"].split()[0] for r in rows}) >= 4, "captions should vary their word order"


def _check_left_right_words(text: str, scene: dict) -> None:
    """Every sentence that says left/right agrees with the x of the object it talks about."""
    main, others = scene["objects"][0], scene["objects"][1:]
    for sentence in re.split(r"(?<=\.) ", text.lower()):
        words = re.findall(r"[a-z]+", sentence)
        side = "left" if "left" in words else "right" if "right" in words else None
        if side is None:
            continue
        if "it" in words or "its" in words:  # about another object, relative to the main one
            about = [o for o in others if o["colour"] in words
                     and any(s in sentence for s in sw.SHAPE_SYNONYMS[o["shape"]])]
            assert about, sentence
            assert any((o["x"] < main["x"]) == (side == "left") for o in about), (sentence, scene)
        else:  # the main object's absolute position
            assert (main["x"] < 0.5) == (side == "left"), (sentence, main)


def test_relative_left_right_follows_pixel_columns():
    seen = Counter()
    for i in range(300):
        scene = sw.sample_scene(np.random.default_rng([7, i]), n_objects=2)
        if len(scene["objects"]) < 2:
            continue
        main, other = scene["objects"]
        rel = sw.relation(main, other)
        if rel not in ("to the left of", "to the right of") or main["texture"] != "plain" or other["texture"] != "plain":
            continue
        img = np.asarray(sw.render_scene(scene, SIZE)).astype(int)
        left_in_pixels = _column_of(img, other["rgb"]) < _column_of(img, main["rgb"])
        assert left_in_pixels == (rel == "to the left of"), scene
        seen[rel] += 1
    assert seen["to the left of"] > 5 and seen["to the right of"] > 5


def test_align_is_short_and_noisy(world):
    rows = _jsonl(world / "align" / "train.jsonl")
    noise = Counter(tag for r in rows for tag in r["noise"].split("+"))
    assert noise["unrelated"] >= 2 and noise["typo"] >= 2 and noise["dropped"] >= 2 and noise["clean"] >= 2
    assert max(len(r["text"].split()) for r in rows) <= 10
    for r in rows:
        main = r["scene"]["objects"][0]
        text = r["text"].lower().replace("_", " ")
        if r["noise"] == "clean":
            assert any(c in text for c in sw.COLOUR_SYNONYMS[main["colour"]])
            assert any(s in text for s in sw.SHAPE_SYNONYMS[main["shape"]])
        if r["noise"] == "unrelated":
            assert not any(s in text for s in sw.SHAPE_SYNONYMS[main["shape"]])
        _check_scene_pixels(_pixels(world / "align" / r["image"]), r["scene"])


def _check_video(path: Path, scene: dict, tol: int) -> None:
    frames = _frames(path)
    assert len(frames) == scene["frames"] and frames[0].shape[:2] == (SIZE, SIZE)
    main, mo = scene["objects"][0], scene["motion"][0]
    if main["texture"] == "plain":
        for t, img in enumerate(frames):
            centre = _centre(img, main["x"] + mo["dx"] * t, main["y"] + mo["dy"] * t)
            assert np.abs(centre - main["rgb"]).max() <= tol, (t, centre, main)
    for o, t0 in zip(scene["objects"][1:], scene["appears"][1:]):
        if o["texture"] == "plain":
            present = [np.abs(_centre(img, o["x"], o["y"]) - o["rgb"]).max() <= tol for img in frames]
            assert present == [t >= t0 for t in range(len(frames))], (present, t0)


def test_vtp_captions_and_motion_match_the_frames(world):
    tol = 0  # PNG frames are exact; mp4 is lossless H.264 4:4:4 up to RGB<->YUV rounding, mpeg4 is lossy
    if json.loads((world / "world.json").read_text())["options"]["video_format"] == "mp4":
        tol = 3 if sw.render._video_codec()[0] == "libx264" else 60
    rows = _jsonl(world / "vtp" / "train.jsonl") + _jsonl(world / "vtp" / "val.jsonl")
    for row in rows:
        scene, text = row["scene"], row["text"].lower()
        main, mo = scene["objects"][0], scene["motion"][0]
        motion, *rest = re.split(r"(?<=\.) ", text)
        assert main["colour"] in motion and main["shape"] in motion, text
        said = set(re.findall(r"[a-z]+", motion)) & set().union(*DIRECTION_WORDS.values())
        assert said and said <= DIRECTION_WORDS[mo["direction"]], (motion, mo)
        for sentence in rest:  # the second object: its own position words
            other = scene["objects"][1]
            assert other["colour"] in sentence and other["shape"] in sentence
            for side in ("left", "right"):
                if side in sentence:
                    assert (other["x"] < 0.5) == (side == "left"), (sentence, other)
        _check_video(world / "vtp" / row["video"], scene, tol)
        frames = _frames(world / "vtp" / row["video"])
        if main["texture"] == "plain" and sum(np.array_equal(o["rgb"], main["rgb"]) for o in scene["objects"]) == 1:
            start, end = _column_of(frames[0], main["rgb"], tol), _column_of(frames[-1], main["rgb"], tol)
            if mo["direction"] in ("left", "right"):
                assert (end > start) == (mo["direction"] == "right")


def test_m3w_documents_follow_the_obelics_layout(world):
    rows = _jsonl(world / "m3w" / "train.jsonl")
    n_images, kinds = Counter(), Counter()
    for doc in rows:
        texts, images, scenes = doc["texts"], doc["images"], doc["scenes"]
        assert len(texts) == len(images) == len(scenes)
        assert all((t is None) != (i is None) for t, i in zip(texts, images))
        assert all((i is None) == (s is None) for i, s in zip(images, scenes))
        n = sum(i is not None for i in images)
        n_images[n] += 1
        kinds[doc["page"]["kind"]] += 1
        assert 1 <= n <= 5  # the paper's (and the loader's) five images per sequence
        for k, image in enumerate(images):
            if image is not None:
                assert texts[k + 1] is not None  # every image is followed by its text
                _check_scene_pixels(_pixels(world / "m3w" / image), scenes[k])
                if doc["page"]["kind"] == "descriptions":  # the text right after an image describes it
                    main = scenes[k]["objects"][0]
                    assert main["colour"] in texts[k + 1].lower() and main["shape"] in texts[k + 1].lower()
    assert len(n_images) >= 3
    assert set(kinds) == set(m3w_pages.PAGE_KINDS), kinds  # half structured by default: every kind shows up


def _after_images(doc: dict) -> list[tuple[dict, str]]:
    """(scene, the text right after it) for every image of a page."""
    return [(doc["scenes"][k], doc["texts"][k + 1]) for k, im in enumerate(doc["images"]) if im is not None]


def test_a_page_local_name_is_reused_whenever_its_kind_appears_again(world):
    pages = [d for d in _jsonl(world / "m3w" / "train.jsonl") if d["page"]["kind"] == "names"]
    assert len(pages) >= 3
    repeats = 0
    for doc in pages:
        page, pairs = doc["page"], _after_images(doc)
        naming, by = page["names"], page["by"]
        assert len(set(naming.values())) == len(naming) >= 2  # one name per kind, distinct within the page
        seen = []
        for scene, text in pairs:
            kind = scene["objects"][0][by]
            name = naming[kind]
            assert text == page["format"].format(name=name, Name=name.capitalize())
            others = [n for k, n in naming.items() if k != kind]
            assert not any(re.search(rf"\b{o}\b", text, re.IGNORECASE) for o in others)
            repeats += kind in seen
            seen.append(kind)
        assert seen[: len(naming)] == list(naming)  # every kind is introduced before it repeats
        assert len(seen) > len(naming)  # and at least one repeats: its name is predictable only from the page
        assert all(n in m3w_pages.TRAIN_NAMES for n in naming.values())
    assert repeats >= len(pages)


def test_format_and_quiz_pages_keep_one_format_that_follows_the_image(world):
    pages = [d for d in _jsonl(world / "m3w" / "train.jsonl") if d["page"]["kind"] in ("format", "qa")]
    assert {d["page"]["kind"] for d in pages} == {"format", "qa"}
    for doc in pages:
        page = doc["page"]
        for i, (scene, text) in enumerate(_after_images(doc)):
            main = scene["objects"][0]
            if page["kind"] == "format":
                fields = {"colour": main["colour"], "shape": main["shape"], "size": main["size"],
                          "COLOUR": main["colour"].upper(), "SHAPE": main["shape"].upper(),
                          "Colour": main["colour"].capitalize(), "Shape": main["shape"].capitalize()}
                assert text == page["format"].format(i=i + 1, **fields)
            else:
                answer = {"colour": main["colour"], "shape": main["shape"]}.get(
                    page["about"], sw.NUMBER_WORDS[len(scene["objects"])])
                styled = page["style"].format(a=answer, A=answer.upper())
                assert text == page["format"].format(q=page["question"], a=styled)


def test_the_structured_share_is_an_option(tmp_path):
    counts = {k: 0 for k in sw.PRESETS["small"]} | {"m3w_train": 30}
    none = sw.generate(tmp_path / "none", sizes=counts, m3w_structured=0.0)
    every = sw.generate(tmp_path / "all", sizes=counts, m3w_structured=1.0)
    assert {d["page"]["kind"] for d in _jsonl(none / "m3w" / "train.jsonl")} == {"descriptions"}
    assert {d["page"]["kind"] for d in _jsonl(every / "m3w" / "train.jsonl")} == set(m3w_pages.STRUCTURED_KINDS)
    assert json.loads((none / "world.json").read_text())["options"]["m3w_structured"] == 0.0
    with pytest.raises(sw.ShapesWorldError, match="m3w_structured"):
        sw.generate(tmp_path / "bad", sizes=counts, m3w_structured=1.5)


def test_no_evaluation_word_appears_in_any_training_file(world):
    """Evaluation measures reading the prompt, not memory: its nonce words and its prompt formats' words are
    never seen in training."""
    from fewshot_eval.nonce import EVAL_NONCE_WORDS
    from fewshot_eval.prompts import DEFAULT_TEMPLATES

    # the prompts of the tasks ShapesWorld has sets for (hateful-memes, not one of them, reads "an image with: ...")
    format_words = {w.lower() for task, t in DEFAULT_TEMPLATES.items() if task != "hateful-memes"
                    for w in re.findall(r"([A-Za-z]+):", t)}  # fmt: skip
    assert format_words >= {"output", "question", "answer"}
    banned = {w.lower() for w in EVAL_NONCE_WORDS} | format_words
    assert not banned & set(m3w_pages.TRAIN_NAMES)
    words = Counter()
    for path in [*world.glob("*/train.jsonl"), *world.glob("*/val.jsonl")]:  # ltip, align, vtp, m3w
        for row in _jsonl(path):  # the text a model trains on (not the records' keys)
            for text in [row.get("text"), *row.get("texts", [])]:
                words.update(re.findall(r"[a-z]+", (text or "").lower()))
    assert words["the"] > 0 and sum(words[n] for n in m3w_pages.TRAIN_NAMES) > 0
    assert not banned & set(words), sorted(banned & set(words))


# -------------------------------------------------------------------------------------- eval sets


def test_coco_karpathy_json(world):
    data = json.loads((world / "eval" / "coco" / "dataset_coco.json").read_text())
    assert data["dataset"] == "coco"
    splits = Counter(e["split"] for e in data["images"])
    assert splits == {"train": 8, "val": 4, "test": 4}
    assert len({e["imgid"] for e in data["images"]}) == len(data["images"])
    for e in data["images"]:
        assert len(e["sentences"]) == 5 and len({s["raw"] for s in e["sentences"]}) >= 4
        main = e["scene"]["objects"][0]
        for s in e["sentences"]:
            assert main["colour"] in s["tokens"] and main["shape"] in s["tokens"], s["raw"]
        _check_scene_pixels(_pixels(world / "eval" / "coco" / e["filepath"] / e["filename"]), e["scene"])


def _expected_vqa_answer(question: str, scene: dict) -> str:
    objs = scene["objects"]
    if m := re.fullmatch(r"What color is the (\w+)\?", question):
        return next(o["colour"] for o in objs if o["shape"] == m[1])
    if m := re.fullmatch(r"What shape is the (\w+) object\?", question):
        return next(o["shape"] for o in objs if o["colour"] == m[1])
    if question.startswith("How many"):
        return str(len(objs))
    if m := re.fullmatch(r"Is there an? (\w+) (\w+)\?", question):
        return "yes" if any((o["colour"], o["shape"]) == (m[1], m[2]) for o in objs) else "no"
    if m := re.fullmatch(r"Is the (\w+) (\w+) on the left or the right\?", question):
        o = next(o for o in objs if (o["colour"], o["shape"]) == (m[1], m[2]))
        return "left" if o["x"] < 0.5 else "right"
    raise AssertionError(f"unexpected question {question!r}")


def test_vqav2_answers_agree_with_the_scene(world):
    root = world / "eval" / "vqav2"
    words = {w: str(n) for n, w in sw.NUMBER_WORDS.items()}
    types, disagreement = Counter(), 0
    for split, n in (("train", 40), ("val", 12)):
        questions = json.loads((root / f"{split}_questions.json").read_text())["questions"]
        annotations = {a["question_id"]: a for a in json.loads((root / f"{split}_annotations.json").read_text())["annotations"]}
        scenes = {s["image_id"]: s["scene"] for s in _jsonl(root / f"{split}_scenes.jsonl")}
        assert len(questions) == n and set(annotations) == {q["question_id"] for q in questions}
        for q in questions:
            ann, scene = annotations[q["question_id"]], scenes[q["image_id"]]
            assert ann["image_id"] == q["image_id"]
            assert (root / f"images/{q['image_id']:012d}.png").is_file()
            expected = _expected_vqa_answer(q["question"], scene)
            assert ann["multiple_choice_answer"] == expected, (q, scene)
            answers = [words.get(a["answer"], a["answer"]) for a in ann["answers"]]
            assert len(answers) == 10 and [a["answer_id"] for a in ann["answers"]] == list(range(1, 11))
            assert Counter(answers).most_common(1)[0] == (expected, answers.count(expected)) and answers.count(expected) >= 6
            disagreement += answers.count(expected) < 10
            types[ann["question_type"]] += 1
        _check_scene_pixels(_pixels(root / f"images/{questions[0]['image_id']:012d}.png"), scenes[questions[0]["image_id"]])
    assert len(types) == 5 and disagreement >= 5


@pytest.mark.parametrize("task,key", [("classify", "shape"), ("colour", "colour")])
def test_class_folders_match_the_scene(world, task, key):
    root = world / "eval" / task
    classes = json.loads((root / "classes.json").read_text())
    assert classes == sorted(sw.SHAPES if task == "classify" else sw.COLOURS)
    for split, per_class in (("train", 2), ("val", 1)):
        assert sorted(p.name for p in (root / split).iterdir()) == classes
        sidecar = _jsonl(root / f"{split}.jsonl")
        assert len(sidecar) == per_class * len(classes)
        for rec in sidecar:
            folder = Path(rec["image"]).parent.name
            assert folder == rec["label"] == rec["scene"]["objects"][0][key]
            img = _pixels(root / rec["image"])
            _check_scene_pixels(img, rec["scene"])
        for folder in (root / split).iterdir():
            assert len(list(folder.glob("*.png"))) == per_class


def test_videoqa_answers_agree_with_the_scene(world):
    for split, n in (("train", 6), ("val", 4)):
        rows = _jsonl(world / "eval" / "videoqa" / f"{split}.jsonl")
        assert len(rows) == n
        for r in rows:
            main, mo = r["scene"]["objects"][0], r["scene"]["motion"][0]
            expected = {"direction": mo["direction"], "speed": mo["speed"], "color": main["colour"],
                        "appears": r["scene"]["objects"][-1]["shape"]}[r["question_type"]]
            assert r["answer"] == expected and len(r["answers"]) == 10
            assert Counter(r["answers"]).most_common(1)[0][0] == expected
            assert (world / "eval" / "videoqa" / r["video"]).exists()


# ------------------------------------------------------------------------------- options and errors


def test_second_run_is_a_no_op_and_other_options_are_refused(world):
    before = (world / "world.json").stat().st_mtime_ns
    assert sw.generate(world, seed=0, image_size=SIZE, sizes=COUNTS) == world
    assert (world / "world.json").stat().st_mtime_ns == before
    with pytest.raises(sw.ShapesWorldError, match="seed.*delete the folder or pick another"):
        sw.generate(world, seed=3, image_size=SIZE, sizes=COUNTS)


@pytest.mark.parametrize("kwargs,match", [
    ({"sizes": {"ltip_train": -1}}, "ltip_train=-1 must be a non-negative integer"),
    ({"sizes": {"ltip_trian": 3}}, "unknown count 'ltip_trian'"),
    ({"image_size": 8}, "image_size=8"),
    ({"counts": "huge"}, "unknown counts preset 'huge'"),
    ({"video_format": "gif"}, "video_format='gif'"),
])
def test_bad_options_are_refused(tmp_path, kwargs, match):
    with pytest.raises(sw.ShapesWorldError, match=match):
        sw.generate(tmp_path / "w", **kwargs)
    assert not (tmp_path / "w").exists()


def test_unusable_output_folders_are_refused(tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(sw.ShapesWorldError, match="cannot write the output folder"):
        sw.generate(a_file / "world")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(sw.ShapesWorldError, match="not an empty folder or a ShapesWorld"):
        sw.generate(foreign)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_cli_reports_user_errors_in_one_line(tmp_path, capsys):
    assert sw.main(["--out", str(tmp_path / "w"), "--count", "vqa_val=-2", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "vqa_val" in err and "Traceback" not in err
    assert sw.main(["--out", str(tmp_path / "w"), "--count", "vqa_val", "--quiet"]) == 2
    assert "KEY=N" in capsys.readouterr().err


def test_cli_writes_then_skips(tmp_path, capsys):
    argv = ["--out", str(tmp_path / "w"), "--image-size", "32", "--video-format", "frames"]
    argv += [f"--count={k}=1" for k in sw.PRESETS["small"]]
    assert sw.main(argv) == 0
    assert "ShapesWorld written to" in capsys.readouterr().out
    assert sw.main(argv) == 0
    assert "already complete" in capsys.readouterr().out


def test_the_package_runs_as_a_folder_and_as_a_module():
    for cmd, cwd in [([sys.executable, str(TOOL), "--help"], None),
                     ([sys.executable, "-m", "shapesworld", "--help"], TOOL.parent)]:
        run = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60)
        assert run.returncode == 0 and "--m3w-structured" in run.stdout, run.stderr


def test_an_interrupted_run_is_cleared_and_redone(tmp_path):
    only = {k: 0 for k in sw.PRESETS["small"]} | {"ltip_train": 2}
    stale = tmp_path / "w.partial"
    stale.mkdir()
    (stale / ".shapesworld-partial").touch()
    (stale / "half-written.png").write_bytes(b"\x89PNG")
    out = sw.generate(tmp_path / "w", image_size=32, sizes=only)
    assert not stale.exists() and not (out / "half-written.png").exists()
    assert len(_jsonl(out / "ltip" / "train.jsonl")) == 2
    foreign = tmp_path / "x.partial"
    foreign.mkdir()
    with pytest.raises(sw.ShapesWorldError, match="not left by this generator"):
        sw.generate(tmp_path / "x", image_size=32, sizes=only)
