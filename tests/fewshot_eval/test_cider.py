"""CIDEr-D must equal pycocoevalcap's (the COCO caption evaluation) on its own pipeline: PTB tokenisation with
punctuation removal, then CiderScorer."""

import math

import pytest

from fewshot_eval.metrics.cider import PUNCTUATIONS, cider, cider_scores
from fewshot_eval.metrics.ptb_tokenizer import ptb_tokenize_lines

# Output of `java -cp stanford-corenlp-3.4.1.jar edu.stanford.nlp.process.PTBTokenizer -preserveLines
# -lowerCase` (the jar shipped in pycocoevalcap 1.2) on these lines as one file, as pycocoevalcap writes them,
# before it drops PUNCTUATIONS. (Alone in a file, "they're" at its very end gives "they ` re": the 're rule needs
# a character after it - tests/fewshot_eval/test_ptb_tokenizer.py.)
STANFORD = [
    ("A man's dog, (big) and \"happy\" isn't here.",
     "a man 's dog , -lrb- big -rrb- and `` happy '' is n't here ."),
    ("The colour of the grey centre is nice... really?!", "the colour of the grey centre is nice ... really ?!"),
    ("A black-and-white photo of 2 cats; one is 3.5 kg -- wow: yes!",
     "a black-and-white photo of 2 cats ; one is 3.5 kg -- wow : yes !"),
    ("He said 'hello' to the U.S. team at 5 p.m. don't can't won't I'm they're",
     "he said ` hello ' to the u.s. team at 5 p.m. do n't ca n't wo n't i 'm they 're"),
    ("Two people & a dog {jump} [over] the 1,000 fences / walls.",
     "two people & a dog -lcb- jump -rcb- -lsb- over -rsb- the 1,000 fences / walls ."),
    ("A train on the tracks.", "a train on the tracks ."),
    ("Cat   with   spaces", "cat with spaces"),
    ("it's a cat's toy; cats' toys", "it 's a cat 's toy ; cats ' toys"),
]  # fmt: skip


def test_tokenizer_matches_stanford_ptb_then_punctuation_removal():
    expected = [" ".join(w for w in stanford.split(" ") if w not in PUNCTUATIONS) for _, stanford in STANFORD]
    assert ptb_tokenize_lines([raw for raw, _ in STANFORD]) == expected


GTS = {
    "1": ["A man riding a wave on top of a surfboard.", "A surfer rides a large wave in the ocean.",
          "A person on a surf board riding a wave.", "Man surfing on a big wave, in the sea!",
          "A surfer's ride on a wave."],
    "2": ["Two dogs playing with a frisbee in the park.", "A couple of dogs run after a (red) frisbee.",
          "Dogs chase a frisbee on the grass.", "two dogs that are playing in a grassy field",
          "The dogs don't stop playing."],
    "3": ["A plate of food with broccoli and rice.", "A white plate topped with rice, meat and broccoli.",
          "Food on a plate: broccoli, rice and chicken.", "A healthy meal of chicken and broccoli",
          "a dinner plate with vegetables"],
}  # fmt: skip
RES = {"1": "A man riding a wave on a surfboard.", "2": "Two dogs play with a frisbee.", "3": "A cat sitting on a couch."}
# pycocoevalcap 1.2: PTBTokenizer (Java) + Cider().compute_score on GTS / RES above.
REFERENCE_MEAN = 1.2440037472612147
REFERENCE_PER_IMAGE = {"1": 2.3296613826160635, "2": 1.38956167284211, "3": 0.012788186325470529}


def test_matches_pycocoevalcap_on_fixed_example():
    mean, per_image = cider(RES, GTS)
    assert mean == pytest.approx(REFERENCE_MEAN, abs=1e-9)
    for k, v in REFERENCE_PER_IMAGE.items():
        assert per_image[k] == pytest.approx(v, abs=1e-9)


def test_identical_captions_with_image_specific_ngrams_score_ten():
    # Every n-gram occurs in one image's references only: idf = log(N) everywhere, candidate vector = reference
    # vector, cosine 1 for n = 1..4, no length penalty -> mean 1 over n, times 10.
    refs = [["red cat sits on mat"] * 3, ["blue dog runs in park"] * 3, ["green bird flies over sea"] * 3]
    scores = cider_scores([r[0] for r in refs], refs)
    assert scores == pytest.approx([10.0, 10.0, 10.0], abs=1e-12)


def test_single_image_scores_zero_because_idf_vanishes():
    # ref_len = log(1) = 0 and df = 1 for every reference n-gram: all weights are 0.
    assert cider_scores(["a cat"], [["a cat"]]) == [0.0]


def test_hand_computed_short_captions():
    # Two images, idf = log 2 for all reference n-grams (each occurs in one image).
    # Image A: "a b" vs ["a b"]: unigram and bigram cosines 1, no 3-/4-grams -> (1 + 1 + 0 + 0) / 4 * 10 = 5.
    # Image B: "c" vs ["c d"]: unigram cosine log2^2 / (log2 * sqrt(2) log2) = 1/sqrt(2); no bigram;
    #   length (bigram count) 0 vs 1 -> penalty exp(-1 / (2 * 36)); score = (1/sqrt(2)) * penalty / 4 * 10.
    scores = cider_scores(["a b", "c"], [["a b"], ["c d"]])
    assert scores[0] == pytest.approx(5.0, abs=1e-12)
    assert scores[1] == pytest.approx(10 / 4 * math.exp(-1 / 72) / math.sqrt(2), abs=1e-12)


def test_clipping_repeated_words_do_not_help():
    refs = [["a red square"], ["a blue circle"], ["the green triangle"]]
    plain = cider_scores(["a red square", "x", "y"], refs)[0]
    repeated = cider_scores(["red red red red", "x", "y"], refs)[0]
    assert repeated < plain


def test_order_of_images_does_not_change_scores():
    ids = list(GTS)
    _, forward = cider(RES, GTS)
    _, backward = cider({k: RES[k] for k in reversed(ids)}, {k: GTS[k] for k in reversed(ids)})
    assert forward == pytest.approx(backward)


def test_prediction_without_references_is_an_error():
    with pytest.raises(ValueError, match="no references"):
        cider({"9": "a cat"}, GTS)
