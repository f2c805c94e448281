"""One class-folder reader (contrastive_encoder.shared.class_folders) behind stage 1's zero-shot sets and
fewshot_eval's classification data: the same folder gives both the same images per class, and the same
explanation when it is not a class-folder set."""

from __future__ import annotations

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
