"""Evaluation of the dual encoder: zero-shot classification and image<->text retrieval recall@K.

Zero-shot classification follows CLIP (Radford et al., arXiv 2103.00020, section 3.1.4): each class is the
mean of its prompt embeddings ("A photo of a {class}."), and an image takes the class whose prompt embedding is
nearest. Retrieval scores every image against every caption (several captions per image) as in Flamingo's
contrastive-model evaluation (arXiv 2204.14198, appendix B.1.3, Flickr30K / COCO recall@K).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch

from .model import DualEncoder
from .shared.class_folders import find_class_names, label_classes, name_classes, read_class_folders
from .shared.media import MediaError, load_image
from .shared.readers import read_json
from .shared.records import SkipCounter, read_jsonl, resolve_media_path
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
_CLASS_FOLDERS = "one sub-folder of images per class (or a .jsonl set)"


def _fill(template: str, name: str) -> str:
    return template.replace("{class}", name).replace("{}", name)


def load_classification_set(
    path: str | Path, skipped: SkipCounter | None = None, strict: bool = False,
) -> tuple[list[tuple[Path, int]], list[str]]:
    """Images and labels of a class-folder set (``<root>/<class>/*.png``) or a JSON Lines set
    (``{"image", "label"}``). Class names and order: ``shared.class_folders`` (a ``classes.json`` in the folder or its parent, else the
    sorted folder names or labels).

    Args:
        path: the folder or the .jsonl file.
        skipped / strict: the bad-row policy of ``read_jsonl`` for a JSON Lines set.

    Returns:
        ``[(image path, class index)]`` and the class names.

    Raises:
        ValueError: no class folders, fewer than 2 classes (top-1 over one class is always 100%), or no images.
    """
    path = Path(path)
    names_file, names = find_class_names(path if path.is_dir() else path.parent)
    if path.is_dir():
        found = read_class_folders(path, _CLASS_FOLDERS)
        ordered = name_classes(list(found), names, names_file or "classes.json")
        classes = [name for _, name in ordered]
        items = [(f, k) for k, (folder, _) in enumerate(ordered) for f in found.get(folder, [])]
    elif path.suffix == ".jsonl":
        rows = list(read_jsonl(path, required=("image", "label"), strict=strict, skipped=skipped,
                               types={"image": str, "label": (str, int)}))
        classes, index = label_classes([r["label"] for r in rows], names)
        items = [(resolve_media_path(r["image"], path.parent), index[str(r["label"])]) for r in rows
                 if str(r["label"]) in index]
    else:
        raise FileNotFoundError(f"classification set {path}: expected a folder of class folders or a .jsonl file")
    if not items:
        raise ValueError(f"{path}: no images found")
    if len(classes) < 2:
        raise ValueError(f"{path}: zero-shot classification needs at least 2 classes, found 1 ({classes[0]!r}); "
                         f"expected one sub-folder of images per class (or a .jsonl set with several labels)")
    return items, classes


@torch.no_grad()
def build_classifier(model: DualEncoder, classnames: list[str], templates=DEFAULT_TEMPLATES) -> torch.Tensor:
    """One L2-normalised text embedding per class, the mean over templates: ``(C, D)``."""
    prompts = [_fill(t, c.replace("_", " ")) for c in classnames for t in templates]
    emb = model.encode_captions(prompts).view(len(classnames), len(templates), -1).mean(1)  # (C, D)
    return torch.nn.functional.normalize(emb, dim=-1)


@torch.no_grad()
def _embed_images(model: DualEncoder, paths: list[Path], batch_size: int, skipped: SkipCounter, strict: bool,
                  name: str | Path = "the set"):
    cfg = model.config
    transform = EvalTransform(cfg.image_size, cfg.image_mean, cfg.image_std)
    device = model.logit_scale.device
    kept, chunks, batch, batch_idx, first_bad = [], [], [], [], None
    for i, p in enumerate(paths):
        try:
            batch.append(transform(load_image(p)))
            batch_idx.append(i)
        except MediaError as e:
            skipped.skip("unreadable image", str(p), strict)
            first_bad = first_bad or str(e)
        if len(batch) == batch_size or (i == len(paths) - 1 and batch):
            chunks.append(model.encode_image(torch.stack(batch).to(device)).float())
            kept += batch_idx
            batch, batch_idx = [], []
    if not chunks:
        raise ValueError(f"{name}: none of its {len(paths)} images is readable (first: {first_bad})")
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
        skipped = SkipCounter()
        items, classes = load_classification_set(path, skipped, strict)
        if max_images is not None and len(items) > max_images:  # an even spread over classes, not the first ones
            step = len(items) / max_images
            items = [items[int(i * step)] for i in range(max_images)]
        classifier = build_classifier(model, classes, templates)
        feats, kept = _embed_images(model, [p for p, _ in items], batch_size, skipped, strict, path)
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


def _karpathy_captions(path: Path, split: str, skipped: SkipCounter, strict: bool) -> dict[Path, list[str]]:
    """Captions per image of one split of a Karpathy JSON; entries without a file name or captions are skipped."""
    data = read_json(path)
    images = data.get("images")
    if not isinstance(images, list):
        raise ValueError(f"{path}: expected a Karpathy-split JSON with an 'images' list")
    splits = Counter(im["split"] for im in images if isinstance(im, dict) and isinstance(im.get("split"), str))
    if splits and split not in splits:  # a typo or a file without that split must not evaluate training images
        present = ", ".join(f"{s} ({n} images)" for s, n in sorted(splits.items()))
        raise ValueError(f"{path}: no images in split '{split}'; its splits are {present}")
    captions: dict[Path, list[str]] = {}
    for i, im in enumerate(images):
        if splits and (not isinstance(im, dict) or im.get("split") != split):
            continue  # a file with no split field at all is one evaluation set
        where = f"{path}: images[{i}]"
        if not isinstance(im, dict) or not isinstance(im.get("filename"), str) or not im["filename"]:
            skipped.skip("image entry without a 'filename' string", where, strict)
            continue
        sentences = im.get("sentences")
        # Karpathy's files hold {"raw": ...} objects; plain strings are accepted too
        texts = [s.get("raw") if isinstance(s, dict) else s for s in sentences] if isinstance(sentences, list) else []
        texts = [t for t in texts if isinstance(t, str) and t.strip()]
        if not texts:
            skipped.skip("no captions ('sentences' as strings or objects with 'raw')", where, strict)
            continue
        file = resolve_media_path(str(Path(str(im.get("filepath") or "")) / im["filename"]), path.parent)
        captions.setdefault(file, []).extend(texts)
    return captions


def load_retrieval_set(
    path: str | Path, split: str = "test", skipped: SkipCounter | None = None, strict: bool = False,
) -> tuple[list[Path], list[list[str]]]:
    """Images and their captions from JSON Lines (``{"image", "text": str | [str]}``; rows naming the same
    image are merged) or a Karpathy COCO JSON (the images of ``split``; all of them if no image has a split).

    Raises:
        ValueError: a Karpathy file without images in ``split`` (the message lists its splits), or no images.
    """
    path = Path(path)
    skipped = skipped if skipped is not None else SkipCounter()
    captions: dict[Path, list[str]] = {}
    if path.suffix == ".jsonl":
        for row in read_jsonl(path, required=("image", "text"), strict=strict, skipped=skipped,
                              types={"image": str, "text": (str, [str])}):
            texts = row["text"] if isinstance(row["text"], list) else [row["text"]]
            captions.setdefault(resolve_media_path(row["image"], path.parent), []).extend(texts)
    elif path.suffix == ".json":
        captions = _karpathy_captions(path, split, skipped, strict)
    else:
        raise ValueError(f"retrieval set {path}: expected a .jsonl or Karpathy .json file")
    captions = {p: c for p, c in captions.items() if c}
    if not captions:
        raise ValueError(f"{path}: no images with captions")
    return list(captions), list(captions.values())


@torch.no_grad()
def retrieval_recall(
    model: DualEncoder, path: str | Path, ks=(1, 5, 10), batch_size: int = 64, max_images: int | None = None,
    split: str = "test", strict: bool = False,
) -> dict[str, float]:
    """Image->text and text->image recall@K; an image query is right if any of its captions is in the top K.

    Returns:
        ``{"i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", ..., "images", "captions", "skipped"}``.
    """
    was_training = model.training
    model.eval()
    try:
        skipped = SkipCounter()
        paths, caps = load_retrieval_set(path, split, skipped, strict)
        if max_images is not None:
            paths, caps = paths[:max_images], caps[:max_images]
        img, kept = _embed_images(model, paths, batch_size, skipped, strict, path)
        texts = [t for i in kept for t in caps[i]]
        owner = torch.tensor([j for j, i in enumerate(kept) for _ in caps[i]], device=img.device)  # caption->image
        txt = model.encode_captions(texts).to(img.device)
        sims = img @ txt.T  # (N_img, N_txt)
        out: dict[str, float] = {"images": len(kept), "captions": len(texts), "skipped": sum(skipped.values())}
        for k in ks:
            top_txt = sims.topk(min(k, sims.shape[1]), dim=1).indices  # (N_img, k)
            out[f"i2t_r{k}"] = (owner[top_txt] == torch.arange(len(kept), device=img.device)[:, None]).any(1).float().mean().item()
            top_img = sims.T.topk(min(k, sims.shape[0]), dim=1).indices  # (N_txt, k)
            out[f"t2i_r{k}"] = (top_img == owner[:, None]).any(1).float().mean().item()
        return out
    finally:
        model.train(was_training)
