"""Evaluation of the dual encoder: zero-shot classification and image<->text retrieval recall@K.

Zero-shot classification follows CLIP (Radford et al., arXiv 2103.00020, section 3.1.4): each class is the
mean of its prompt embeddings ("A photo of a {class}."), and an image takes the class whose prompt embedding is
nearest. Retrieval scores every image against every caption (several captions per image) as in Flamingo's
contrastive-model evaluation (arXiv 2204.14198, appendix B.1.3, Flickr30K / COCO recall@K).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .data.jsonl import SkipCounter, read_jsonl, resolve_media_path
from .data.sources import open_image
from .model import DualEncoder
from .transforms import EvalTransform

__all__ = [
    "DEFAULT_TEMPLATES",
    "build_classifier",
    "load_classification_set",
    "load_retrieval_set",
    "retrieval_recall",
    "zero_shot_classify",
]

DEFAULT_TEMPLATES = ("A photo of a {class}.",)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


def _fill(template: str, name: str) -> str:
    return template.replace("{class}", name).replace("{}", name)


def load_classification_set(path: str | Path) -> tuple[list[tuple[Path, int]], list[str]]:
    """Images and labels of a class-folder set (``<root>/<class>/*.png``) or a JSON Lines set
    (``{"image", "label"}``). Class order comes from a ``classes.json`` in the folder or its parent, else sorted.

    Returns:
        ``[(image path, class index)]`` and the class names.
    """
    path = Path(path)
    classes = None
    for candidate in (path / "classes.json", path.parent / "classes.json"):
        if candidate.is_file():
            classes = [str(c) for c in json.loads(candidate.read_text())]
            break
    if path.is_dir():
        folders = sorted(p.name for p in path.iterdir() if p.is_dir())
        if not folders:
            raise ValueError(f"{path}: expected one sub-folder per class, found none")
        classes = classes if classes and set(folders) <= set(classes) else folders
        items = [
            (f, classes.index(c)) for c in folders for f in sorted((path / c).iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES
        ]
    elif path.suffix == ".jsonl":
        rows = list(read_jsonl(path, required=("image", "label")))
        labels = sorted({str(r["label"]) for r in rows})
        classes = classes if classes and set(labels) <= set(classes) else labels
        items = [(resolve_media_path(r["image"], path.parent), classes.index(str(r["label"]))) for r in rows]
    else:
        raise FileNotFoundError(f"classification set {path}: expected a folder of class folders or a .jsonl file")
    if not items:
        raise ValueError(f"{path}: no images found")
    return items, classes


@torch.no_grad()
def build_classifier(model: DualEncoder, classnames: list[str], templates=DEFAULT_TEMPLATES) -> torch.Tensor:
    """One L2-normalised text embedding per class, the mean over templates: ``(C, D)``."""
    prompts = [_fill(t, c.replace("_", " ")) for c in classnames for t in templates]
    emb = model.encode_captions(prompts).view(len(classnames), len(templates), -1).mean(1)  # (C, D)
    return torch.nn.functional.normalize(emb, dim=-1)


@torch.no_grad()
def _embed_images(model: DualEncoder, paths: list[Path], batch_size: int, skipped: SkipCounter, strict: bool):
    cfg = model.config
    transform = EvalTransform(cfg.image_size, cfg.image_mean, cfg.image_std)
    device = model.logit_scale.device
    kept, chunks, batch, batch_idx = [], [], [], []
    for i, p in enumerate(paths):
        try:
            batch.append(transform(open_image(p)))
            batch_idx.append(i)
        except (OSError, ValueError, SyntaxError) as e:
            skipped.skip(f"unreadable image ({type(e).__name__})", str(p), strict)
        if len(batch) == batch_size or (i == len(paths) - 1 and batch):
            chunks.append(model.encode_image(torch.stack(batch).to(device)).float())
            kept += batch_idx
            batch, batch_idx = [], []
    if not chunks:
        raise ValueError("no readable images to evaluate")
    return torch.cat(chunks), kept


@torch.no_grad()
def zero_shot_classify(
    model: DualEncoder, path: str | Path, templates=DEFAULT_TEMPLATES, batch_size: int = 64,
    max_images: int | None = None, strict: bool = False,
) -> dict[str, float]:
    """Zero-shot accuracy on a classification set.

    Returns:
        ``{"top1", "top5", "n", "classes", "skipped"}`` (accuracies in [0, 1]).
    """
    was_training = model.training
    model.eval()
    try:
        items, classes = load_classification_set(path)
        if max_images is not None and len(items) > max_images:  # an even spread over classes, not the first ones
            step = len(items) / max_images
            items = [items[int(i * step)] for i in range(max_images)]
        classifier = build_classifier(model, classes, templates)
        skipped = SkipCounter()
        feats, kept = _embed_images(model, [p for p, _ in items], batch_size, skipped, strict)
        labels = torch.tensor([items[i][1] for i in kept], device=feats.device)
        logits = feats @ classifier.T  # (N, C)
        topk = logits.topk(min(5, len(classes)), dim=-1).indices
        return {
            "top1": (topk[:, 0] == labels).float().mean().item(),
            "top5": (topk == labels[:, None]).any(-1).float().mean().item(),
            "n": len(kept),
            "classes": len(classes),
            "skipped": sum(skipped.values()),
        }
    finally:
        model.train(was_training)


def load_retrieval_set(path: str | Path, split: str = "test") -> tuple[list[Path], list[list[str]]]:
    """Images and their captions from JSON Lines (``{"image", "text": str | [str]}``; rows naming the same
    image are merged) or a Karpathy COCO JSON (images of ``split``; all images if none has it)."""
    path = Path(path)
    captions: dict[Path, list[str]] = {}
    if path.suffix == ".jsonl":
        for row in read_jsonl(path, required=("image", "text")):
            texts = row["text"] if isinstance(row["text"], list) else [row["text"]]
            captions.setdefault(resolve_media_path(row["image"], path.parent), []).extend(map(str, texts))
    elif path.suffix == ".json":
        data = json.loads(path.read_text())
        if "images" not in data:
            raise ValueError(f"{path}: expected a Karpathy-split JSON with an 'images' list")
        images = [im for im in data["images"] if im.get("split") == split] or data["images"]
        for im in images:
            file = resolve_media_path(str(Path(im.get("filepath", "")) / im["filename"]), path.parent)
            captions.setdefault(file, []).extend(s["raw"] for s in im["sentences"])
    else:
        raise ValueError(f"retrieval set {path}: expected a .jsonl or Karpathy .json file")
    if not captions:
        raise ValueError(f"{path}: no images with captions")
    return list(captions), list(captions.values())


@torch.no_grad()
def retrieval_recall(
    model: DualEncoder, path: str | Path, ks=(1, 5, 10), batch_size: int = 64, max_images: int | None = None,
    split: str = "test",
) -> dict[str, float]:
    """Image->text and text->image recall@K; an image query is right if any of its captions is in the top K.

    Returns:
        ``{"i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", ..., "images", "captions"}``.
    """
    was_training = model.training
    model.eval()
    try:
        paths, caps = load_retrieval_set(path, split)
        if max_images is not None:
            paths, caps = paths[:max_images], caps[:max_images]
        img, kept = _embed_images(model, paths, batch_size, SkipCounter(), strict=False)
        texts = [t for i in kept for t in caps[i]]
        owner = torch.tensor([j for j, i in enumerate(kept) for _ in caps[i]], device=img.device)  # caption->image
        txt = model.encode_captions(texts).to(img.device)
        sims = img @ txt.T  # (N_img, N_txt)
        out: dict[str, float] = {"images": len(kept), "captions": len(texts)}
        for k in ks:
            top_txt = sims.topk(min(k, sims.shape[1]), dim=1).indices  # (N_img, k)
            out[f"i2t_r{k}"] = (owner[top_txt] == torch.arange(len(kept), device=img.device)[:, None]).any(1).float().mean().item()
            top_img = sims.T.topk(min(k, sims.shape[0]), dim=1).indices  # (N_txt, k)
            out[f"t2i_r{k}"] = (top_img == owner[:, None]).any(1).float().mean().item()
        return out
    finally:
        model.train(was_training)
