"""The VQA case set of the metric tests: (prediction, annotators' answers) pairs built to exercise every branch
of the official normalisation, plus seeded random ones (test_vqa_metric.py, test_vizwiz_metric.py)."""

import random

Y10 = ["yes"] * 10
CASES = [
    # unanimous answers that differ from the prediction only in case, punctuation or white space
    ("yes", Y10), ("Yes", Y10), ("Yes.", Y10), ("yes.", Y10), ("yes!", Y10), ("YES", Y10), ("  yes\n", Y10),
    ("yes", ["yes "] * 10), ("yes", ["Yes"] * 10), ("yes", ["yes."] * 10), ("yes\tsir", ["yes sir"] * 10),
    ("dog", ["dog."] * 10), ("(yes)", Y10), ("yes?", Y10), ('"yes"', Y10),
    # number words
    ("two", ["2"] * 10), ("2", ["two"] * 10), ("two", ["two"] * 10), ("Two", ["2"] * 7 + ["3"] * 3),
    ("two", ["2"] * 5 + ["two"] * 5), ("none", ["0"] * 6 + ["none"] * 4), ("ten dogs", ["10 dogs"] * 9 + ["10"]),
    ("2", ["two"] * 3 + ["2"] * 3 + ["3"] * 4), ("zero", ["0"] * 10),
    # articles
    ("a dog", ["dog"] * 10), ("the dog", ["dog"] * 8 + ["cat"] * 2), ("A Dog", ["a dog"] * 6 + ["dog"] * 4),
    ("an apple", ["apple", "an apple", "apples", "apple", "the apple", "fruit", "apple", "an apple", "pear", "apple"]),
    ("the", ["the"] * 4 + ["a"] * 6),
    # contractions (the table's capitalised keys never match after lower-casing)
    ("dont", ["don't"] * 10), ("dont know", ["don't know"] * 7 + ["no"] * 3), ("isnt", ["isn't"] * 9 + ["is not"]),
    ("Im", ["i'm"] * 5 + ["im"] * 5), ("somebody'd", ["somebodyd"] * 4 + ["x"] * 6),
    ("cant", ["can't"] * 3 + ["cannot"] * 7), ("dont", ["dont"] * 10), ("wont", ["won't"] * 2 + ["wont"] * 8),
    # commas in numbers (a digit-comma-digit anywhere deletes every punctuation mark)
    ("1,000", ["1000"] * 10), ("1,000", ["1000"] * 8 + ["1,000"] * 2), ("1,000", ["1,000"] * 10),
    ("10,000 - 20", ["10000 20"] * 5 + ["10000"] * 5), ("1,000 a/b", ["1000 ab"] * 4 + ["x"] * 6),
    ("red, blue", ["red blue"] * 5 + ["red"] * 5), ("red,blue", ["red blue"] * 5 + ["red"] * 5),
    ("1,2,3", ["123"] * 5 + ["1 2 3"] * 5),
    # periods before digits (kept) and elsewhere (dropped, at most 32 of them)
    ("3.5", ["3.5"] * 10), ("3.5", ["3.5"] * 6 + ["3"] * 4), (".5", ["0.5"] * 5 + [".5"] * 5),
    ("5.", ["5"] * 7 + ["6"] * 3), ("t.v.", ["tv"] * 8 + ["television"] * 2), ("1.5.", ["1.5"] * 5 + ["2"] * 5),
    ("." * 40 + "a", ["a"] * 5 + ["b"] * 5), ("." * 40 + "a", ["." * 8 + "a"] * 5 + ["b"] * 5),
    ("u.s.a.", ["usa"] * 6 + ["us"] * 4),
    # other punctuation: spaced out, or deleted next to a space; apostrophes and colons kept
    ("hot-dog", ["hot dog"] * 6 + ["hotdog"] * 4), ("hot - dog", ["hot dog"] * 6 + ["hotdog"] * 4),
    ("and/or", ["and or"] * 5 + ["or"] * 5), ("2:30", ["2:30"] * 6 + ["230"] * 4),
    ("girl's", ["girls"] * 5 + ["girl's"] * 5), ('"quoted"', ["quoted"] * 5 + ["q"] * 5),
    ("yes, - no", ["yes no"] * 5 + ["no"] * 5), ("a_b", ["a b"] * 5 + ["ab"] * 5), ("x@y", ["x y"] * 5 + ["n"] * 5),
    # mixed answers
    ("dog", ["dog.", "dog", "Dog", "dogs", "a dog", "the dog", "puppy", "dog", "DOG", "dog!"]),
    ("red", ["red"] * 2 + ["blue"] * 8), ("red", ["red"] + ["blue"] * 9), ("red", ["red"] * 3 + ["blue"] * 7),
    ("Red.", ["red"] * 4 + ["Red"] * 3 + ["blue"] * 3),
    # fewer than 10 answers, empty texts, non-ASCII
    ("Yes", ["yes"]), ("yes", ["yes", "no", "yes"]), ("", Y10), ("", [""] * 5 + ["no"] * 5),
    ("café", ["Café"] * 5 + ["cafe"] * 5), ("ÉTÉ", ["été"] * 3 + ["x"] * 7),
]  # fmt: skip

_TOKENS = ["yes", "Yes", "no", "two", "2", "Two", "ten", "10", "none", "0", "a", "the", "An", "dog", "dogs", "Dog.",
           "dont", "don't", "Isnt", "isn't", "1,000", "1000", "3.5", "5.", ".5", "t.v.", "hot-dog", "and/or",
           "2:30", "girl's", "!", "?", "-", ",", "(red)", "red", "blue/green", "x_y", '"z"', " ", "\t"]  # fmt: skip


def _random_text(rng: random.Random) -> str:
    return rng.choice([" ", "", ", "]).join(rng.choice(_TOKENS) for _ in range(rng.randint(1, 3)))


def _perturb(rng: random.Random, text: str) -> str:
    """The same answer as another annotator or a model might write it."""
    return rng.choice([text, text.upper(), text.capitalize(), text + ".", text + " ", "the " + text, text + "!",
                       " " + text, text.replace(" ", "-"), _random_text(rng)])  # fmt: skip


def _random_cases(n: int, seed: int = 0) -> list[tuple[str, list[str]]]:
    rng, cases = random.Random(seed), []
    for _ in range(n):
        truth = _random_text(rng)
        if rng.random() < 0.3:  # unanimous: the branch where the official code normalises nothing
            answers = [truth] * 10
        else:
            answers = [truth if rng.random() < 0.5 else _perturb(rng, truth) for _ in range(rng.randint(1, 10))]
        cases.append((rng.choice([truth, _perturb(rng, truth)]), answers))
    return cases


ALL_CASES = CASES + _random_cases(3000)
