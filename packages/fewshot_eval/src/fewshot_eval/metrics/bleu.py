"""BLEU as computed by the COCO caption evaluation (``pycocoevalcap.bleu``), without Java.

Papineni et al., "BLEU: a Method for Automatic Evaluation of Machine Translation" (ACL 2002). The COCO
evaluation's BLEU-n is the corpus geometric mean of the clipped n-gram precisions of orders 1..n, times a
brevity penalty from the summed candidate length against the summed *closest* reference lengths (ties: the
shorter reference). Each precision is smoothed as ``(correct + 1e-15) / (guess + 1e-9)`` so that an empty
candidate scores 0 instead of dividing by zero; per-image scores are the same formula on one image.

Corpus BLEU is not the mean of the per-image scores: ``bleu`` returns both, and a report takes the corpus one.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence

from fewshot_eval.metrics.ptb_tokenizer import check_captions, tokenize_captions

__all__ = ["bleu", "bleu_scores"]

_SMALL, _TINY = 1e-9, 1e-15  # pycocoevalcap's smoothing constants


def _ngram_counts(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i : i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))


def _image_stats(candidate: str, references: Sequence[str], n: int) -> tuple[int, int, list[int], list[int]]:
    """(candidate length, closest reference length, n-gram guesses, clipped matches) of one image."""
    words = candidate.split()
    max_ref: dict[tuple, int] = {}
    lengths = []
    for ref in references:
        ref_words = ref.split()
        lengths.append(len(ref_words))
        for gram, count in _ngram_counts(ref_words, n).items():
            max_ref[gram] = max(max_ref.get(gram, 0), count)
    test_len = len(words)
    closest = min((abs(length - test_len), length) for length in lengths)[1]
    guess = [max(0, test_len - k + 1) for k in range(1, n + 1)]
    correct = [0] * n
    for gram, count in _ngram_counts(words, n).items():
        correct[len(gram) - 1] += min(max_ref.get(gram, 0), count)
    return test_len, closest, guess, correct


def _bleu(test_len: float, ref_len: float, guess: list[int], correct: list[int]) -> list[float]:
    """BLEU-1..n from summed statistics, in pycocoevalcap's order of operations."""
    out, product = [], 1.0
    for k in range(len(guess)):
        product *= (float(correct[k]) + _TINY) / (float(guess[k]) + _SMALL)
        out.append(product ** (1.0 / (k + 1)))
    ratio = (test_len + _TINY) / (ref_len + _SMALL)
    if ratio < 1:
        out = [b * math.exp(1 - 1 / ratio) for b in out]
    return out


def bleu_scores(
    candidates: Sequence[str], references: Sequence[Sequence[str]], n: int = 4
) -> tuple[list[float], list[list[float]]]:
    """Corpus and per-image BLEU-1..n of tokenised captions (pycocoevalcap ``Bleu(n).compute_score``).

    Args:
        candidates: one tokenised caption per image.
        references: the tokenised reference captions of each image (at least one).
        n: largest n-gram order.

    Returns:
        (corpus [BLEU-1, ..., BLEU-n], per-image [[BLEU-1 of each image], ..., [BLEU-n of each image]]), 0-1.
    """
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} reference lists")
    if any(len(r) == 0 for r in references):
        raise ValueError("every image needs at least one reference caption")
    per_image: list[list[float]] = [[] for _ in range(n)]
    test_total, ref_total = 0, 0
    guess_total, correct_total = [0] * n, [0] * n
    for cand, refs in zip(candidates, references):
        test_len, ref_len, guess, correct = _image_stats(cand, refs, n)
        test_total += test_len
        ref_total += ref_len
        guess_total = [a + b for a, b in zip(guess_total, guess)]
        correct_total = [a + b for a, b in zip(correct_total, correct)]
        for k, score in enumerate(_bleu(test_len, ref_len, guess, correct)):
            per_image[k].append(score)
    return _bleu(test_total, ref_total, guess_total, correct_total), per_image


def bleu(
    predictions: Mapping[str, str], references: Mapping[str, Sequence[str]], tokenize: bool = True, n: int = 4
) -> tuple[float, dict[str, float]]:
    """Corpus BLEU-n (default BLEU-4) as the COCO caption evaluation reports it.

    Args:
        predictions: image id -> generated caption.
        references: image id -> reference captions; must hold every id of ``predictions``.
        tokenize: tokenise all captions first, as ``COCOEvalCap`` does.
        n: the n-gram order reported.

    Returns:
        (corpus BLEU-n, per-image BLEU-n), 0-1 (papers write 100x).
    """
    ids = check_captions(predictions, references)
    if not ids:
        return 0.0, {}
    cands, refs = tokenize_captions(predictions, references, ids, tokenize)
    corpus, per_image = bleu_scores(cands, refs, n)
    return corpus[-1], dict(zip(ids, per_image[-1]))
