"""One class-folder reader (contrastive_encoder.shared.class_folders) behind stage 1's zero-shot sets and
fewshot_eval's classification data: the same folder gives both the same images per class, and the same
explanation when it is not a class-folder set."""

from __future__ import annotations

import json
import shutil

import pytest

from contrastive_encoder.zero_shot import load_classification_set
from fewshot_eval.datasets import DataError, load_classification


def test_both_stages_read_a_class_folder_set_to_the_same_images(classify_dir):
    items, classes = load_classification_set(classify_dir / "val")  # classes.json in the parent folder
    query = load_classification(classify_dir, "val")
    assert classes == query.class_names
    assert sorted((path, classes[label]) for path, label in items) == sorted((ex.media, ex.target) for ex in query.examples)


def test_a_parent_of_class_folder_sets_is_explained_by_both(classify_dir, tmp_path):
    nested = tmp_path / "data"
    shutil.copytree(classify_dir / "val", nested / "val" / "val")
    with pytest.raises(ValueError, match="did you mean"):
        load_classification_set(nested / "val")
    with pytest.raises(DataError, match="did you mean"):
        load_classification(nested, "val")


@pytest.mark.parametrize("names, expected", [
    # a list holding every folder: the class order
    (lambda folders: folders[::-1], lambda folders: folders[::-1]),
    # a {folder: name} object: renamed classes
    (lambda folders: {f: f"the {f} one" for f in folders}, lambda folders: [f"the {f} one" for f in sorted(folders)]),
    # another list of as many names: the sorted folders' names
    (lambda folders: [f"class {k}" for k in range(len(folders))], lambda folders: [f"class {k}" for k in range(len(folders))]),
])
def test_both_stages_name_classes_by_one_classes_json_rule(classify_dir, tmp_path, names, expected):
    root = tmp_path / "set"
    shutil.copytree(classify_dir, root)
    folders = sorted(p.name for p in (root / "val").iterdir())
    (root / "classes.json").write_text(json.dumps(names(folders)))
    _, classes = load_classification_set(root / "val")
    assert classes == load_classification(root, "val").class_names == expected(folders)


def test_a_classes_json_that_fits_no_rule_is_named_by_both(classify_dir, tmp_path):
    root = tmp_path / "set"
    shutil.copytree(classify_dir, root)
    (root / "classes.json").write_text(json.dumps(["only one name"]))
    with pytest.raises(ValueError, match="classes.json: 1 class names but"):
        load_classification_set(root / "val")
    with pytest.raises(DataError, match="classes.json: 1 class names but"):
        load_classification(root, "val")
