"""Test doubles shared by the fewshot_eval tests and their subprocess workers: a deterministic fake model and
tiny solid-colour images.

The fake model reads its prompt the way a well-trained few-shot model would: it answers with the last
demonstration's answer (under RICES the most similar one), scores a candidate continuation by where it appears
in the prompt's demonstrations (order-dependent, so ensembling over orderings changes scores), and embeds an
image by its mean colour. Its calls are recorded so tests can count work.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from fewshot_eval.model import prompt_to_text

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}


def write_image(path: Path, colour: str, jitter: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = tuple(min(255, max(0, c + jitter)) for c in COLOURS[colour])
    Image.new("RGB", (16, 16), rgb).save(path)
    return path


class FakeModel:
    """A deterministic ``EvalModel``."""

    identifier = "fake-model-v1"

    def __init__(self, fail_after_generate_calls: int | None = None):
        self.generate_calls: list[list[str]] = []
        self.loglikelihood_calls: list[tuple[str, list[str]]] = []
        self.embed_calls = 0
        self.fail_after = fail_after_generate_calls

    def generate(self, prompts, max_new_tokens, num_beams=3):
        if self.fail_after is not None and len(self.generate_calls) >= self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        texts = [prompt_to_text(p) for p in prompts]
        self.generate_calls.append(texts)
        out = []
        for t in texts:
            answers = re.findall(r"(?:Output|Answer): (.*?)<EOC>", t)
            # a model that goes on with another demonstration, which post-processing must cut
            out.append((answers[-1] if answers else "nothing") + "\nQuestion: what next?")
        return out

    def loglikelihood(self, prefix, continuations):
        text = prompt_to_text(prefix)
        self.loglikelihood_calls.append((text, list(continuations)))
        answers = re.findall(r"Output: (.*?)<EOC>", text)
        out = []
        for c in continuations:
            name = c.strip().replace("<EOC>", "")
            # later demonstrations weigh more: order matters, like recency in a real LM
            score = sum((i + 1) / len(answers) for i, a in enumerate(answers) if a == name) - 0.1 * len(name)
            out.append((score * len(name), len(name)))
        return out

    def embed_images(self, images):
        self.embed_calls += 1
        feats = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32).mean(axis=(0, 1)) for im in images])
        feats = feats - 128.0
        return feats / np.linalg.norm(feats, axis=1, keepdims=True)
