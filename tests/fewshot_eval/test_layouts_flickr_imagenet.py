"""Flickr30K in Karpathy's dataset_flickr30k.json with its images in flickr30k-images/, and ImageNet's class
folders named by WordNet ids, named by the CLIP class names shipped as data (fewshot_eval/data/imagenet.json)."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from fewshot_helpers import COLOURS, write_image

from fewshot_eval.datasets import DataError, load_task_data
from fewshot_eval.evaluate import prepare_data
from fewshot_eval.imagenet import imagenet_class_names, imagenet_templates, imagenet_wnids, wnid_names


@pytest.fixture(scope="module")
def flickr30k(tmp_path_factory):
    """Karpathy's Flickr30K file: entries with 'filename' and no 'filepath', images in flickr30k-images/."""
    root = tmp_path_factory.mktemp("flickr30k")
    images = []
    for i, split in enumerate(["train"] * 6 + ["val"] * 2 + ["test"] * 3):
        colour = list(COLOURS)[i % len(COLOURS)]
        name = f"{1000092795 + i}.jpg"
        write_image(root / "flickr30k-images" / name, colour)
        sentences = [{"tokens": ["a", colour, "square"], "raw": f"A {colour} square number {k}.", "imgid": i,
                      "sentid": 5 * i + k} for k in range(5)]  # fmt: skip
        images.append({"sentids": [5 * i + k for k in range(5)], "imgid": i, "sentences": sentences,
                       "split": split, "filename": name})  # fmt: skip
    (root / "dataset_flickr30k.json").write_text(json.dumps({"images": images, "dataset": "flickr30k"}))
    return root


def test_flickr30k_in_karpathys_layout(flickr30k):
    td = prepare_data("caption", flickr30k, shots=[4])  # every query image opened, support images found
    assert (len(td.support), len(td.query), td.query.split) == (6, 3, "test")
    assert {e.media.parent for e in td.support.examples + td.query.examples} == {flickr30k / "flickr30k-images"}
    ex = td.query.examples[0]
    assert ex.id == "8" and ex.media.name == "1000092803.jpg" and len(ex.references) == 5
    assert ex.target == ex.references[0] and ex.target.startswith("A ") and td.query.name == flickr30k.name


def test_flickr30k_without_its_image_folder_is_one_line(flickr30k, tmp_path):
    shutil.copy(flickr30k / "dataset_flickr30k.json", tmp_path)
    with pytest.raises(DataError) as e:
        load_task_data("caption", tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and "1000092795.jpg" in msg and str(tmp_path / "flickr30k-images") in msg


def test_the_imagenet_data_file():
    wnids, names, templates = imagenet_wnids(), imagenet_class_names(), imagenet_templates()
    assert len(wnids) == len(set(wnids)) == len(names) == 1000 and wnids == sorted(wnids)
    assert all(re.fullmatch(r"n\d{8}", w) for w in wnids)
    # class index 0, 1 and 999 of ILSVRC-2012, named as in CLIP's notebook
    assert (wnids[0], names[0]) == ("n01440764", "tench") and (wnids[1], names[1]) == ("n01443537", "goldfish")
    assert (wnids[999], names[999]) == ("n15075141", "toilet paper")
    assert len(templates) == 80 and all(t.count("{}") == 1 for t in templates)
    assert "a photo of a {}." in templates and templates[0] == "a bad photo of a {}."
    about = json.loads((__import__("fewshot_eval").imagenet.DATA_FILE).read_text())["sources"]
    assert "MIT" in about["classnames"] and "MIT" in about["templates"]


def test_imagenet_class_folders_are_named_by_their_wordnet_ids(tmp_path):
    picked = {"n01443537": "red", "n01440764": "green", "n15075141": "blue"}  # not in sorted order
    for split, n in (("train", 2), ("val", 1)):
        for wnid, colour in picked.items():
            for j in range(n):
                write_image(tmp_path / split / wnid / f"ILSVRC2012_{split}_{j:08d}.JPEG", colour, jitter=j)
    support, query = load_task_data("classify", tmp_path)
    assert support.class_names == query.class_names == ["tench", "goldfish", "toilet paper"]  # wnid order
    assert {(e.media.parent.name, e.target) for e in query.examples} == {
        ("n01440764", "tench"), ("n01443537", "goldfish"), ("n15075141", "toilet paper")}
    # a folder that is not an ImageNet id: every class keeps its folder's name
    write_image(tmp_path / "val" / "n99999999" / "x.png", "red")
    assert wnid_names(["n01440764", "n99999999"]) is None
    assert load_task_data("classify", tmp_path, split="val")[1].class_names == [*sorted(picked), "n99999999"]
    # a classes.json still names the folders
    (tmp_path / "classes.json").write_text(json.dumps({"n01440764": "fish"}))
    assert load_task_data("classify", tmp_path)[0].class_names == ["fish", "n01443537", "n15075141"]
