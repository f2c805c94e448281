"""ImageNet-1k's class names and CLIP's prompt templates, as data (``data/imagenet.json``, sources and licences
named in it): the 1000 WordNet ids in class-index order, the CLIP-cleaned name of each (OpenAI's CLIP notebook,
MIT; the list open_clip and OpenFlamingo's evaluation use), and CLIP's 80 ImageNet templates
(``"a photo of a {}."``).

The names make ImageNet's class folders (``val/n01440764/...``) a ``classify`` set without a ``classes.json``
(``layouts.classification``), scored as OpenFlamingo scores ImageNet: each class name ranked after
``<image>Output:``. The templates are CLIP's zero-shot prompt ensemble (a text embedding averaged over the 80
sentences), kept here as data for zero-shot retrieval; the few-shot classifier does not use them: its prompts
hold the class name itself, as a demonstration's answer and as the scored continuation, and 80 templates would
multiply the per-query cost of ranking 1000 names by 80 for a protocol neither Flamingo nor OpenFlamingo used.

Two names repeat in the list, as in CLIP's and OpenFlamingo's (``missile``: n03773504 and n04008634;
``sunglasses``: n04355933 and n04356056): scored by name, predicting either counts for both.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

__all__ = ["imagenet_class_names", "imagenet_templates", "imagenet_wnids", "wnid_names"]

DATA_FILE = Path(__file__).parent / "data" / "imagenet.json"


@lru_cache(maxsize=1)
def _data() -> dict:
    return json.loads(DATA_FILE.read_text(encoding="utf-8"))


def imagenet_wnids() -> list[str]:
    """The 1000 WordNet ids in class-index order (sorted)."""
    return list(_data()["wnids"])


def imagenet_class_names() -> list[str]:
    """The 1000 CLIP class names in class-index order."""
    return list(_data()["classnames"])


def imagenet_templates() -> list[str]:
    """CLIP's 80 ImageNet prompt templates, ``{}`` where the class name goes."""
    return list(_data()["templates"])


def wnid_names(folders: Iterable[str]) -> dict[str, str] | None:
    """``{wnid: class name}`` when every folder is an ImageNet-1k WordNet id, else None."""
    folders = list(folders)
    names = dict(zip(_data()["wnids"], _data()["classnames"]))
    if not folders or not all(f in names for f in folders):
        return None
    return {f: names[f] for f in folders}
