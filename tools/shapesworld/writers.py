"""ShapesWorld's per-source writers (one method per dataset format), the manifest of written files, the checks
on an existing output folder and the ``--overwrite`` merge.

Items are drawn from ``numpy.random.default_rng([seed, source, split, index])``, so item i of a source does
not depend on how many items the others have.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .language import (
    _FILLER,
    _TITLES,
    _m3w_description,
    _pick,
    human_answers,
    image_questions,
    short_caption,
    video_caption,
    video_questions,
)
from .m3w_pages import m3w_page
from .render import _write_video, render_scene, render_video
from .scene import COLOURS, SHAPES, ShapesWorldError, sample_scene, sample_video_scene

MANIFEST = ".written.json"  # the files the generator wrote: --overwrite replaces or removes only those

# Stable stream ids: adding a source never changes the items of another.
_STREAM = {"ltip": 1, "align": 2, "vtp": 3, "m3w": 4, "coco": 5, "vqa": 6, "classify": 7, "colour": 8,
           "videoqa": 9}
_SPLIT = {"train": 0, "val": 1, "test": 2}


class _Writer:
    """Shared state for one generation run: output root, options, item generators, counters."""

    def __init__(self, root: Path, seed: int, image_size: int, frames: int, video_format: str, bar):
        self.root, self.seed, self.image_size, self.frames = root, seed, image_size, frames
        self.video_format, self.bar = video_format, bar
        self.n_images = self.n_videos = 0

    def rng(self, stream: str, split: str, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, _STREAM[stream], _SPLIT[split], index])

    def image(self, scene: dict[str, Any], path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        render_scene(scene, self.image_size).save(path)
        self.n_images += 1

    def video(self, scene: dict[str, Any], stem: Path) -> str:
        stem.parent.mkdir(parents=True, exist_ok=True)
        path = stem.with_suffix(".mp4") if self.video_format == "mp4" else stem
        _write_video(render_video(scene, self.image_size), path, self.video_format)
        self.n_videos += 1
        return path.name

    def jsonl(self, path: Path, records: list[dict[str, Any]]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            for rec in records:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")

    def json(self, path: Path, obj: Any) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

    def pairs(self, source: str, split: str, n: int, caption: Callable) -> None:
        records = []
        self.bar.set_description_str(f"{source}/{split}")
        for i in range(n):
            self.bar.update(1)
            rng = self.rng(source, split, i)
            scene = sample_scene(rng)
            name = f"images/{split}_{i:06d}.png"
            self.image(scene, self.root / source / name)
            if source == "align":
                text, noise = caption(rng, scene)
                records.append({"image": name, "text": text, "noise": noise, "scene": scene})
            else:
                records.append({"image": name, "text": caption(rng, scene), "scene": scene})
        self.jsonl(self.root / source / f"{split}.jsonl", records)

    def vtp(self, split: str, n: int) -> None:
        records = []
        self.bar.set_description_str(f"vtp/{split}")
        for i in range(n):
            self.bar.update(1)
            rng = self.rng("vtp", split, i)
            scene = sample_video_scene(rng, self.frames)
            name = self.video(scene, self.root / "vtp" / "videos" / f"{split}_{i:06d}")
            records.append({"video": f"videos/{name}", "text": video_caption(rng, scene), "scene": scene})
        self.jsonl(self.root / "vtp" / f"{split}.jsonl", records)

    def m3w(self, split: str, n: int, structured: float) -> None:
        records = []
        self.bar.set_description_str(f"m3w/{split}")
        for i in range(n):
            self.bar.update(1)
            rng = self.rng("m3w", split, i)
            items, page = m3w_page(rng, structured, sample_scene, _m3w_description, _TITLES, _FILLER,
                                   list(COLOURS), SHAPES)
            texts, images, scenes, k = [], [], [], 0
            for text, scene in items:
                name = None
                if scene is not None:
                    name = f"images/{split}_{i:06d}_{k}.png"
                    self.image(scene, self.root / "m3w" / name)
                    k += 1
                texts.append(text)
                images.append(name)
                scenes.append(scene)
            records.append({"texts": texts, "images": images, "scenes": scenes, "page": page})
        self.jsonl(self.root / "m3w" / f"{split}.jsonl", records)

    def coco(self, counts: dict[str, int]) -> None:
        entries, sentid = [], 0
        for split in ("train", "val", "test"):
            self.bar.set_description_str(f"coco/{split}")
            for i in range(counts[f"coco_{split}"]):
                self.bar.update(1)
                rng = self.rng("coco", split, i)
                scene = sample_scene(rng)
                imgid = len(entries)
                name = f"{split}_{i:06d}.png"
                self.image(scene, self.root / "eval" / "coco" / "images" / name)
                raws: list[str] = []
                for _attempt in range(50):  # five distinct captions where the templates allow
                    raw = short_caption(rng, scene)
                    if raw not in raws or _attempt >= 40:
                        raws.append(raw)
                    if len(raws) == 5:
                        break
                sentences = [{"raw": r, "tokens": re.findall(r"[a-z0-9]+", r.lower()), "imgid": imgid,
                              "sentid": sentid + k} for k, r in enumerate(raws)]
                entries.append({"filepath": "images", "filename": name, "imgid": imgid, "cocoid": imgid + 1,
                                "split": split, "sentids": [s["sentid"] for s in sentences],
                                "sentences": sentences, "scene": scene})
                sentid += 5
        self.json(self.root / "eval" / "coco" / "dataset_coco.json", {"images": entries, "dataset": "coco"})

    def vqa(self, split: str, n_questions: int) -> None:
        base = 1 if split == "train" else 1_000_001
        questions, annotations, scenes, i = [], [], [], 0
        self.bar.set_description_str(f"vqav2/{split}")
        while len(questions) < n_questions:
            rng = self.rng("vqa", split, i)
            scene, image_id = sample_scene(rng), base + i
            name = f"images/{image_id:012d}.png"
            self.image(scene, self.root / "eval" / "vqav2" / name)
            scenes.append({"image_id": image_id, "image": name, "scene": scene})
            for k, q in enumerate(image_questions(rng, scene)[:3]):
                if len(questions) == n_questions:
                    break
                qid = image_id * 10 + k
                answers = human_answers(rng, q["answer"])
                questions.append({"image_id": image_id, "question": q["question"], "question_id": qid})
                annotations.append({
                    "question_id": qid, "image_id": image_id, "question_type": q["question_type"],
                    "answer_type": q["answer_type"], "multiple_choice_answer": q["answer"],
                    "answers": [{"answer": a, "answer_confidence": "yes" if a == q["answer"] else
                                 _pick(rng, ["yes", "maybe"]), "answer_id": j + 1} for j, a in enumerate(answers)]})
                self.bar.update(1)
            i += 1
        # every top-level key of the VQAv2 files (the official VQA API copies info and license from them)
        info = {"info": {"description": "ShapesWorld VQA in the VQAv2 layout", "version": "2.0", "year": 2026},
                "license": {"name": "CC0", "url": "https://creativecommons.org/publicdomain/zero/1.0/"},
                "task_type": "Open-Ended", "data_type": "shapesworld", "data_subtype": f"{split}2014"}
        self.json(self.root / "eval" / "vqav2" / f"{split}_questions.json", {**info, "questions": questions})
        self.json(self.root / "eval" / "vqav2" / f"{split}_annotations.json", {**info, "annotations": annotations})
        self.jsonl(self.root / "eval" / "vqav2" / f"{split}_scenes.jsonl", scenes)

    def class_folders(self, task: str, split: str, per_class: int) -> None:
        classes = sorted(SHAPES) if task == "classify" else sorted(COLOURS)  # ImageFolder's index order
        records, index = [], 0
        self.bar.set_description_str(f"{task}/{split}")
        for label in classes:
            for _ in range(per_class):
                self.bar.update(1)
                rng = self.rng(task, split, index)
                scene = sample_scene(rng, **({"main_shape": label} if task == "classify" else {"main_colour": label}))
                name = f"{label}/{index:06d}.png"
                self.image(scene, self.root / "eval" / task / split / name)
                records.append({"image": f"{split}/{name}", "label": label, "scene": scene})
                index += 1
        self.json(self.root / "eval" / task / "classes.json", classes)
        self.jsonl(self.root / "eval" / task / f"{split}.jsonl", records)

    def videoqa(self, split: str, n_questions: int) -> None:
        records, i = [], 0
        self.bar.set_description_str(f"videoqa/{split}")
        while len(records) < n_questions:
            rng = self.rng("videoqa", split, i)
            scene = sample_video_scene(rng, self.frames)
            name = self.video(scene, self.root / "eval" / "videoqa" / "videos" / f"{split}_{i:06d}")
            for k, q in enumerate(video_questions(rng, scene)[:2]):
                if len(records) == n_questions:
                    break
                records.append({"video": f"videos/{name}", "question": q["question"],
                                "answers": human_answers(rng, q["answer"]), "answer": q["answer"],
                                "question_id": i * 10 + k, "question_type": q["question_type"], "scene": scene})
                self.bar.update(1)
            i += 1
        self.jsonl(self.root / "eval" / "videoqa" / f"{split}.jsonl", records)


def _written(root: Path) -> set[str] | None:
    """The files (relative paths) the generator wrote into ``root``, from its manifest; None without one."""
    try:
        return set(json.loads((root / MANIFEST).read_text(encoding="utf-8"))["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _check_existing(out: Path, options: dict[str, Any], overwrite: bool = False) -> bool:
    """True when ``out`` already holds this exact world; raise when it holds something else, unless
    ``overwrite`` and the generator can tell its own files from the others there."""
    if out.exists() and not out.is_dir():
        raise ShapesWorldError(f"{out} is a file, expected a folder; pick another --out")
    marker = out / "world.json"
    if marker.is_file():
        try:
            stored = json.loads(marker.read_text(encoding="utf-8"))["options"]
        except (ValueError, KeyError, TypeError) as e:
            raise ShapesWorldError(f"{marker} is unreadable ({e}); delete {out} and generate again") from e
        if stored == options:
            return True
        flat = {f"counts.{k}": v for k, v in options["counts"].items()} | {k: v for k, v in options.items() if k != "counts"}
        there = stored if isinstance(stored, dict) else {}
        there = {f"counts.{k}": v for k, v in (there.get("counts") or {}).items()} | there
        diff = ", ".join(f"{k}: {there.get(k)!r} there vs {v!r} asked" for k, v in flat.items() if there.get(k) != v)
        if not overwrite:
            raise ShapesWorldError(f"{out} holds a ShapesWorld generated with other options ({diff}); "
                                   "delete the folder or pick another --out (or give --overwrite to replace it)")
        if _written(out) is None:  # its files cannot be told from others: replacing could delete someone's
            raise ShapesWorldError(f"{out} holds a ShapesWorld generated with other options ({diff}) by an older "
                                   f"generator that kept no list of its files ({MANIFEST}); delete the folder "
                                   "or pick another --out")
        return False
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ShapesWorldError(f"{out} exists and is not an empty folder or a ShapesWorld (no world.json); "
                               "delete it or pick another --out (or give --overwrite to write the world beside "
                               "its files)")
    return False


def _merge_world(partial: Path, out: Path) -> None:
    """Move a finished world into a non-empty ``out`` (``--overwrite``): its files replace the generator's
    files there, the previous world's files it does not have are removed, everything else is kept."""
    new = {p.relative_to(partial).as_posix() for p in partial.rglob("*") if p.is_file()}
    old = _written(out) or set()
    for rel in sorted(new):  # refuse before moving anything: a folder of someone's where a file goes, or the reverse
        dest = out / rel
        folders = [out / q for q in Path(rel).parents if q != Path(".")]
        blocker = dest if dest.is_dir() else next((p for p in folders if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            raise ShapesWorldError(f"{blocker} is in the way of the world's {rel}; move it or pick another --out")
    (out / "world.json").unlink(missing_ok=True)  # until the end the folder is not a complete world
    # every file the generator has ever written here is listed first, so an interrupted merge loses track of none
    (out / MANIFEST).write_text(json.dumps({"by": "shapesworld", "files": sorted(old | new)}, indent=1) + "\n")
    for rel in sorted(new - {"world.json", MANIFEST}):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(partial / rel, out / rel)
    for rel in sorted(old - new):
        (out / rel).unlink(missing_ok=True)
        for parent in (out / rel).parents:  # folders the previous world made and left empty
            if parent == out or not parent.is_dir() or any(parent.iterdir()):
                break
            parent.rmdir()
    os.replace(partial / MANIFEST, out / MANIFEST)
    os.replace(partial / "world.json", out / "world.json")
    shutil.rmtree(partial)
