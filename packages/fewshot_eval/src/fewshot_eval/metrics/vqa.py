"""VQA accuracy as the official VQA evaluation computes it (GT-Vision-Lab/VQA ``vqaEval.py``).

Antol et al., "VQA: Visual Question Answering" (arXiv 1505.00468); Goyal et al., VQAv2 (arXiv 1612.00837).
A predicted answer is right in proportion to how many of the annotators (10 in VQAv2) gave it: with each
annotator left out in turn, ``min(#other annotators who gave it / 3, 1)``, averaged over the annotators. Before
the comparison, text may be normalised (``normalize_answer``): tabs and newlines to spaces and stripped, then
punctuation dropped or spaced out (``process_punctuation``), then lower-cased, number words to digits, articles
dropped and missing apostrophes restored (``process_digit_article``).

What gets normalised is where the versions of that code differ (``SCORERS``), and so do their numbers:

- ``official`` (default): today's official code (commit a013f00, "Fixed processing answers bug", March 2021).
  Answers and prediction are stripped; then, only when the stripped answers are not all the same string, the
  answers AND the prediction get the full normalisation. When they are all the same, nothing more is done:
  ``"Yes."``, ``"Yes"`` or ``"two"`` against ten ``"yes"`` / ``"2"`` scores 0, and so does any prediction
  against a single reference answer, which is trivially unanimous.
- ``official-2017``: the official code from 2017 to that fix: the prediction always gets the full normalisation;
  the answers are not stripped, and get punctuation processing only (no lower-casing, number words or articles),
  and only when they are not all the same.
- ``openflamingo``: OpenFlamingo 2.0.1's copy (``open_flamingo/eval/vqa_metric.py``), which its published
  numbers use: answers and prediction stripped and fully normalised, always.

Quirks of the official normalisation, kept by every scorer so that the numbers match:

- the period rule ``(?!<=\\d)(\\.)(?!\\d)`` (a mistyped look-behind, which as written never refuses a match)
  drops every period not followed by a digit: ``"5."`` -> ``"5"``, ``"3.5"`` and ``".5"`` stay; it is applied
  with ``re.UNICODE`` (32) passed as the replacement count, so at most 32 periods go;
- a punctuation mark is deleted (not replaced by a space) when the original text has it next to a space, and
  EVERY mark is deleted as soon as the text holds a digit-comma-digit anywhere: ``"1,000"`` -> ``"1000"``, but
  also ``"1,000 a/b"`` -> ``"1000 ab"``; apostrophes and colons are never touched (``"2:30"``, ``"girl's"``);
- contractions are looked up after lower-casing, so the table's capitalised keys (``Im``, ``Ive``, ``Id've``)
  never match, and ``somebody'd`` is mapped to ``somebodyd``;
- the official code leaves out answer dicts by equality, which is by position for VQA annotations (each has its
  own ``answer_id``); here it is by position.

The official file is Python 2, where ``\\d`` without ``re.UNICODE`` matches ASCII digits only; in Python 3 (here
and in OpenFlamingo's copy) it matches any Unicode digit, so the two can differ on an answer with a non-ASCII
digit next to a period or a comma, and nowhere else.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

__all__ = [
    "SCORERS", "accuracy_by_type", "leave_one_out_accuracy", "normalize_answer", "process_digit_article",
    "process_punctuation", "vqa_accuracy", "vqa_score",
]  # fmt: skip

SCORERS = ("official", "official-2017", "openflamingo")

CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "let's": "let's", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's", "thered": "there'd",
    "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're", "theres": "there's",
    "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll",
    "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've",
    "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're",
    "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's",
    "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've", "wholl": "who'll",
    "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've",
    "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll", "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've",
    "you'dve": "you'd've", "youll": "you'll", "youre": "you're", "youve": "you've",
}  # fmt: skip
NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
ARTICLES = ("a", "an", "the")
PUNCT = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]  # fmt: skip
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")


def process_punctuation(text: str) -> str:
    """``VQAEval.processPunctuation``: drop or space out punctuation, strip periods not before a digit."""
    out = text
    for p in PUNCT:
        if (p + " " in text or " " + p in text) or _COMMA_STRIP.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out, count=re.UNICODE)  # sic: the official script passes re.UNICODE as count


def process_digit_article(text: str, contractions: Mapping[str, str] = CONTRACTIONS) -> str:
    """``VQAEval.processDigitArticle``: lower-case, number words to digits, drop articles, fix contractions
    (``contractions``: the official table; the VizWiz evaluation has its own, ``vizwiz.VIZWIZ_CONTRACTIONS``)."""
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in ARTICLES]
    return " ".join(contractions.get(w, w) for w in words)


def _strip(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def normalize_answer(answer: str) -> str:
    """The full normalisation: stripped, then ``process_punctuation``, then ``process_digit_article``."""
    return process_digit_article(process_punctuation(_strip(answer)))


def leave_one_out_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """Mean over the annotators left out in turn of ``min(#others equal to prediction / 3, 1)``; the strings are
    compared as given (normalise first). Summed in annotator order, as the official code does, so that the
    float is the same to the last bit."""
    hits = [a == prediction for a in answers]
    total = sum(hits)
    return sum(min(1.0, (total - h) / 3) for h in hits) / len(answers)


def _compared(prediction: str, answers: Sequence[str], scorer: str) -> tuple[str, list[str]]:
    """(prediction, answers) as ``scorer`` compares them (see the module docstring)."""
    if scorer == "official":
        pred, refs = _strip(prediction), [_strip(a) for a in answers]
        if len(set(refs)) > 1:
            pred, refs = normalize_answer(pred), [normalize_answer(a) for a in refs]
        return pred, refs
    if scorer == "official-2017":
        refs = list(answers)
        if len(set(refs)) > 1:
            refs = [process_punctuation(a) for a in refs]
        return normalize_answer(prediction), refs
    if scorer == "openflamingo":
        return normalize_answer(prediction), [normalize_answer(a) for a in answers]
    raise ValueError(f"unknown VQA scorer {scorer!r}; expected one of {', '.join(SCORERS)}")


def vqa_score(prediction: str, answers: Sequence[str], scorer: str = "official") -> float:
    """VQA accuracy (0-1) of one prediction against the annotators' answers.

    Args:
        prediction: the model's answer, raw.
        answers: the annotators' answers, raw (usually 10).
        scorer: which version of the official code to reproduce (``SCORERS``; module docstring).
    """
    if not answers:
        raise ValueError("a VQA question needs at least one reference answer, got none")
    return leave_one_out_accuracy(*_compared(prediction, answers, scorer))


def vqa_accuracy(
    predictions: Mapping[str, str], answers: Mapping[str, Sequence[str]], scorer: str = "official"
) -> tuple[float, dict[str, float]]:
    """Mean VQA accuracy (0-1) over questions, and the per-question scores.

    Args:
        predictions: question id -> predicted answer.
        answers: question id -> annotators' answers; must hold every id of ``predictions``.
        scorer: see ``vqa_score``.
    """
    if scorer not in SCORERS:  # named even when there is nothing to score
        raise ValueError(f"unknown VQA scorer {scorer!r}; expected one of {', '.join(SCORERS)}")
    missing = [k for k in predictions if k not in answers]
    if missing:
        raise ValueError(f"{len(missing)} predictions have no reference answers, e.g. id {missing[0]!r}")
    per_q = {k: vqa_score(p, answers[k], scorer) for k, p in predictions.items()}
    return (sum(per_q.values()) / len(per_q) if per_q else 0.0), per_q


def accuracy_by_type(per_question: Mapping[str, float], types: Mapping[str, str]) -> dict[str, float]:
    """Mean score per question or answer type (the official ``perAnswerType`` / ``perQuestionType``, unrounded).

    Args:
        per_question: question id -> score (e.g. ``vqa_accuracy``'s second value).
        types: question id -> its type (VQAv2: ``yes/no``, ``number``, ``other``; VizWiz adds ``unanswerable``);
            must hold every id of ``per_question``.
    """
    missing = [k for k in per_question if k not in types]
    if missing:
        raise ValueError(f"{len(missing)} scored questions have no type, e.g. id {missing[0]!r}")
    groups: dict[str, list[float]] = {}
    for k, score in per_question.items():
        groups.setdefault(types[k], []).append(score)
    return {t: sum(v) / len(v) for t, v in groups.items()}
