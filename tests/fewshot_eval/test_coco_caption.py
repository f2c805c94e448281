"""CIDEr, BLEU-4 and ROUGE-L of the Python scorer equal the COCO caption evaluation's (pycocoevalcap 1.2 with its
Java tokenizer) to 1e-9 on thousands of varied captions, corpus and per image; without Java or pycocoevalcap,
``auto`` falls back to the Python scorer and ``pycocoevalcap`` is refused in one line."""

import math
import random
import shutil

import pytest
from caption_corpus import shapesworld_captions, varied_captions

from fewshot_eval.metrics import coco_caption
from fewshot_eval.metrics.bleu import bleu
from fewshot_eval.metrics.coco_caption import CAPTION_METRICS, caption_scores, resolve_caption_scorer
from fewshot_eval.metrics.rouge import lcs_length, rouge_l

INSTALL = coco_caption.INSTALL_OFFICIAL


def _corpus(n_images: int, seed: int = 0) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Images with 1-6 references each from the varied corpus, and a prediction that is sometimes a reference
    (so that scores are spread over 0..max), sometimes another image's, sometimes empty."""
    rng = random.Random(seed)
    pool = varied_captions(6000) + shapesworld_captions(1000)
    preds, refs = {}, {}
    for i in range(n_images):
        key = f"img{i}"
        refs[key] = [rng.choice(pool) for _ in range(rng.randint(1, 6))]
        r = rng.random()
        preds[key] = "" if r < 0.02 else rng.choice(refs[key]) if r < 0.3 else rng.choice(pool)
    return preds, refs


def _official_available():
    if coco_caption.official_scorer_missing():
        pytest.skip(f"needs the COCO caption evaluation: {INSTALL}")


def test_python_scorer_equals_pycocoevalcap_on_thousands_of_captions():
    _official_available()
    preds, refs = _corpus(1500)
    assert sum(len(r) for r in refs.values()) + len(preds) > 5000
    ours, official = caption_scores(preds, refs, "python"), caption_scores(preds, refs, "pycocoevalcap")
    assert (ours.scorer, official.scorer) == ("python", "pycocoevalcap")
    for metric in CAPTION_METRICS:
        assert ours.means[metric] == pytest.approx(official.means[metric], abs=1e-9), metric
        worst = max(abs(ours.per_image[metric][i] - official.per_image[metric][i]) for i in preds)
        assert worst <= 1e-9, (metric, worst)
    assert 0.05 < ours.means["CIDEr"] and 0.0 < ours.means["BLEU-4"] < 1.0  # not a degenerate corpus


def test_auto_takes_pycocoevalcap_where_it_runs_and_python_elsewhere(monkeypatch):
    preds, refs = _corpus(20, seed=1)
    if not coco_caption.official_scorer_missing():
        assert resolve_caption_scorer("auto") == "pycocoevalcap"
        assert caption_scores(preds, refs).scorer == "pycocoevalcap"
    monkeypatch.setattr(shutil, "which", lambda name: None)  # no java on PATH
    assert resolve_caption_scorer("auto") == "python" and caption_scores(preds, refs).scorer == "python"
    with pytest.raises(ValueError, match=r"caption scorer pycocoevalcap: .*Java \(java on PATH\) not found") as e:
        resolve_caption_scorer("pycocoevalcap")
    assert "\n" not in str(e.value) and "apt-get install -y default-jre-headless" in str(e.value)
    with pytest.raises(ValueError, match="unknown caption scorer 'java'; expected one of auto, pycocoevalcap, python"):
        resolve_caption_scorer("java")


def test_a_line_break_inside_a_caption_does_not_shift_the_others():
    refs = {"a": ["a red square on the left"], "b": ["a blue circle"]}
    clean = caption_scores({"a": "a red square on the left", "b": "a blue circle"}, refs, "python")
    broken = caption_scores({"a": "a red\rsquare on the\u2028left", "b": "a blue circle"}, refs, "python")
    assert broken.means == clean.means and broken.per_image == clean.per_image


def test_bleu_and_rouge_by_hand():
    # unigrams 4/4, bigrams 2/3 ("sat down" is in no reference), trigrams 1/2; the closest reference has the
    # candidate's length, so no brevity penalty
    refs = {"1": ["the cat sat", "down the cat sat"]}
    assert bleu({"1": "the cat sat down"}, refs, n=2, tokenize=False)[0] == pytest.approx((2 / 3) ** (1 / 2))
    assert bleu({"1": "the cat sat down"}, refs, n=3, tokenize=False)[0] == pytest.approx((2 / 3 / 2) ** (1 / 3))
    # a 2-word candidate against a 4-word reference: precision 1, brevity penalty exp(1 - 4 / 2)
    assert bleu({"1": "the cat"}, {"1": ["the cat sat down"]}, n=1, tokenize=False)[0] == pytest.approx(math.exp(-1))
    assert lcs_length("a b c d".split(), "a x c d".split()) == 3
    mean, per = rouge_l({"1": "a b c d"}, {"1": ["a x c d", "a b"]}, tokenize=False)
    p, r = 3 / 4, 2 / 2  # best precision (first reference) and best recall (second), as the reference takes them
    assert per["1"] == pytest.approx((1 + 1.2**2) * p * r / (r + 1.2**2 * p)) and mean == per["1"]
