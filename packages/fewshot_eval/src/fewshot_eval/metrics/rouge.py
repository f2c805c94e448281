"""ROUGE-L as computed by the COCO caption evaluation (``pycocoevalcap.rouge``), without Java.

Lin, "ROUGE: A Package for Automatic Evaluation of Summaries" (ACL 2004 workshop). Per image: the longest
common subsequence (LCS) of tokens between the candidate and each reference gives a precision (LCS / candidate
length) and a recall (LCS / reference length); the best precision and the best recall over the references
(not necessarily from the same reference) combine into an F-measure with beta = 1.2. The corpus score is the
mean over images. Tokens are split on single spaces, as the reference does, so an empty caption is one empty
token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fewshot_eval.metrics.ptb_tokenizer import check_captions, tokenize_captions

__all__ = ["lcs_length", "rouge_l", "rouge_l_scores"]

BETA = 1.2  # pycocoevalcap's weight of recall against precision


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists (dynamic programming, one row at a time)."""
    if len(a) < len(b):
        a, b = b, a
    row = [0] * (len(b) + 1)
    for x in a:
        prev_diag = 0
        for j, y in enumerate(b, start=1):
            keep = row[j]
            row[j] = prev_diag + 1 if x == y else max(row[j], row[j - 1])
            prev_diag = keep
    return row[-1]


def rouge_l_scores(candidates: Sequence[str], references: Sequence[Sequence[str]], beta: float = BETA) -> list[float]:
    """Per-image ROUGE-L of tokenised captions (pycocoevalcap ``Rouge.calc_score``), 0-1."""
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} reference lists")
    scores = []
    for cand, refs in zip(candidates, references):
        if not refs:
            raise ValueError("every image needs at least one reference caption")
        tokens = cand.split(" ")
        prec, rec = [], []
        for ref in refs:
            ref_tokens = ref.split(" ")
            lcs = lcs_length(ref_tokens, tokens)
            prec.append(lcs / float(len(tokens)))
            rec.append(lcs / float(len(ref_tokens)))
        p, r = max(prec), max(rec)
        scores.append(((1 + beta**2) * p * r) / float(r + beta**2 * p) if p != 0 and r != 0 else 0.0)
    return scores


def rouge_l(
    predictions: Mapping[str, str], references: Mapping[str, Sequence[str]], tokenize: bool = True
) -> tuple[float, dict[str, float]]:
    """Corpus ROUGE-L (mean over images) as the COCO caption evaluation reports it.

    Args:
        predictions: image id -> generated caption.
        references: image id -> reference captions; must hold every id of ``predictions``.
        tokenize: tokenise all captions first, as ``COCOEvalCap`` does.

    Returns:
        (mean score, per-image scores), 0-1 (papers write 100x).
    """
    ids = check_captions(predictions, references)
    if not ids:
        return 0.0, {}
    cands, refs = tokenize_captions(predictions, references, ids, tokenize)
    per_image = rouge_l_scores(cands, refs)
    return sum(per_image) / len(per_image), dict(zip(ids, per_image))
