"""Captioning metrics as the COCO caption evaluation computes them: CIDEr, BLEU-4 and ROUGE-L.

Two scorers give the same numbers (checked to 1e-9 on thousands of varied captions in the tests):

- ``pycocoevalcap``: the COCO caption evaluation itself (Chen et al., arXiv 1504.00325) - its Java
  PTBTokenizer (stanford-corenlp 3.4.1, bundled in the package) and its ``Cider``, ``Bleu`` and ``Rouge``
  scorers. Needs ``pip install pycocoevalcap`` and Java (``apt-get install default-jre-headless``).
- ``python``: this package's ports (``ptb_tokenizer``, ``cider``, ``bleu``, ``rouge``), for machines without Java.

``auto`` (the default) takes pycocoevalcap when both are installed, and falls back to the Python scorer with a
warning when the Java tokenizer fails; the scorer that ran is returned with the scores. METEOR and SPICE, also
in pycocoevalcap, are left out: they need Java with gigabytes of memory (SPICE also a model download), and the
Python scorer could not give them.

Both scorers first replace the line breaks of ``ptb_tokenizer.LINE_BREAKS`` inside captions by spaces: the Java
tokenizer would read each as the end of a caption and shift every later caption onto the wrong image.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

from fewshot_eval.metrics.bleu import bleu_scores
from fewshot_eval.metrics.cider import cider_scores
from fewshot_eval.metrics.ptb_tokenizer import LINE_BREAKS, check_captions, tokenize_captions
from fewshot_eval.metrics.rouge import rouge_l_scores

__all__ = ["CAPTION_METRICS", "CAPTION_SCORERS", "CORPUS_METRICS", "INSTALL_OFFICIAL", "CaptionScores", "caption_scores",
           "official_scorer_missing", "resolve_caption_scorer"]  # fmt: skip

CAPTION_SCORERS = ("auto", "pycocoevalcap", "python")
CAPTION_METRICS = ("CIDEr", "BLEU-4", "ROUGE-L")
CORPUS_METRICS = ("BLEU-4",)  # a corpus statistic: not the mean of its per-image scores
INSTALL_OFFICIAL = "pip install pycocoevalcap && apt-get install -y default-jre-headless"
_CLEAN = str.maketrans({c: " " for c in LINE_BREAKS})


@dataclass
class CaptionScores:
    """The scores of one set of captions, on pycocoevalcap's 0-1 scale (CIDEr 0-10)."""

    scorer: str  # "pycocoevalcap" or "python": the one that ran
    means: dict[str, float] = field(default_factory=dict)  # metric -> corpus score
    per_image: dict[str, dict[str, float]] = field(default_factory=dict)  # metric -> image id -> score


def official_scorer_missing() -> str | None:
    """Why pycocoevalcap cannot run here (one line), or None when it can."""
    missing = [name for name, ok in (("the pycocoevalcap package", importlib.util.find_spec("pycocoevalcap")),
                                     ("Java (java on PATH)", shutil.which("java"))) if not ok]  # fmt: skip
    return f"{' and '.join(missing)} not found (install: {INSTALL_OFFICIAL})" if missing else None


def resolve_caption_scorer(scorer: str) -> str:
    """``pycocoevalcap`` or ``python`` for a requested scorer of ``CAPTION_SCORERS``.

    Raises:
        ValueError: an unknown name, or ``pycocoevalcap`` asked for where it cannot run.
    """
    if scorer not in CAPTION_SCORERS:
        raise ValueError(f"unknown caption scorer {scorer!r}; expected one of {', '.join(CAPTION_SCORERS)}")
    missing = official_scorer_missing() if scorer != "python" else None
    if scorer == "pycocoevalcap" and missing:
        raise ValueError(f"caption scorer pycocoevalcap: {missing}; or choose 'python' or 'auto'")
    return "python" if scorer == "python" or missing else "pycocoevalcap"


def caption_scores(
    predictions: Mapping[str, str], references: Mapping[str, Sequence[str]], scorer: str = "auto"
) -> CaptionScores:
    """CIDEr, BLEU-4 and ROUGE-L of generated captions, as ``COCOEvalCap.evaluate`` computes them.

    Args:
        predictions: image id -> generated caption (raw text: tokenisation is part of the metric).
        references: image id -> reference captions; must hold every id of ``predictions``.
        scorer: one of ``CAPTION_SCORERS``.

    Returns:
        The scores of ``CAPTION_METRICS`` and the scorer that computed them (per-image BLEU-4 is on one image;
        the corpus BLEU-4 is not their mean).
    """
    resolved = resolve_caption_scorer(scorer)
    ids = check_captions(predictions, references)
    if not ids:
        return CaptionScores(resolved, {m: 0.0 for m in CAPTION_METRICS}, {m: {} for m in CAPTION_METRICS})
    preds = {i: predictions[i].translate(_CLEAN) for i in ids}
    refs = {i: [r.translate(_CLEAN) for r in references[i]] for i in ids}
    if resolved == "pycocoevalcap":
        try:
            cands, ref_lists = _official_tokenize(preds, refs, ids)
        except (OSError, RuntimeError) as e:
            if scorer == "pycocoevalcap":
                raise ValueError(f"caption scorer pycocoevalcap: {e}") from e
            warnings.warn(f"pycocoevalcap's Java tokenizer failed ({e}); scoring with the Python scorer", stacklevel=2)
            return caption_scores(predictions, references, "python")
        return _official_scores(ids, cands, ref_lists)
    cands, ref_lists = tokenize_captions(preds, refs, ids)
    corpus_bleu, image_bleu = bleu_scores(cands, ref_lists)
    cider_each, rouge_each = cider_scores(cands, ref_lists), rouge_l_scores(cands, ref_lists)
    return CaptionScores("python", {"CIDEr": sum(cider_each) / len(ids), "BLEU-4": corpus_bleu[3],
                                    "ROUGE-L": sum(rouge_each) / len(ids)},
                         {"CIDEr": dict(zip(ids, cider_each)), "BLEU-4": dict(zip(ids, image_bleu[3])),
                          "ROUGE-L": dict(zip(ids, rouge_each))})  # fmt: skip


@contextlib.contextmanager
def _stderr_to_file() -> Iterator[BinaryIO]:
    """The process's stderr (file descriptor 2, which Java writes to) sent to a file for the duration."""
    with tempfile.TemporaryFile(mode="w+b") as sink:
        saved = os.dup(2)
        try:
            os.dup2(sink.fileno(), 2)
            yield sink
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _official_tokenize(preds: dict[str, str], refs: dict[str, list[str]], ids: list[str]):
    """pycocoevalcap's PTBTokenizer on the references, then on the predictions (two Java calls, as
    ``COCOEvalCap`` makes), its progress line kept off the console.

    Raises:
        RuntimeError: Java failed or returned fewer lines than captions (its last stderr line in the message).
    """
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    with _stderr_to_file() as err:
        gts = PTBTokenizer().tokenize({i: [{"caption": r} for r in refs[i]] for i in ids})
        res = PTBTokenizer().tokenize({i: [{"caption": preds[i]}] for i in ids})
    if any(len(gts.get(i, [])) != len(refs[i]) or len(res.get(i, [])) != 1 for i in ids):
        err.seek(0)
        last = (err.read().decode("utf-8", "replace").strip().splitlines() or ["no message"])[-1]
        raise RuntimeError(f"the Java tokenizer returned fewer lines than captions: {last}")
    return [res[i][0] for i in ids], [gts[i] for i in ids]


def _official_scores(ids: list[str], cands: list[str], refs: list[list[str]]) -> CaptionScores:
    """pycocoevalcap's Cider, Bleu(4) and Rouge on its own tokenizer's output."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    gts, res = dict(zip(ids, refs)), {i: [c] for i, c in zip(ids, cands)}
    cider_mean, cider_each = Cider().compute_score(gts, res)
    bleu_corpus, bleu_each = Bleu(4).compute_score(gts, res, verbose=0)
    rouge_mean, rouge_each = Rouge().compute_score(gts, res)
    return CaptionScores("pycocoevalcap", {"CIDEr": float(cider_mean), "BLEU-4": float(bleu_corpus[3]),
                                           "ROUGE-L": float(rouge_mean)},
                         {"CIDEr": dict(zip(ids, map(float, cider_each))),
                          "BLEU-4": dict(zip(ids, map(float, bleu_each[3]))),
                          "ROUGE-L": dict(zip(ids, map(float, rouge_each)))})  # fmt: skip
