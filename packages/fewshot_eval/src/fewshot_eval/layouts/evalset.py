"""The records every evaluation loader returns (``Example``, ``EvalSet``), its one error (``DataError``) and the
parsing rules the loaders share: answers and captions in their several JSON shapes, the prompt's own markers
refused inside data, a file found by its split's name.

A bad record in a file of the right format is skipped and counted in ``EvalSet.skipped``; a file that is not
of the task's format, or that cannot belong with its companion file, is a one-line ``DataError`` naming it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from contrastive_encoder.shared.readers import CorruptFileError, read_json
from contrastive_encoder.shared.records import SkipCounter
from fewshot_eval.model import EOC, IMAGE_TOKEN

__all__ = ["RESERVED_TOKENS", "DataError", "EvalSet", "Example", "find_split_file", "read_json_file"]

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
    question: str | None = None  # VQA / video QA: the question; hateful-memes: the meme's text

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
    # False for a split without answers (VQAv2 test-dev): its predictions go to the benchmark's evaluation server
    # (``server_results``), never to a metric
    annotated: bool = True
    # the questions file the evaluation server wants answered in full (VQAv2 test2015 for a test-dev run), if found
    server_questions: Path | None = None
    # False when the run writes the server's result file instead of scoring (``load_task_data``'s ``score``)
    scored: bool = True

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


def read_json_file(path: Path, what: str):
    """The parsed JSON of ``path``; a missing or corrupt file is a ``DataError`` saying what was expected."""
    try:
        return read_json(path, expect=object)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found (expected {what})") from None
    except CorruptFileError as e:
        raise DataError(f"{e}; expected {what}") from None


def reserved_token(texts) -> str | None:
    """The first prompt marker (``<image>``, ``<EOC>``) found in any of ``texts``, else None."""
    for text in texts:
        for token in RESERVED_TOKENS:
            if text is not None and token in text:
                return token
    return None


def skip_reserved(skipped: SkipCounter, where: str, *texts) -> bool:
    """Count and skip a record whose text holds a prompt marker (the processor would take ``<image>`` for a
    missing image and stop the whole run); True when skipped."""
    token = reserved_token(texts)
    if token is None:
        return False
    skipped.skip(f"text contains the prompt marker {token}", where, strict=False)
    return True


def answer_texts(answers) -> tuple[str, ...]:
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


def caption_texts(sentences) -> tuple[str, ...]:
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


def guess_format(obj) -> str:
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


def _names_split(name: str, split: str) -> bool:
    """Whether a file name holds ``split`` as a word, optionally with a year: ``test2015`` names ``test``, and
    ``test-dev2015`` names ``test-dev`` but not ``test``."""
    return re.search(rf"(?<![A-Za-z0-9]){re.escape(split)}(?:\d{{4}})?(?![A-Za-z-])", name) is not None


def find_split_file(folder: Path, names: Sequence[str], pattern: str, what: str, split: str,
                    required: bool = True) -> Path | None:  # fmt: skip
    """The file of one split in ``folder``: one of ``names``, else the one file matching the glob ``pattern``
    (several: the one naming ``split`` as a word, as VQAv2's ``..._test2015_questions.json`` beside
    ``..._test-dev2015_questions.json``). None when nothing matches and not ``required``."""
    for n in names:
        if (folder / n).is_file():
            return folder / n
    found = sorted(folder.glob(pattern))
    if len(found) > 1:
        found = [f for f in found if _names_split(f.name, split)] or found
    if len(found) == 1:
        return found[0]
    if not found and not required:
        return None
    extra = f" ({len(found)} files match {pattern!r}; keep one)" if found else ""
    raise DataError(f"{folder}: no {names[0]}{extra}; expected {what}")
