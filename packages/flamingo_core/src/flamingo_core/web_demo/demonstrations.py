"""Few-shot prompts for the web demo, with demonstrations from a dataset folder (arXiv 2204.14198, Section 3 and
Appendix A.2: ``<image>Output: {caption}<EOC>`` / ``<image>Question: {q} Answer: {a}<EOC>``, the query ending
right before its answer).

flamingo_core does not depend on fewshot_eval, so this reads the two layouts ``tools/shapesworld`` writes in a
small way: a COCO Karpathy caption JSON (``dataset_*.json``, the ``train`` and ``restval`` images, first caption)
and VQAv2 ``train_questions.json`` + ``train_annotations.json`` (images at ``images/{image_id:012d}.png``, the
``multiple_choice_answer``). Demonstrations are drawn at random (seeded) or by RICES (Section 3, Yang et al.): the
query image's pooled embedding from the model's frozen vision encoder against each candidate's, by cosine
similarity, the most similar placed last, next to the query.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from contrastive_encoder.shared.readers import read_json
from contrastive_encoder.shared.records import resolve_media_path

from ..cli import UserError, load_image

__all__ = ["RICES_POOL", "SELECTIONS", "Demonstration", "FewShotBuilder", "SupportSet", "read_support"]

SELECTIONS = ("random", "RICES")
RICES_POOL = 1024  # RICES compares the query with the first this many examples (embedding more takes minutes)
VQA_IMAGES = "images/{image_id:012d}.png"
LAYOUTS = ("a folder with dataset_*.json (COCO Karpathy captions) or train_questions.json + "
           "train_annotations.json (VQAv2)")


@dataclass(frozen=True)
class Demonstration:
    """One example of the support set: its image file, answer and (VQA) question."""

    image: Path
    answer: str
    question: str | None = None


@dataclass
class SupportSet:
    """The examples demonstrations are drawn from; ``task`` is ``caption`` or ``vqa``."""

    task: str
    source: Path
    examples: list[Demonstration]


def _json(path: Path, what: str):
    try:
        return read_json(path, expect=dict)
    except (ValueError, OSError) as e:
        raise UserError(f"{e} (expected {what})") from e


def _captions(file: Path) -> SupportSet:
    data = _json(file, "a COCO Karpathy JSON {'images': [{'filename', 'split', 'sentences': [{'raw'}]}]}")
    examples = []
    for img in data.get("images") if isinstance(data.get("images"), list) else []:
        if not isinstance(img, dict) or img.get("split") not in ("train", "restval"):
            continue
        sentences = [s.get("raw", "").strip() for s in img.get("sentences") or [] if isinstance(s, dict)]
        if sentences and sentences[0] and isinstance(img.get("filename"), str):
            path = resolve_media_path(str(Path(img.get("filepath", "")) / img["filename"]), file.parent)
            examples.append(Demonstration(path, sentences[0]))
    if not examples:
        raise UserError(f"{file}: no train or restval image with a caption (expected a COCO Karpathy JSON)")
    return SupportSet("caption", file, examples)


def _vqa(folder: Path) -> SupportSet:
    questions = _json(folder / "train_questions.json", "VQAv2 questions {'questions': [...]}").get("questions")
    annotations = _json(folder / "train_annotations.json", "VQAv2 annotations {'annotations': [...]}")
    by_id = {a.get("question_id"): a for a in annotations.get("annotations") or [] if isinstance(a, dict)}
    examples = []
    for q in questions if isinstance(questions, list) else []:
        ann = by_id.get(q.get("question_id")) if isinstance(q, dict) else None
        answers = [a.get("answer") for a in (ann or {}).get("answers") or [] if isinstance(a, dict)]
        target = (ann or {}).get("multiple_choice_answer") or (Counter(answers).most_common(1) or [(None,)])[0][0]
        if isinstance(target, str) and target.strip() and isinstance(q.get("question"), str):
            try:
                image = resolve_media_path(VQA_IMAGES.format(image_id=q["image_id"]), folder)
            except (KeyError, ValueError, TypeError):
                continue  # a question without a numeric image_id has no image in this layout
            examples.append(Demonstration(image, target.strip(), q["question"].strip()))
    if not examples:
        raise UserError(f"{folder}: no question with an annotated answer in train_questions.json")
    return SupportSet("vqa", folder / "train_questions.json", examples)


def read_support(folder: str | Path) -> SupportSet:
    """The support set of a dataset folder (or its caption JSON)."""
    path = Path(str(folder).strip()).expanduser()
    if path.is_file() and path.suffix == ".json":
        return _captions(path)
    if not path.is_dir():
        raise UserError(f"dataset folder {str(folder)!r}: no such folder; expected {LAYOUTS}")
    karpathy = sorted(path.glob("dataset_*.json"))
    if karpathy:
        return _captions(karpathy[0])
    if (path / "train_questions.json").is_file():
        return _vqa(path)
    raise UserError(f"dataset folder {path}: found neither layout; expected {LAYOUTS}")


class FewShotBuilder:
    """Prompts for one model: reads support sets and keeps each set's RICES embeddings."""

    def __init__(self, model):
        self.model = model
        self._embeddings: dict = {}  # (source file, mtime) -> (N, D) embeddings of the first RICES_POOL examples

    def _embed(self, images: list):
        import torch

        encoder = self.model.vision_encoder
        dtype = next(encoder.parameters()).dtype
        pixels = torch.stack([encoder.preprocess(im) for im in images]).to(self.model.device, dtype)  # (B, C, H, W)
        with torch.no_grad():
            return torch.nn.functional.normalize(encoder.embed(pixels).float(), dim=-1).cpu()  # (B, D)

    def _pool_embeddings(self, support: SupportSet):
        import torch

        key = (str(support.source), support.source.stat().st_mtime_ns)
        if key not in self._embeddings:
            pool = support.examples[:RICES_POOL]
            chunks = [self._embed([load_image(str(d.image)) for d in pool[i:i + 64]]) for i in range(0, len(pool), 64)]
            self._embeddings[key] = torch.cat(chunks)
        return self._embeddings[key]

    def select(self, support: SupportSet, shots: int, selection: str, query_image, seed: int = 0) -> list:
        """``shots`` demonstrations, in prompt order (RICES: the most similar last)."""
        if selection not in SELECTIONS:
            raise UserError(f"selection {selection!r}: expected one of {', '.join(SELECTIONS)}")
        if not 0 <= shots <= len(support.examples):
            raise UserError(f"{shots} shots asked but {support.source} has {len(support.examples)} examples")
        if shots == 0:
            return []
        if selection == "random":
            return random.Random(seed).sample(support.examples, shots)
        similarity = self._pool_embeddings(support) @ self._embed([query_image])[0]  # (N,) cosine
        top = similarity.topk(min(shots, len(similarity))).indices.tolist()  # most similar first
        return [support.examples[i] for i in reversed(top)]

    def build(self, support: SupportSet, demos: list, question: str | None) -> tuple[str, list]:
        """The prompt text (``<image>`` where each image goes, as ``flamingo generate --prompt`` takes it) and
        its images: the demonstrations' then the query's (the caller appends the query image)."""
        token, eoc = self.model.config.media_token, self.model.config.eoc_token
        if support.task == "vqa" and not (question or "").strip():
            raise UserError("this dataset is VQA: type the question about the query image")
        if support.task == "vqa":
            text = "".join(f"{token}Question: {d.question} Answer: {d.answer}{eoc}" for d in demos)
            text += f"{token}Question: {question.strip()} Answer:"
        else:
            text = "".join(f"{token}Output: {d.answer}{eoc}" for d in demos) + f"{token}Output:"
        return text, [load_image(str(d.image)) for d in demos]
