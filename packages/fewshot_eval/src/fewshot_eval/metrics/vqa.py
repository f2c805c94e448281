"""VQA accuracy with the official answer normalisation (GT-Vision-Lab/VQA ``vqaEval.py``).

Antol et al., "VQA: Visual Question Answering" (arXiv 1505.00468); Goyal et al., VQAv2 (arXiv 1612.00837).
An answer is right in proportion to how many of the 10 annotators gave it: ``min(#matches / 3, 1)``, averaged
over the 10 subsets that leave one annotator out. The prediction is normalised (punctuation, number words to
digits, articles dropped, missing apostrophes restored); the ground-truth answers, which the VQA annotation
pipeline already normalised, only get punctuation processing and only when annotators disagree - exactly as the
official script does. Pass ``normalize_references=True`` for user data whose answers were never normalised.

Quirks kept so that numbers match the official script: the period regex ``(?!<=\\d)(\\.)(?!\\d)`` drops every
period not followed by a digit, and it is applied with ``count=re.UNICODE`` (32 replacements at most).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["normalize_answer", "process_digit_article", "process_punctuation", "vqa_accuracy", "vqa_score"]

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
PUNCT = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
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


def process_digit_article(text: str) -> str:
    """``VQAEval.processDigitArticle``: lower-case, number words to digits, drop articles, fix contractions."""
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in ARTICLES]
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def normalize_answer(answer: str) -> str:
    """The full normalisation the official script applies to a predicted answer."""
    answer = answer.replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(answer))


def vqa_score(prediction: str, answers: Sequence[str], normalize_references: bool = False) -> float:
    """VQA accuracy (0-1) of one prediction against the annotators' answers (usually 10).

    Args:
        prediction: the model's answer, raw.
        answers: the annotators' answers.
        normalize_references: also apply the full normalisation to ``answers`` (not done by the official
            script, whose inputs are pre-normalised VQA annotations).

    Returns:
        The mean over leave-one-annotator-out subsets of ``min(#matches / 3, 1)``.
    """
    if not answers:
        raise ValueError("a VQA question needs at least one reference answer")
    pred = normalize_answer(prediction)
    refs = list(answers)
    if normalize_references:
        refs = [normalize_answer(a) for a in refs]
    elif len(set(refs)) > 1:
        refs = [process_punctuation(a) for a in refs]
    accs = []
    for i in range(len(refs)):
        matches = sum(1 for j, a in enumerate(refs) if j != i and a == pred)
        accs.append(min(1.0, matches / 3.0))
    return sum(accs) / len(accs)


def vqa_accuracy(
    predictions: dict[str, str], answers: dict[str, Sequence[str]], normalize_references: bool = False
) -> tuple[float, dict[str, float]]:
    """Mean VQA accuracy (0-1) over questions, and the per-question scores.

    Args:
        predictions: question id -> predicted answer.
        answers: question id -> annotators' answers; must hold every id of ``predictions``.
        normalize_references: see ``vqa_score``.
    """
    missing = [k for k in predictions if k not in answers]
    if missing:
        raise ValueError(f"{len(missing)} predictions have no reference answers, e.g. id {missing[0]!r}")
    per_q = {k: vqa_score(p, answers[k], normalize_references) for k, p in predictions.items()}
    return (sum(per_q.values()) / len(per_q) if per_q else 0.0), per_q
