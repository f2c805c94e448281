"""CIDEr-D as computed by the COCO caption evaluation (``pycocoevalcap``), without Java.

Vedantam et al., "CIDEr: Consensus-based Image Description Evaluation" (arXiv 1411.5726). The COCO server's
"CIDEr" is the CIDEr-D variant: tf-idf n-gram vectors (n = 1..4) with document frequencies taken from the
references of the evaluated images, clipped candidate weights, a Gaussian length penalty (sigma = 6), the mean
over n, averaged over references and multiplied by 10. Captions are first tokenised by Stanford's PTBTokenizer
and punctuation tokens are dropped (``ptb_tokenizer``, equal to the Java tokenizer token for token).

Quirk kept on purpose so that numbers match the reference: the "length" used by the penalty counts bigrams
(``if n == 1`` in ``counts2vec``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence

from fewshot_eval.metrics.ptb_tokenizer import PUNCTUATIONS, check_captions, ptb_tokenize, tokenize_captions

__all__ = ["PUNCTUATIONS", "cider", "cider_scores", "ptb_tokenize"]


def _ngrams(sentence: str, n: int) -> Counter:
    words = sentence.split()
    return Counter(tuple(words[i : i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))


def cider_scores(
    candidates: Sequence[str], references: Sequence[Sequence[str]], n: int = 4, sigma: float = 6.0
) -> list[float]:
    """Per-image CIDEr-D of already tokenised captions (pycocoevalcap ``CiderScorer.compute_score``).

    Args:
        candidates: one tokenised caption per image.
        references: the tokenised reference captions of each image.
        n: largest n-gram order.
        sigma: width of the Gaussian length penalty.

    Returns:
        One score per image, on pycocoevalcap's scale (papers report 100x the mean).
    """
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} reference lists")
    if any(len(r) == 0 for r in references):
        raise ValueError("every image needs at least one reference caption")
    crefs = [[_ngrams(r, n) for r in refs] for refs in references]
    ctest = [_ngrams(c, n) for c in candidates]
    # Document frequency: in how many images' reference sets an n-gram occurs.
    doc_freq: Counter = Counter()
    for refs in crefs:
        doc_freq.update({g for ref in refs for g in ref})
    ref_len = math.log(float(len(crefs)))

    def counts2vec(cnts: Counter) -> tuple[list[dict], list[float], int]:
        vec: list[dict] = [{} for _ in range(n)]
        norm = [0.0] * n
        length = 0
        for gram, tf in cnts.items():
            df = math.log(max(1.0, doc_freq.get(gram, 0.0)))
            k = len(gram) - 1
            vec[k][gram] = float(tf) * (ref_len - df)
            norm[k] += vec[k][gram] ** 2
            if k == 1:  # reference quirk: the length penalty counts bigrams
                length += tf
        return vec, [math.sqrt(x) for x in norm], length

    scores = []
    for test, refs in zip(ctest, crefs):
        vec, norm, length = counts2vec(test)
        total = [0.0] * n
        for ref in refs:
            vec_ref, norm_ref, length_ref = counts2vec(ref)
            penalty = math.exp(-((length - length_ref) ** 2) / (2 * sigma**2))
            for k in range(n):
                val = sum(min(w, vec_ref[k].get(g, 0.0)) * vec_ref[k].get(g, 0.0) for g, w in vec[k].items())
                if norm[k] != 0 and norm_ref[k] != 0:
                    val /= norm[k] * norm_ref[k]
                total[k] += val * penalty
        scores.append(sum(total) / n / len(refs) * 10.0)
    return scores


def cider(
    predictions: Mapping[str, str], references: Mapping[str, Sequence[str]], tokenize: bool = True
) -> tuple[float, dict[str, float]]:
    """Corpus CIDEr-D as reported by the COCO caption evaluation.

    Args:
        predictions: image id -> generated caption.
        references: image id -> reference captions; must hold every id of ``predictions``.
        tokenize: tokenise all captions first, as ``COCOEvalCap`` does (``ptb_tokenizer.tokenize_captions``).

    Returns:
        (mean score, per-image scores), on pycocoevalcap's scale (0.794 where a paper writes 79.4).
    """
    ids = check_captions(predictions, references)
    if not ids:
        return 0.0, {}
    cands, refs = tokenize_captions(predictions, references, ids, tokenize)
    per_image = cider_scores(cands, refs)
    return sum(per_image) / len(per_image), dict(zip(ids, per_image))
