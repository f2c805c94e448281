"""Classification splits: class folders ``<data>/<split>/<class>/*.png`` (ImageNet's layout) or JSON Lines
``<data>/<split>.jsonl`` rows ``{"image", "label"}``, named by a ``classes.json`` (``shared.class_folders``).

ImageNet's folders are WordNet ids (``val/n01440764/``): without a ``classes.json``, folders that are all
ImageNet-1k ids are named by their CLIP class names (``fewshot_eval.imagenet``), in the standard class order.
"""

from __future__ import annotations

from pathlib import Path

from contrastive_encoder.shared.class_folders import (
    ClassFolderError,
    find_class_names,
    label_classes,
    name_classes,
    read_class_folders,
)
from contrastive_encoder.shared.records import SkipCounter, read_jsonl, resolve_media_path
from fewshot_eval.imagenet import wnid_names
from fewshot_eval.layouts.evalset import DataError, EvalSet, Example

__all__ = ["CLASSIFY", "load_classification"]

CLASSIFY = "a folder <data>/<split>/<class>/*.png (optionally <data>/classes.json) or <data>/<split>.jsonl rows {'image', 'label'}"


def _folder_examples(folder: Path, split: str, names, names_file: Path | None) -> tuple[list[Example], list[str]]:
    images = read_class_folders(folder, expected=CLASSIFY)
    if names is None:
        names = wnid_names(images)
    ordered = name_classes(list(images), names, names_file or "classes.json")
    examples = [Example(id=f"{split}/{d}/{f.name}", media=f, target=name, references=(name,))
                for d, name in ordered for f in images.get(d, [])]  # fmt: skip
    return examples, [name for _, name in ordered]


def _jsonl_examples(jsonl: Path, names, skipped: SkipCounter) -> tuple[list[Example], list[str]]:
    rows = list(read_jsonl(jsonl, required=("image",), skipped=skipped))
    if rows and "label" not in rows[0] and "class" not in rows[0]:
        raise DataError(f"{jsonl}: rows have no 'label'; task 'classify' expects rows {{'image', 'label'}}")
    labels = [row.get("label", row.get("class")) for row in rows]
    usable = [x for x in labels if isinstance(x, (str, int)) and not isinstance(x, bool) and str(x).strip()]
    class_names, index = label_classes(usable, names)
    examples = []
    for i, (row, lab) in enumerate(zip(rows, labels)):
        if not isinstance(lab, (str, int)) or isinstance(lab, bool) or not str(lab).strip():
            skipped.skip("no label", f"{jsonl}: row {i + 1}", strict=False)
            continue
        if not isinstance(row["image"], str):
            skipped.skip("'image' is not a path", f"{jsonl}: row {i + 1}", strict=False)
            continue
        if str(lab) not in index:
            skipped.skip(f"label not among the {len(class_names)} classes", f"{jsonl}: row {i + 1}", strict=False)
            continue
        name = class_names[index[str(lab)]]
        # the id is the path: unique, and shared with the support set only if the same image is in both
        ex_id = str(row.get("id", row["image"]))
        examples.append(Example(ex_id, resolve_media_path(row["image"], jsonl.parent), name, (name,)))
    return examples, class_names


def load_classification(path: str | Path, split: str) -> EvalSet:
    """Classification split from class folders or JSON Lines.

    Args:
        path: the dataset root holding ``<split>/<class>/`` folders or ``<split>.jsonl``, and ``classes.json``.
        split: ``train`` / ``val`` / ...
    """
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder; expected {CLASSIFY}")
    jsonl, folder = root / f"{split}.jsonl", root / split
    skipped = SkipCounter()
    try:
        names_file, names = find_class_names(folder)
        if folder.is_dir():
            source = folder
            examples, class_names = _folder_examples(folder, split, names, names_file)
        elif jsonl.is_file():
            source = jsonl
            examples, class_names = _jsonl_examples(jsonl, names, skipped)
        else:
            raise DataError(f"{root}: neither {folder.name}/ nor {jsonl.name} found; expected {CLASSIFY}")
    except ClassFolderError as e:
        raise DataError(str(e)) from None
    if not examples:
        raise DataError(f"{source}: no images found; expected {CLASSIFY}")
    return EvalSet("classify", split, source, examples, class_names=class_names, skipped=skipped)
