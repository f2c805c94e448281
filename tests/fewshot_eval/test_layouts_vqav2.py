"""VQAv2 in its real layout: COCO's per-split image folders (train2014/, val2014/, test2015/ with COCO file
names) found by one template, a template per split or ``coco``; test-dev (questions only) written as the
evaluation server's result file instead of scored; the files that cannot be a pair refused with one line."""

from __future__ import annotations

import json
import shutil

import pytest
from fewshot_helpers import COLOURS, write_image

from fewshot_eval import cli
from fewshot_eval.datasets import DataError, load_task_data
from fewshot_eval.evaluate import prepare_data
from fewshot_eval.scoring import score_predictions

COCO_FILES = {"train": ("train2014", "train2014"), "val": ("val2014", "val2014"), "test": ("test2015", "test2015"),
              "test-dev": ("test2015", "test-dev2015")}  # split -> (image folder, data subtype)  # fmt: skip
TEST_DEV_IDS = (1, 3, 4)  # of the 6 test2015 questions: test-dev is a subset of test-std


def _questions(subtype: str, rows: list[dict]) -> dict:
    return {"info": {}, "task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": subtype, "questions": rows}


def _write_split(root, split: str, n: int, annotated: bool, base: int) -> list[dict]:
    folder, subtype = COCO_FILES[split]
    questions, annotations = [], []
    for i in range(n):
        colour = list(COLOURS)[i % len(COLOURS)]
        image_id = base + i
        write_image(root / folder / f"COCO_{folder}_{image_id:012d}.jpg", colour, jitter=i)
        qid = image_id * 1000 + 5
        questions.append({"image_id": image_id, "question": "What colour is the square?", "question_id": qid})
        annotations.append({"question_id": qid, "image_id": image_id, "multiple_choice_answer": colour,
                            "answers": [{"answer": colour, "answer_id": k + 1} for k in range(10)]})  # fmt: skip
    (root / f"v2_OpenEnded_mscoco_{subtype}_questions.json").write_text(json.dumps(_questions(subtype, questions)))
    if annotated:
        (root / f"v2_mscoco_{subtype}_annotations.json").write_text(json.dumps({"annotations": annotations}))
    return questions


@pytest.fixture(scope="module")
def vqav2(tmp_path_factory):
    """VQAv2 as downloaded: v2_* question / annotation files, COCO images in train2014/ val2014/ test2015/."""
    root = tmp_path_factory.mktemp("vqav2_real")
    _write_split(root, "train", 8, True, base=100)
    _write_split(root, "val", 4, True, base=500)
    test = _write_split(root, "test", 6, False, base=900)
    dev = [q for i, q in enumerate(test) if i in TEST_DEV_IDS]
    (root / "v2_OpenEnded_mscoco_test-dev2015_questions.json").write_text(json.dumps(_questions("test-dev2015", dev)))
    return root


def _copy(vqav2, tmp_path):
    root = tmp_path / "vqav2"
    shutil.copytree(vqav2, root)
    return root


def _one_line(e: pytest.ExceptionInfo) -> str:
    assert "\n" not in str(e.value)
    return str(e.value)


@pytest.mark.parametrize("template", [
    "coco",
    "train=train2014/COCO_train2014_{image_id:012d}.jpg,val=val2014/COCO_val2014_{image_id:012d}.jpg",
    "{split}2014/COCO_{split}2014_{image_id:012d}.jpg",
])  # fmt: skip
def test_per_split_image_roots(template, vqav2):
    td = prepare_data("vqa", vqav2, shots=[2], image_template=template)  # every image opened or checked
    assert (len(td.support), len(td.query)) == (8, 4) and td.query.scored
    assert td.support.source.name == "v2_OpenEnded_mscoco_train2014_questions.json"
    assert {e.media.parent.name for e in td.support.examples} == {"train2014"}
    assert {e.media.parent.name for e in td.query.examples} == {"val2014"}
    ex = td.query.examples[0]
    assert ex.media.name == f"COCO_val2014_{int(ex.id) // 1000:012d}.jpg" and ex.media.is_file()


def test_an_image_root_missing_for_one_split_names_the_split_and_the_folder(vqav2, tmp_path):
    root = _copy(vqav2, tmp_path)
    shutil.rmtree(root / "val2014")
    with pytest.raises(DataError) as e:
        load_task_data("vqa", root, image_template="coco")
    msg = _one_line(e)
    assert "split 'val'" in msg and str(root / "val2014") in msg and "--image-template" in msg
    with pytest.raises(DataError) as e:  # a per-split template without the split asked for
        load_task_data("vqa", vqav2, image_template="train=train2014/COCO_train2014_{image_id:012d}.jpg")
    assert "no template for split 'val'" in _one_line(e)
    with pytest.raises(DataError) as e:
        load_task_data("vqa", vqav2, image_template="train=a/{image_id}.jpg,val")
    assert "'val' is not split=template" in _one_line(e)


def test_test_dev_loads_without_answers_and_refuses_to_be_scored(vqav2):
    support, query = load_task_data("vqa", vqav2, split="test-dev", image_template="coco")
    assert not query.annotated and not query.scored and len(query) == len(TEST_DEV_IDS)
    assert query.server_questions.name == "v2_OpenEnded_mscoco_test2015_questions.json"
    assert {e.media.parent.name for e in query.examples} == {"test2015"} and support.annotated
    with pytest.raises(DataError) as e:
        score_predictions("vqa", {ex.id: {"prediction": "red"} for ex in query.examples}, query)
    assert "test-dev" in _one_line(e) and "server" in str(e.value)
    with pytest.raises(DataError) as e:  # asked to score
        load_task_data("vqa", vqav2, split="test-dev", image_template="coco", score=True)
    assert "test-dev2015_questions.json" in _one_line(e) and "no annotations to score" in str(e.value)
    with pytest.raises(DataError) as e:  # demonstrations need answers
        load_task_data("vqa", vqav2, split="val", support_split="test-dev", image_template="coco")
    assert "split 'test-dev' has no annotations file" in _one_line(e) and "--support-split" in str(e.value)
    with pytest.raises(DataError) as e:  # only VQAv2 has a server file here
        load_task_data("okvqa", vqav2, split="test-dev", image_template="coco")
    assert "task 'okvqa' expects its annotations" in _one_line(e)
    _, test_std = load_task_data("vqa", vqav2, split="test", image_template="coco")  # test2015, not test-dev2015
    assert len(test_std) == 6 and test_std.server_questions is None


def test_annotations_that_are_not_the_questions_pair_are_one_line(vqav2, tmp_path):
    root = _copy(vqav2, tmp_path)
    afile = root / "v2_mscoco_val2014_annotations.json"
    anns = json.loads(afile.read_text())
    anns["annotations"].append(dict(anns["annotations"][0], question_id=777))  # a question id the questions lack
    afile.write_text(json.dumps(anns))
    with pytest.raises(DataError) as e:
        load_task_data("vqa", root, image_template="coco")
    msg = _one_line(e)
    assert msg.startswith(str(afile)) and "777" in msg and "v2_OpenEnded_mscoco_val2014_questions.json" in msg
    for ann in anns["annotations"]:
        ann["answers"] = [{"answer_id": 1}]
    anns["annotations"].pop()
    afile.write_text(json.dumps(anns))
    with pytest.raises(DataError) as e:
        load_task_data("vqa", root, image_template="coco")
    assert _one_line(e).startswith(str(afile)) and "no annotation has answer texts" in str(e.value)


def test_a_test_dev_question_missing_from_the_test_questions_is_one_line(vqav2, tmp_path):
    root = _copy(vqav2, tmp_path)
    dev_file = root / "v2_OpenEnded_mscoco_test-dev2015_questions.json"
    dev = json.loads(dev_file.read_text())
    dev["questions"][0]["question_id"] = 4242
    dev_file.write_text(json.dumps(dev))
    with pytest.raises(DataError) as e:
        load_task_data("vqa", root, split="test-dev", image_template="coco")
    msg = _one_line(e)
    assert "v2_OpenEnded_mscoco_test2015_questions.json" in msg and "4242" in msg


def _run(root, out, *extra):
    return cli.main(["run", "--model", str(out.parent / "model"), "--task", "vqa", "--data", str(root),
                     "--image-template", "coco", "--shots", "0", "2", "--trials", "1", "--out", str(out),
                     "--no-progress", *extra])  # fmt: skip


def test_a_test_dev_run_writes_the_servers_result_files(vqav2, tmp_path, loads, capsys):
    (tmp_path / "model").mkdir()
    out = tmp_path / "out"
    assert _run(vqav2, out, "--split", "test-dev") == 0
    files = sorted(p.name for p in (out / "server").iterdir())
    assert files == [f"vqa_OpenEnded_mscoco_test-dev2015_random-{k}shot-ens1-trial0_results.json" for k in (0, 2)]
    test_std = json.loads((vqav2 / "v2_OpenEnded_mscoco_test2015_questions.json").read_text())["questions"]
    dev_ids = {test_std[i]["question_id"] for i in TEST_DEV_IDS}
    for name in files:
        answers = json.loads((out / "server" / name).read_text())
        # every test2015 question once, integer ids; test-dev's answered, the others empty
        assert sorted(a["question_id"] for a in answers) == sorted(q["question_id"] for q in test_std)
        assert all(type(a["question_id"]) is int and isinstance(a["answer"], str) for a in answers)
        assert {a["question_id"] for a in answers if a["answer"]} == dev_ids
        assert {a["answer"] for a in answers if a["answer"]} <= set(COLOURS)  # the fake copies a demonstration
    assert len(loads[0].generate_calls) == 2  # predicted, once per shot count
    assert json.loads((out / "results.json").read_text())["results"] == []  # nothing scored
    capsys.readouterr()
    assert _run(vqav2, tmp_path / "out2", "--split", "test-dev", "--score") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no annotations to score" in err and "Traceback" not in err


def test_no_score_writes_the_server_file_of_an_annotated_split(vqav2, tmp_path, loads):
    (tmp_path / "model").mkdir()
    out = tmp_path / "out"
    assert _run(vqav2, out, "--no-score", "--shots", "2") == 0
    (name,) = [p.name for p in (out / "server").iterdir()]
    assert name == "vqa_OpenEnded_mscoco_val2014_random-2shot-ens1-trial0_results.json"
    assert len(json.loads((out / "server" / name).read_text())) == 4
