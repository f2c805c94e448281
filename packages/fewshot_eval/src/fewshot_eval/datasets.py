"""Loaders for the evaluation formats of docs/formats.md: COCO Karpathy JSON (also Flickr30K), VQAv2
questions + annotations (also OK-VQA / VizWiz / TextVQA in that layout), class folders or JSON Lines with class
names, and video captioning / video QA JSON Lines.

Every loader returns an ``EvalSet`` of ``Example`` records and fails with a one-line ``DataError`` naming the
file and what was expected when the file is not of the task's format. A bad record in a file of the right
format (no annotation, no answer text, a caption holding the prompt's own ``<image>`` / ``<EOC>`` markers, an
entry of the wrong type) is skipped and counted in ``EvalSet.skipped``, which the command line reports. Media
are only resolved to paths here; ``fewshot_eval.media`` checks and decodes them.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from contrastive_encoder.shared.class_folders import (
    ClassFolderError,
    find_class_names,
    label_classes,
    name_classes,
    read_class_folders,
)
from contrastive_encoder.shared.readers import CorruptFileError, read_json
from contrastive_encoder.shared.records import SkipCounter, read_jsonl, resolve_media_path
from fewshot_eval.model import EOC, IMAGE_TOKEN

__all__ = [
    "TASKS",
    "VQA_TASKS",
    "DataError",
    "EvalSet",
    "Example",
    "load_classification",
    "load_karpathy",
    "load_task_data",
    "load_video_jsonl",
    "load_vqa",
]

# image VQA benchmarks: one format (VQAv2's questions + annotations), each scored as its evaluation does
# (metrics/vqa_benchmarks.py)
VQA_TASKS = ("vqa", "okvqa", "vizwiz", "textvqa")
TASKS = ("caption", *VQA_TASKS, "classify", "video-caption", "video-qa")
DEFAULT_IMAGE_TEMPLATE = "images/{image_id:012d}.png"
RESERVED_TOKENS = (IMAGE_TOKEN, EOC)  # the prompt's own markers: in a text they would shift media and chunks


class DataError(ValueError):
    """An evaluation file or folder is missing, malformed, or of another task's format."""


@dataclass(frozen=True)
class Example:
    """One evaluation or support item."""

    id: str  # unique within its set (image id, question id, file stem)
    media: Path  # an image file, or a video (mp4 file or folder of frames)
    target: str  # the text shown when the example is a demonstration (first caption, majority answer, class)
    references: tuple[str, ...]  # what a prediction is scored against (all captions / the 10 answers / class)
    question: str | None = None  # VQA / video QA only

    @property
    def key(self) -> str:
        """Identity across sets: the same id *and* media. Ids alone may repeat across splits (a question id
        restarting at 0), and one image may carry several questions; only the very same example is excluded
        from its own demonstrations."""
        return f"{self.id}@{self.media}"


@dataclass
class EvalSet:
    """The examples of one split of one dataset."""

    task: str
    split: str
    source: Path  # the file or folder the split was read from
    examples: list[Example]
    class_names: list[str] | None = None  # classification only, in class-index order
    skipped: SkipCounter = field(default_factory=SkipCounter)

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def fingerprint(self) -> str:
        """Hash of the ids, media paths and targets: keys caches of per-example features."""
        h = hashlib.sha256()
        for ex in self.examples:
            h.update(f"{ex.id}\0{ex.media}\0{ex.target}\n".encode())
        return h.hexdigest()[:16]

    @property
    def identifier(self) -> str:
        return f"{self.source}:{self.split}:{len(self)}:{self.fingerprint}"

    @property
    def name(self) -> str:
        """Short dataset name for tables: the data folder's name (``coco``, ``vqav2``, ``colour``)."""
        folder = self.source.parent if self.source.is_file() else self.source
        if folder.name == self.split:  # class folders: <data>/<split>/
            folder = folder.parent
        return folder.name


def _read_json(path: Path, what: str):
    try:
        return read_json(path, expect=object)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found (expected {what})") from None
    except CorruptFileError as e:
        raise DataError(f"{e}; expected {what}") from None


def _reserved_token(texts) -> str | None:
    """The first prompt marker (``<image>``, ``<EOC>``) found in any of ``texts``, else None."""
    for text in texts:
        for token in RESERVED_TOKENS:
            if text is not None and token in text:
                return token
    return None


def _skip_reserved(skipped: SkipCounter, where: str, *texts) -> bool:
    """Count and skip a record whose text holds a prompt marker (the processor would take ``<image>`` for a
    missing image and stop the whole run); True when skipped."""
    token = _reserved_token(texts)
    if token is None:
        return False
    skipped.skip(f"text contains the prompt marker {token}", where, strict=False)
    return True


def _answer_texts(answers) -> tuple[str, ...]:
    """Answers given as ``[{"answer": ...}]`` (VQA), plain strings or numbers; entries without text dropped."""
    if isinstance(answers, (str, int, float)):
        answers = [answers]
    if not isinstance(answers, list):
        return ()
    out = []
    for a in answers:
        a = a.get("answer") if isinstance(a, dict) else a
        if isinstance(a, (str, int, float)) and not isinstance(a, bool) and str(a).strip():
            out.append(str(a))
    return tuple(out)


def _caption_texts(sentences) -> tuple[str, ...]:
    """Captions given as Karpathy ``[{"raw"} or {"tokens"}]``, plain strings, or one string."""
    if isinstance(sentences, str):
        sentences = [sentences]
    if not isinstance(sentences, list):
        return ()
    out = []
    for s in sentences:
        if isinstance(s, dict):
            tokens = s.get("tokens")
            s = s.get("raw") or (" ".join(map(str, tokens)) if isinstance(tokens, list) else None)
        if isinstance(s, str) and s.strip():
            out.append(s)
    return tuple(out)


def _guess_format(obj) -> str:
    """A short name for what a parsed JSON file looks like, for mismatch errors."""
    if isinstance(obj, dict):
        if "questions" in obj:
            return "a VQA questions file"
        if "annotations" in obj:
            return "a VQA/COCO annotations file"
        if "images" in obj:
            return "a COCO Karpathy caption file"
    if isinstance(obj, list):
        return "a JSON list"
    return f"a JSON {type(obj).__name__}"


# ---------------------------------------------------------------- captioning (COCO Karpathy / Flickr30K)

KARPATHY = "a COCO Karpathy caption JSON ({'images': [{'filename', 'split', 'sentences': [{'raw'}]}]})"


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


def load_karpathy(path: str | Path, split: str) -> EvalSet:
    """Captioning split from a Karpathy-style JSON; ``train`` includes ``restval`` as is customary.

    Args:
        path: the JSON file, or a folder holding one ``dataset_*.json``.
        split: ``train``, ``val`` or ``test``.
    """
    file = _find_karpathy(Path(path))
    data = _read_json(file, KARPATHY)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or (
        data["images"] and not (isinstance(data["images"][0], dict) and "sentences" in data["images"][0])
    ):
        raise DataError(f"{file}: looks like {_guess_format(data)}, but task 'caption' expects {KARPATHY}")
    wanted = {"train", "restval"} if split == "train" else {split}
    examples, skipped = [], SkipCounter()
    for i, img in enumerate(data["images"]):
        where = f"{file}: images[{i}]"
        if not isinstance(img, dict):
            skipped.skip("entry is not a JSON object", where, strict=False)
            continue
        if img.get("split") not in wanted:
            continue
        caps = _caption_texts(img.get("sentences"))
        if not caps or not isinstance(img.get("filename"), str) or not img["filename"]:
            skipped.skip("no captions or no filename", where, strict=False)
            continue
        if _skip_reserved(skipped, where, *caps):
            continue
        media = resolve_media_path(str(Path(img.get("filepath", "")) / img["filename"]), file.parent)
        ex_id = str(img.get("cocoid", img.get("imgid", Path(img["filename"]).stem)))
        examples.append(Example(id=ex_id, media=media, target=caps[0], references=caps))
    splits = sorted({str(im.get("split")) for im in data["images"] if isinstance(im, dict)})
    if not examples:
        raise DataError(f"{file}: no images in split {split!r} (splits present: {', '.join(splits)})")
    return EvalSet("caption", split, file, examples, skipped=skipped)


# ---------------------------------------------------------------- VQA (VQAv2, OK-VQA, VizWiz, TextVQA)

VQA_QUESTIONS = "a VQA questions JSON ({'questions': [{'image_id', 'question', 'question_id'}]})"
VQA_ANNOTATIONS = "a VQA annotations JSON ({'annotations': [{'question_id', 'answers': [{'answer'}]}]})"


def _find_one(folder: Path, names: Sequence[str], pattern: str, what: str) -> Path:
    for n in names:
        if (folder / n).is_file():
            return folder / n
    found = sorted(folder.glob(pattern))
    if len(found) == 1:
        return found[0]
    extra = f" ({len(found)} files match {pattern!r}; keep one)" if found else ""
    raise DataError(f"{folder}: no {names[0]}{extra}; expected {what}")


def load_vqa(path: str | Path, split: str, image_template: str = DEFAULT_IMAGE_TEMPLATE) -> EvalSet:
    """VQA split from ``{split}_questions.json`` + ``{split}_annotations.json`` in a folder.

    Args:
        path: the folder (or one of the two files; the other is found beside it).
        split: ``train`` / ``val`` / ...
        image_template: image path relative to the folder, formatted with ``image_id``.
    """
    path = Path(path)
    folder = path.parent if path.is_file() else path
    if not folder.is_dir():
        raise DataError(f"{path}: no such folder; expected a folder with {split}_questions.json and annotations")
    qfile = _find_one(folder, [f"{split}_questions.json"], f"*{split}*questions*.json", VQA_QUESTIONS)
    afile = _find_one(folder, [f"{split}_annotations.json"], f"*{split}*annotations*.json", VQA_ANNOTATIONS)
    qdata, adata = _read_json(qfile, VQA_QUESTIONS), _read_json(afile, VQA_ANNOTATIONS)
    if not isinstance(qdata, dict) or not isinstance(qdata.get("questions"), list):
        raise DataError(f"{qfile}: looks like {_guess_format(qdata)}, but task 'vqa' expects {VQA_QUESTIONS}")
    if not isinstance(adata, dict) or not isinstance(adata.get("annotations"), list) or (
        adata["annotations"] and not (isinstance(adata["annotations"][0], dict) and "answers" in adata["annotations"][0])
    ):
        raise DataError(f"{afile}: looks like {_guess_format(adata)}, but task 'vqa' expects {VQA_ANNOTATIONS}")
    by_qid = {a.get("question_id"): a for a in adata["annotations"] if isinstance(a, dict)}
    examples, skipped = [], SkipCounter()
    for i, q in enumerate(qdata["questions"]):
        where = f"{qfile}: questions[{i}]"
        if not isinstance(q, dict):
            skipped.skip("entry is not a JSON object", where, strict=False)
            continue
        ann = by_qid.get(q.get("question_id"))
        if ann is None:
            skipped.skip(f"question without an annotation in {afile.name}", where, strict=False)
            continue
        answers = _answer_texts(ann.get("answers"))
        if not answers:
            skipped.skip("annotation without answer texts", where, strict=False)
            continue
        if q.get("image_id") is None or not isinstance(q.get("question"), str) or not q["question"].strip():
            skipped.skip("question without image_id or text", where, strict=False)
            continue
        mc = ann.get("multiple_choice_answer")
        target = str(mc) if isinstance(mc, (str, int, float)) and str(mc).strip() else Counter(answers).most_common(1)[0][0]
        if _skip_reserved(skipped, where, q["question"], target, *answers):
            continue
        try:
            rel = image_template.format(image_id=q["image_id"])
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise DataError(f"image template {image_template!r} cannot format image_id {q['image_id']!r} ({e})") from None
        examples.append(
            Example(id=str(q["question_id"]), media=resolve_media_path(rel, folder), target=target,
                    references=answers, question=q["question"])
        )  # fmt: skip
    if not examples:
        raise DataError(f"{qfile}: no question has an annotation with answers in {afile}")
    return EvalSet("vqa", split, qfile, examples, skipped=skipped)


# ---------------------------------------------------------------- classification

CLASSIFY = "a folder <data>/<split>/<class>/*.png (optionally <data>/classes.json) or <data>/<split>.jsonl rows {'image', 'label'}"


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
    examples: list[Example] = []
    try:
        names_file, names = find_class_names(folder)
        if folder.is_dir():
            images = read_class_folders(folder, expected=CLASSIFY)
            ordered = name_classes(list(images), names, names_file or "classes.json")
        elif jsonl.is_file():
            rows = list(read_jsonl(jsonl, required=("image",), skipped=skipped))
            if rows and "label" not in rows[0] and "class" not in rows[0]:
                raise DataError(f"{jsonl}: rows have no 'label'; task 'classify' expects rows {{'image', 'label'}}")
            labels = [row.get("label", row.get("class")) for row in rows]
            usable = [x for x in labels if isinstance(x, (str, int)) and not isinstance(x, bool) and str(x).strip()]
            class_names, index = label_classes(usable, names)
    except ClassFolderError as e:
        raise DataError(str(e)) from None
    if folder.is_dir():
        class_names = [name for _, name in ordered]
        for d, name in ordered:
            for f in images.get(d, []):
                examples.append(Example(id=f"{split}/{d}/{f.name}", media=f, target=name, references=(name,)))
        source = folder
    elif jsonl.is_file():
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
            ex_id = str(row.get("id", row["image"]))  # the path: unique, and shared with the support set only if
            # the same image is in both
            examples.append(Example(ex_id, resolve_media_path(row["image"], jsonl.parent), name, (name,)))
        source = jsonl
    else:
        raise DataError(f"{root}: neither {folder.name}/ nor {jsonl.name} found; expected {CLASSIFY}")
    if not examples:
        raise DataError(f"{source}: no images found; expected {CLASSIFY}")
    return EvalSet("classify", split, source, examples, class_names=class_names, skipped=skipped)


# ---------------------------------------------------------------- video captioning / video QA


def load_video_jsonl(path: str | Path, split: str, task: str) -> EvalSet:
    """Video split from ``<path>/<split>.jsonl`` (or the file itself).

    Rows are ``{"video", "text"}`` (or ``"captions": [...]``) for ``video-caption`` and
    ``{"video", "question", "answers", "question_id"}`` for ``video-qa``.
    """
    path = Path(path)
    file = path if path.is_file() else path / f"{split}.jsonl"
    expected = "rows {'video', 'text'}" if task == "video-caption" else "rows {'video', 'question', 'answers'}"
    if not file.is_file():
        raise DataError(f"{file}: file not found; task {task!r} expects a JSON Lines file with {expected}")
    skipped = SkipCounter()
    rows = list(read_jsonl(file, required=("video",), skipped=skipped))
    if not rows:
        raise DataError(f"{file}: no rows with a 'video'; task {task!r} expects {expected}")
    first = rows[0]
    if task == "video-caption" and "text" not in first and "captions" not in first:
        kind = " (this looks like a video-QA file)" if "question" in first else ""
        raise DataError(f"{file}: rows have no 'text'{kind}; task 'video-caption' expects {expected}")
    if task == "video-qa" and ("question" not in first or "answers" not in first):
        kind = " (this looks like a captioning file)" if "text" in first else ""
        raise DataError(f"{file}: rows have no 'question'/'answers'{kind}; task 'video-qa' expects {expected}")
    examples = []
    for i, row in enumerate(rows):
        where = f"{file}: row {i + 1}"
        if not isinstance(row["video"], str):
            skipped.skip("'video' is not a path", where, strict=False)
            continue
        media = resolve_media_path(row["video"], file.parent)
        ex_id = str(row.get("question_id", row.get("id", row["video"])))
        if task == "video-caption":
            caps = _caption_texts(row["captions"]) if row.get("captions") else _caption_texts(row.get("text"))
            if not caps:
                skipped.skip("no caption", where, strict=False)
                continue
            if _skip_reserved(skipped, where, *caps):
                continue
            examples.append(Example(ex_id, media, caps[0], caps))
        else:
            answers = _answer_texts(row.get("answers"))
            if not answers or not isinstance(row.get("question"), str) or not row["question"].strip():
                skipped.skip("no question or answers", where, strict=False)
                continue
            answer = row.get("answer")
            target = str(answer) if isinstance(answer, (str, int, float)) and str(answer).strip() else (
                Counter(answers).most_common(1)[0][0])
            if _skip_reserved(skipped, where, row["question"], target, *answers):
                continue
            examples.append(Example(ex_id, media, target, answers, question=row["question"]))
    if not examples:
        raise DataError(f"{file}: no usable rows; task {task!r} expects {expected}")
    return EvalSet(task, split, file, examples, skipped=skipped)


# ---------------------------------------------------------------- dispatch, checks, decoding

DEFAULT_SPLITS = {  # (support, query)
    "caption": ("train", "test"),
    **{t: ("train", "val") for t in VQA_TASKS},
    "classify": ("train", "val"),
    "video-caption": ("train", "val"),
    "video-qa": ("train", "val"),
}


def load_split(task: str, data: str | Path, split: str, image_template: str = DEFAULT_IMAGE_TEMPLATE) -> EvalSet:
    """One split of ``data`` in the format of ``task``."""
    if task == "caption":
        return load_karpathy(data, split)
    if task in VQA_TASKS:
        return load_vqa(data, split, image_template)
    if task == "classify":
        return load_classification(data, split)
    if task in ("video-caption", "video-qa"):
        return load_video_jsonl(data, split, task)
    raise DataError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")


def load_task_data(
    task: str,
    data: str | Path,
    split: str | None = None,
    support_split: str | None = None,
    image_template: str = DEFAULT_IMAGE_TEMPLATE,
) -> tuple[EvalSet, EvalSet]:
    """(support set, query set) of a task; splits default to train / test-or-val.

    For captioning the query split is ``test`` when the file has it, else ``val``.
    """
    if task not in TASKS:
        raise DataError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    default_support, default_query = DEFAULT_SPLITS[task]
    support = load_split(task, data, support_split or default_support, image_template)
    if split is None and task == "caption":
        try:
            query = load_split(task, data, default_query, image_template)
        except DataError:
            query = load_split(task, data, "val", image_template)
    else:
        query = load_split(task, data, split or default_query, image_template)
    return support, query
