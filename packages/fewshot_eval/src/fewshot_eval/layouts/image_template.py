"""Where a VQA question's image is: an image template, the same for every split or one per split.

A template is a path relative to the data folder, formatted with ``image_id`` and ``split`` (Python format
syntax, so ``{image_id:012d}`` pads the id). ``--image-template`` takes one of:

- one template for every split: ``images/{image_id:012d}.png`` (the default, ShapesWorld's layout), or one
  naming the split, ``{split}2014/COCO_{split}2014_{image_id:012d}.jpg``;
- one per split, ``split=template`` pairs joined by commas:
  ``train=train2014/COCO_train2014_{image_id:012d}.jpg,val=val2014/COCO_val2014_{image_id:012d}.jpg``;
- ``coco``: COCO's own folders and file names, as VQAv2 and OK-VQA use them (``train2014/``, ``val2014/``, and
  ``test2015/`` for both ``test-dev`` and ``test``: test-dev's images are a subset of test2015's).
"""

from __future__ import annotations

from pathlib import Path

from fewshot_eval.layouts.evalset import DataError

__all__ = ["COCO_IMAGE_TEMPLATES", "DEFAULT_IMAGE_TEMPLATE", "ImageTemplate"]

DEFAULT_IMAGE_TEMPLATE = "images/{image_id:012d}.png"
COCO_IMAGE_TEMPLATES = {
    "train": "train2014/COCO_train2014_{image_id:012d}.jpg",
    "val": "val2014/COCO_val2014_{image_id:012d}.jpg",
    "test-dev": "test2015/COCO_test2015_{image_id:012d}.jpg",
    "test": "test2015/COCO_test2015_{image_id:012d}.jpg",
}
NAMED = {"coco": COCO_IMAGE_TEMPLATES}


class ImageTemplate:
    """A parsed ``--image-template``: the image path of (split, image id), and a check that a split's image
    folder exists.

    Args:
        spec: the option's text (module docstring).
    """

    def __init__(self, spec: str = DEFAULT_IMAGE_TEMPLATE):
        self.spec = spec
        self.per_split: dict[str, str] | None = None
        self.template = spec
        if spec in NAMED:
            self.per_split = dict(NAMED[spec])
        elif "=" in spec.split("{", 1)[0]:  # "train=...": an '=' inside a template's braces is format syntax
            self.per_split = {}
            for part in spec.split(","):
                split, sep, template = part.partition("=")
                if not sep or not split.strip() or not template.strip():
                    raise DataError(f"--image-template {spec!r}: {part!r} is not split=template; expected "
                                    "'train=train2014/COCO_train2014_{image_id:012d}.jpg,val=...'")  # fmt: skip
                self.per_split[split.strip()] = template.strip()

    def for_split(self, split: str) -> str:
        """The template of ``split``."""
        if self.per_split is None:
            return self.template
        if split not in self.per_split:
            raise DataError(f"--image-template {self.spec!r} has no template for split {split!r}; expected one of "
                            f"{', '.join(self.per_split)} or a {split}=... entry")  # fmt: skip
        return self.per_split[split]

    def path(self, folder: Path, split: str, image_id) -> Path:
        """The image of ``image_id`` in ``split``, under the data ``folder``."""
        template = self.for_split(split)
        try:
            rel = template.format(image_id=image_id, split=split)
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise DataError(f"image template {template!r} cannot format image_id {image_id!r} of split {split!r} "
                            f"({type(e).__name__}: {e}); expected fields {{image_id}} and {{split}}") from None
        path = Path(rel)
        return path if path.is_absolute() else folder / path

    def check_roots(self, paths, split: str, source: Path) -> None:
        """A split whose image folder is missing is one error naming the split and the folder expected, rather
        than one missing file per question."""
        for root in sorted({p.parent for p in paths}):
            if not root.is_dir():
                raise DataError(f"{source}: the images of split {split!r} are expected in {root}, which does not "
                                f"exist (image template {self.for_split(split)!r}; --image-template sets it)")  # fmt: skip
