"""CIDEr-D as computed by the COCO caption evaluation (``pycocoevalcap``), without Java.

Vedantam et al., "CIDEr: Consensus-based Image Description Evaluation" (arXiv 1411.5726). The COCO server's
"CIDEr" is the CIDEr-D variant: tf-idf n-gram vectors (n = 1..4) with document frequencies taken from the
references of the evaluated images, clipped candidate weights, a Gaussian length penalty (sigma = 6), the mean
over n, averaged over references and multiplied by 10. Captions are first tokenised by Stanford's PTBTokenizer
(``-preserveLines -lowerCase``) and punctuation tokens are dropped; ``ptb_tokenize`` reproduces that in Python
for ordinary captions (checked token by token against stanford-corenlp-3.4.1 in the tests).

Quirks kept on purpose so that numbers match the reference: the "length" used by the penalty counts bigrams
(``if n == 1`` in ``counts2vec``), and bracket tokens survive punctuation removal because ``-lowerCase`` turns
``-LRB-`` into ``-lrb-``, which is not in the removal list.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence

__all__ = ["PUNCTUATIONS", "cider", "cider_scores", "ptb_tokenize"]

# pycocoevalcap/tokenizer/ptbtokenizer.py: tokens removed after tokenisation.
PUNCTUATIONS = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)

_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "{": "-lcb-", "}": "-rcb-", "[": "-lsb-", "]": "-rsb-"}
# Clitics PTB splits off a word: "is|n't", "man|'s", "i|'m", "they|'re", "we|'ve", "we|'ll", "he|'d".
_CLITIC = re.compile(r"^(.+?)(n't|'s|'m|'re|'ve|'ll|'d)$")
_ABBREV = re.compile(r"^([a-z]\.)+[a-z]?\.?$|^(mr|mrs|ms|dr|st|jr|sr|vs|etc|inc|co|no)\.$")
_NUMBER = re.compile(r"^[+-]?\d[\d,.:/]*\d$|^\d$")


def _split_word(word: str) -> list[str]:
    """Split one whitespace-delimited chunk (already lower-cased) into PTB tokens."""
    out: list[str] = []
    tail: list[str] = []
    # leading punctuation: brackets, quotes
    while word and word[0] in "([{\"'`":
        c = word[0]
        if c == '"':
            out.append("``")
        elif c in "'`":
            out.append("`")
        else:
            out.append(_BRACKETS[c])
        word = word[1:]
    # trailing punctuation, peeled from the end
    while word:
        m = re.search(r"(\.\.\.|--|[?!]+|[,;:)\]}\"]|')$", word)
        if m is None:
            break
        tok = m.group(1)
        rest = word[: m.start()]
        if tok == "'" and rest.endswith("s") and rest:  # plural possessive: cats'
            tail.insert(0, "'")
            word = rest
            continue
        if tok == ":" and _NUMBER.match(word):
            break
        if tok == ",":
            tail.insert(0, ",")
        elif tok == '"':
            tail.insert(0, "''")
        elif tok == "'":
            tail.insert(0, "'")
        else:
            tail.insert(0, _BRACKETS.get(tok, tok))
        word = rest
    if word.endswith(".") and word != "." and not _ABBREV.match(word) and not word.endswith(".."):
        if not _NUMBER.match(word):
            tail.insert(0, ".")
            word = word[:-1]
    if word:
        out.extend(_split_inner(word))
    return out + tail


def _split_inner(word: str) -> list[str]:
    """Split a word with no outer punctuation at clitics and at inner separators (& / ; ? ! brackets)."""
    if _NUMBER.match(word):
        return [word]
    parts = [p for p in re.split(r"([&/;!?()\[\]{}]|\.\.\.)", word) if p]
    tokens: list[str] = []
    for p in parts:
        if p in _BRACKETS:
            tokens.append(_BRACKETS[p])
            continue
        m = _CLITIC.match(p)
        tokens.extend([m.group(1), m.group(2)] if m else [p])
    return tokens


def ptb_tokenize(text: str) -> str:
    """Tokenise a caption like pycocoevalcap's PTBTokenizer, then drop its punctuation tokens.

    Args:
        text: a raw caption.

    Returns:
        Lower-cased tokens joined by single spaces, e.g. ``"A man's dog, (big)."`` -> ``"a man 's dog -lrb-
        big -rrb-"``.
    """
    tokens: list[str] = []
    for chunk in text.replace("\n", " ").lower().split():
        tokens.extend(_split_word(chunk))
    return " ".join(t for t in tokens if t not in PUNCTUATIONS)


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
        tokenize: run ``ptb_tokenize`` on all captions first (as ``COCOEvalCap`` does).

    Returns:
        (mean score, per-image scores), on pycocoevalcap's scale (0.794 where a paper writes 79.4).
    """
    missing = [k for k in predictions if k not in references]
    if missing:
        raise ValueError(f"{len(missing)} predictions have no references, e.g. id {missing[0]!r}")
    ids = list(predictions)
    if not ids:
        return 0.0, {}
    tok = ptb_tokenize if tokenize else (lambda s: s)
    per_image = cider_scores([tok(predictions[i]) for i in ids], [[tok(r) for r in references[i]] for i in ids])
    return sum(per_image) / len(per_image), dict(zip(ids, per_image))
