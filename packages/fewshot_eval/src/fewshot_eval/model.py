"""The model seen by the evaluator: a three-method protocol, and its implementation over flamingo_core.

Flamingo (Alayrac et al., arXiv 2204.14198) is evaluated by prompting: open-ended tasks generate text after
an interleaved prompt, close-ended tasks score candidate continuations, and RICES needs the frozen vision
encoder's pooled image embedding. ``EvalModel`` is exactly that surface, so the evaluator and its tests do not
depend on how the model is built; ``FlamingoEvalModel`` adapts a saved ``flamingo_core.Flamingo``.

A prompt is a list of items - strings, images (``PIL.Image.Image``) and videos (lists of PIL frames) - in
reading order; the model's processor puts an ``<image>`` token where each image or video occurs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

__all__ = [
    "EOC",
    "IMAGE_TOKEN",
    "EvalModel",
    "FlamingoEvalModel",
    "ModelLoadError",
    "Prompt",
    "PromptItem",
    "prompt_to_text",
    "truncate_generation",
]

EOC = "<EOC>"
IMAGE_TOKEN = "<image>"
PromptItem = str | Image.Image | list[Image.Image]
Prompt = list[PromptItem]


class ModelLoadError(ValueError):
    """The model folder is missing or does not hold a model this package can load."""


@runtime_checkable
class EvalModel(Protocol):
    """What the evaluator needs from a model."""

    identifier: str  # stable name of the model (and its vision encoder), used in results and cache keys

    def generate(self, prompts: list[Prompt], max_new_tokens: int, num_beams: int = 3) -> list[str]:
        """Text generated after each prompt, cut at ``<EOC>`` / EOS (the stop token itself not included)."""
        ...

    def loglikelihood(self, prefix: Prompt, continuations: list[str]) -> list[tuple[float, int]]:
        """(summed log-probability, token count) of each continuation after ``prefix``.

        The prefix is encoded once and its cache reused for every continuation.
        """
        ...

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        """(N, D) L2-normalised pooled features from the frozen vision encoder (for RICES)."""
        ...


def prompt_to_text(prompt: Sequence[PromptItem]) -> str:
    """The prompt as the model's text sees it: every image or video replaced by ``<image>``."""
    return "".join(item if isinstance(item, str) else IMAGE_TOKEN for item in prompt)


def truncate_generation(text: str, stop: Sequence[str] = (EOC,)) -> str:
    """Cut generated text at the first stop string."""
    cut = len(text)
    for s in stop:
        i = text.find(s)
        if i != -1:
            cut = min(cut, i)
    return text[:cut]


def _folder_identifier(model_dir: Path) -> str:
    """Name + short hash of the folder's config files and weight sizes: changes when the model changes."""
    h = hashlib.sha256()
    for f in sorted(model_dir.iterdir()):
        if f.is_file():
            h.update(f.name.encode())
            h.update(str(f.stat().st_size).encode())
            if f.suffix == ".json" and f.stat().st_size < 1_000_000:
                h.update(f.read_bytes())
    return f"flamingo:{model_dir.resolve().name}:{h.hexdigest()[:12]}"


class FlamingoEvalModel:
    """``EvalModel`` over a folder written by ``flamingo_core.Flamingo.save_pretrained``.

    Args:
        model_dir: the saved model.
        device: torch device; CUDA when available by default.
        model: an already built ``Flamingo`` (then ``model_dir`` only names it), for tests and notebooks.
        processor: its ``FlamingoProcessor``; built from the model when omitted.
    """

    def __init__(self, model_dir: str | Path | None = None, device: str | None = None, model=None, processor=None):
        import torch

        if model is None:
            if model_dir is None:
                raise ModelLoadError("FlamingoEvalModel needs a model folder or a model")
            model_dir = Path(model_dir)
            if not model_dir.is_dir() or not any(model_dir.glob("*.json")):
                raise ModelLoadError(
                    f"{model_dir}: not a Flamingo model folder (expected the config JSON and weights written by "
                    "Flamingo.save_pretrained)"
                )
            try:
                from flamingo_core import Flamingo
            except ImportError as e:  # pragma: no cover - depends on the installation
                raise ModelLoadError(f"flamingo_core is not importable ({e}); install packages/flamingo_core") from e
            try:
                model = Flamingo.from_pretrained(model_dir)
            except (OSError, ValueError, KeyError) as e:
                raise ModelLoadError(f"{model_dir}: could not load a Flamingo model ({e})") from e
            self.identifier = _folder_identifier(model_dir)
        else:
            self.identifier = f"flamingo:{model_dir or type(model).__name__}:{id(model):x}"
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.processor = processor if processor is not None else self._build_processor(model)
        self.tokenizer = getattr(self.processor, "tokenizer", None) or getattr(model, "tokenizer", None)

    @staticmethod
    def _build_processor(model):
        from flamingo_core import FlamingoProcessor

        for attr in ("processor",):
            if getattr(model, attr, None) is not None:
                return getattr(model, attr)
        return FlamingoProcessor(tokenizer=model.tokenizer, vision_encoder=model.vision_encoder)

    def _batch(self, prompts: list[Prompt], **kwargs) -> dict:
        batch = self.processor(prompts, **kwargs)
        return {k: (v.to(self.device) if hasattr(v, "to") else v) for k, v in dict(batch).items()}

    def _stop_strings(self) -> list[str]:
        stops = [EOC]
        eos = getattr(self.tokenizer, "eos_token", None)
        if eos:
            stops.append(eos)
        return stops

    def generate(self, prompts: list[Prompt], max_new_tokens: int, num_beams: int = 3) -> list[str]:
        import torch

        batch = self._batch(prompts, padding_side="left")
        with torch.inference_mode():
            new_ids = self.model.generate(
                batch["input_ids"], batch["attention_mask"], batch.get("media"),
                max_new_tokens=max_new_tokens, num_beams=num_beams, media_mask=batch.get("media_mask"),
            )  # fmt: skip
        texts = self.tokenizer.batch_decode(new_ids, skip_special_tokens=False)
        return [truncate_generation(t, self._stop_strings()) for t in texts]

    def loglikelihood(self, prefix: Prompt, continuations: list[str]) -> list[tuple[float, int]]:
        import torch

        batch = self._batch([prefix])
        cont_ids = [self.tokenizer(c, add_special_tokens=False)["input_ids"] for c in continuations]
        with torch.inference_mode():
            out = self.model.score_continuations(
                batch["input_ids"], batch["attention_mask"], batch.get("media"), cont_ids,
                media_mask=batch.get("media_mask"),
            )  # fmt: skip
        return [(float(lp), int(n)) for lp, n in out]

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        import torch

        encoder = self.model.vision_encoder
        pixels = torch.stack([encoder.preprocess(im.convert("RGB")) for im in images]).to(self.device)
        with torch.inference_mode():
            emb = encoder.embed(pixels)  # (N, D), L2-normalised by contract
        return emb.float().cpu().numpy()


