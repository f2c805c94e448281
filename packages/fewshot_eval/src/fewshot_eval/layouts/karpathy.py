"""Captioning splits from Karpathy's JSON files: ``dataset_coco.json`` (COCO), ``dataset_flickr30k.json``
(Flickr30K), ``dataset_flickr8k.json``; ``train`` includes ``restval`` as is customary.

An image is ``<folder of the JSON>/<filepath>/<filename>``. COCO's entries name their folder (``"filepath":
"val2014"``); Flickr's have none, and their images come in an archive folder: ``flickr30k-images/`` (Flickr30K's
download), ``Flicker8k_Dataset/`` (Flickr8K's, so spelled) or ``images/``. Without ``filepath``, the folder is the
first of these (or the JSON's own folder) that holds the split's first image.
"""

from __future__ import annotations

from pathlib import Path

from contrastive_encoder.shared.records import SkipCounter, resolve_media_path
from fewshot_eval.layouts.evalset import (
    DataError,
    EvalSet,
    Example,
    caption_texts,
    guess_format,
    read_json_file,
    skip_reserved,
)

__all__ = ["FLICKR_IMAGE_FOLDERS", "KARPATHY", "load_karpathy"]

KARPATHY = "a COCO Karpathy caption JSON ({'images': [{'filename', 'split', 'sentences': [{'raw'}]}]})"
FLICKR_IMAGE_FOLDERS = ("flickr30k-images", "Flicker8k_Dataset", "images")


def _find_karpathy(path: Path) -> Path:
    if path.is_file():
        return path
    if path.is_dir():
        found = sorted(path.glob("dataset_*.json"))
        if len(found) == 1:
            return found[0]
        if (path / "dataset_coco.json").is_file():
            return path / "dataset_coco.json"
        hint = " (found a VQA questions file there)" if any(path.glob("*questions*.json")) else ""
        raise DataError(f"{path}: no dataset_*.json in this folder{hint}; expected {KARPATHY}")
    raise DataError(f"{path}: no such file or folder; expected {KARPATHY}")


def _image_folder(file: Path, first: str) -> Path:
    """The folder of entries without ``filepath``: the first candidate holding ``first`` (module docstring)."""
    for name in ("", *FLICKR_IMAGE_FOLDERS):
        if (file.parent / name / first).is_file():
            return file.parent / name
    tried = ", ".join(str(file.parent / n) + "/" for n in FLICKR_IMAGE_FOLDERS)
    raise DataError(f"{file}: image {first!r} (entries without 'filepath') is in none of {file.parent}/, {tried}; "
                    "expected the images beside the JSON or in one of these folders")  # fmt: skip


def load_karpathy(path: str | Path, split: str) -> EvalSet:
    """Captioning split from a Karpathy-style JSON.

    Args:
        path: the JSON file, or a folder holding one ``dataset_*.json``.
        split: ``train`` (with ``restval``), ``val`` or ``test``.
    """
    file = _find_karpathy(Path(path))
    data = read_json_file(file, KARPATHY)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or (
        data["images"] and not (isinstance(data["images"][0], dict) and "sentences" in data["images"][0])
    ):
        raise DataError(f"{file}: looks like {guess_format(data)}, but task 'caption' expects {KARPATHY}")
    wanted = {"train", "restval"} if split == "train" else {split}
    examples, skipped = [], SkipCounter()
    folder: Path | None = None  # of the entries without filepath, found from the first of them
    for i, img in enumerate(data["images"]):
        where = f"{file}: images[{i}]"
        if not isinstance(img, dict):
            skipped.skip("entry is not a JSON object", where, strict=False)
            continue
        if img.get("split") not in wanted:
            continue
        caps = caption_texts(img.get("sentences"))
        if not caps or not isinstance(img.get("filename"), str) or not img["filename"]:
            skipped.skip("no captions or no filename", where, strict=False)
            continue
        if skip_reserved(skipped, where, *caps):
            continue
        if isinstance(img.get("filepath"), str):
            media = resolve_media_path(str(Path(img["filepath"]) / img["filename"]), file.parent)
        else:
            folder = folder or _image_folder(file, img["filename"])
            media = resolve_media_path(img["filename"], folder)
        ex_id = str(img.get("cocoid", img.get("imgid", Path(img["filename"]).stem)))
        examples.append(Example(id=ex_id, media=media, target=caps[0], references=caps))
    splits = sorted({str(im.get("split")) for im in data["images"] if isinstance(im, dict)})
    if not examples:
        raise DataError(f"{file}: no images in split {split!r} (splits present: {', '.join(splits)})")
    return EvalSet("caption", split, file, examples, skipped=skipped)
