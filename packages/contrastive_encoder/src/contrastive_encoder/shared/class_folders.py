"""Class-folder image sets (``<set>/<class>/*.png``) and their class names: the one reader of stage 1's zero-shot
evaluation and fewshot_eval's classification data.

``classes.json`` (in the set's folder or its parent, so one file serves a dataset's ``train/`` and ``val/``)
names the classes, under one rule for both stages (``name_classes``): a ``{folder: name}`` object renames
folders; a list that holds every folder's name gives the class order; any other list of as many names as there
are folders names the folders in sorted order. Without it a class is called by its folder's name. A JSON Lines
set's labels follow ``label_classes`` (a list is the class list, integer labels index it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .media import is_image_file
from .readers import CorruptFileError, read_json

__all__ = ["ClassFolderError", "find_class_names", "label_classes", "name_classes", "read_class_folders"]

ClassNames = list[str] | dict[str, str]


class ClassFolderError(ValueError):
    """A folder that is not a class-folder set; the message names it and says what is in it."""


def read_class_folders(folder: str | Path, expected: str = "one sub-folder of images per class") -> dict[str, list[Path]]:
    """Every sub-folder of ``folder`` (sorted by name) and its image files (sorted by name).

    A sub-folder without images is kept with an empty list (a caller may still count it as a class).

    Args:
        folder: the class-folder set.
        expected: how the caller describes the layout it wants, for the error message.

    Raises:
        ClassFolderError: no sub-folder holds an image; the message says what is there instead (loose images,
            or sub-folders that hold folders, e.g. a parent of ``train/`` and ``val/`` sets).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ClassFolderError(f"{folder}: no such folder; expected {expected}")
    subdirs = sorted((p for p in folder.iterdir() if p.is_dir()), key=lambda p: p.name)
    classes = {d.name: sorted((f for f in d.iterdir() if is_image_file(f)), key=lambda f: f.name) for d in subdirs}
    if any(classes.values()):
        return classes
    loose = sum(1 for f in folder.iterdir() if is_image_file(f))
    nested = [d.name for d in subdirs if any(q.is_dir() for q in d.iterdir())]
    if nested:
        found = f"sub-folders {', '.join(nested)} that hold folders, not images (did you mean {folder / nested[-1]}?)"
    elif loose:
        found = f"{loose} image{'s' if loose > 1 else ''} directly in it and no class folders"
    elif subdirs:
        found = f"{len(subdirs)} sub-folder{'s' if len(subdirs) > 1 else ''} and no images in them"
    else:
        found = "no sub-folders"
    raise ClassFolderError(f"{folder}: expected {expected}, found {found}")


def find_class_names(folder: str | Path) -> tuple[Path, ClassNames] | tuple[None, None]:
    """``(file, names)`` of the ``classes.json`` in ``folder`` or its parent (a JSON list of class names or a
    ``{folder: name}`` object), or ``(None, None)``.

    Raises:
        ClassFolderError: the file is not JSON, or not a non-empty list / object of strings.
    """
    folder = Path(folder)
    for candidate in (folder / "classes.json", folder.parent / "classes.json"):
        if not candidate.is_file():
            continue
        try:
            names = read_json(candidate, expect=object)
        except CorruptFileError as e:
            raise ClassFolderError(str(e)) from None
        values = names.values() if isinstance(names, dict) else names if isinstance(names, list) else None
        if not values or not all(isinstance(v, (str, int)) and str(v).strip() for v in values):
            raise ClassFolderError(f"{candidate}: expected a non-empty JSON list of class names (or {{folder: name}})")
        return candidate, ({str(k): str(v) for k, v in names.items()} if isinstance(names, dict)
                           else [str(v) for v in names])
    return None, None


def name_classes(folders: Sequence[str], names: ClassNames | None, source: str | Path = "classes.json",
                 ) -> list[tuple[str, str]]:
    """``(folder, class name)`` for every class folder, in class order (the module docstring's rule).

    Raises:
        ClassFolderError: a list of names that neither holds every folder nor has one name per folder.
    """
    folders = sorted(folders)
    if names is None:
        return [(f, f) for f in folders]
    if isinstance(names, dict):
        return [(f, names.get(f, f)) for f in folders]
    if set(folders) <= set(names):  # names without a folder stay classes (answers no image has)
        return [(n, n) for n in names]
    if len(names) == len(folders):
        return list(zip(folders, names))
    raise ClassFolderError(f"{source}: {len(names)} class names but {len(folders)} class folders "
                           f"({', '.join(folders[:5])}{', ...' if len(folders) > 5 else ''})")


def label_classes(labels: Sequence[str | int], names: ClassNames | None) -> tuple[list[str], dict[str, int]]:
    """The class names of a JSON Lines set and ``{str(label): class index}`` for the labels it may use.

    A list of names is the class list: an integer label indexes it (label 3 is its fourth name), a string label
    is one of its names; a ``{label: name}`` object renames labels; without names the classes are the sorted
    labels. A label outside the mapping is a bad row for the caller to skip.
    """
    if isinstance(names, list):
        index = {n: k for k, n in enumerate(names)}
        return list(names), {**index, **{str(k): k for k in range(len(names)) if str(k) not in index}}
    ordered = sorted({str(x) for x in labels})
    rename = names or {}
    return [rename.get(x, x) for x in ordered], {x: k for k, x in enumerate(ordered)}
