"""Class-folder image sets (``<set>/<class>/*.png``): the one reader of stage 1's zero-shot evaluation and
fewshot_eval's classification data.

The reader lists the classes and their images; what the class *names* are (a ``classes.json`` beside the set,
or the folder names) stays with the caller, because the two use them differently (zero-shot prompts vs the
answers a few-shot model is scored against).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["IMAGE_SUFFIXES", "ClassFolderError", "is_image_file", "read_class_folders"]

# what PIL decodes and the suite's writers and readers accept as an image file
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


class ClassFolderError(ValueError):
    """A folder that is not a class-folder set; the message names it and says what is in it."""


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


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
