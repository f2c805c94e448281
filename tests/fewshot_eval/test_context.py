"""The pre-load length check: the evaluation's own prompts for random / balanced / zero-shot jobs, and for RICES
the prompt of the k demonstrations with the fewest tokens, under true and nonce labels."""

from __future__ import annotations

import pytest

from fewshot_eval.context import shortest_demos
from fewshot_eval.evaluate import check_context, prepare_data
from fewshot_eval.prompts import get_template
from fewshot_eval.runner import Runner


class _CharCounter:
    """A tokenizer of one token per character, and a context."""

    def __init__(self, context_length: int):
        self.context_length = context_length

    def count_tokens(self, texts, continuation=False):
        return [len(t) for t in texts]


def _runner(td, words=None):
    return Runner(None, "classify", td.support, get_template("classify"), td.support.class_names, 1, 0, 1, 0, 0, words)


def test_shortest_demos_under_true_names(classify_dir):
    td = prepare_data("classify", classify_dir, shots=[4])
    (idx,) = shortest_demos(_CharCounter(1000), _runner(td), td.query.examples[:1], 4, trial=0)
    # red (3 letters) x 3, then blue (4): the shortest answers; green (5) and yellow (6) never
    assert sorted(td.support.examples[i].target for i in idx) == ["blue", "red", "red", "red"]


def test_shortest_demos_under_nonce_names_follow_each_episode(classify_dir):
    words = ("ab", "abcd", "abcdefg", "abcdefghij")
    td = prepare_data("classify", classify_dir, shots=[3], labels="nonce", nonce_words=words)
    runner = _runner(td, words)
    queries = td.query.examples
    picks = shortest_demos(_CharCounter(1000), runner, queries, 3, trial=0)
    for q, idx in zip(queries, picks):
        names = runner.names(q, trial=0)
        # the class renamed "ab" in this episode gives all three (3 support examples each)
        assert {names[td.support.examples[i].target] for i in idx} == {"ab"}
    assert len({td.support.examples[idx[0]].target for idx in picks}) > 1  # episodes differ


@pytest.mark.parametrize("labels,limit,refused", [("true", 75, False), ("true", 70, True), ("nonce", 50, True)])
def test_rices_is_refused_only_when_its_shortest_prompt_does_not_fit(labels, limit, refused, classify_dir):
    """2-shot prompts: demonstrations '<image>Output: red<EOC>' (23 characters; blue 24, green 25, yellow 26), the
    query '<image>Output:' (14) and the longest candidate ' yellow<EOC>' (12): the shortest prompt and candidate
    take 2 x 23 + 14 + 12 = 72 characters, whatever RICES retrieves."""
    td = prepare_data("classify", classify_dir, shots=[2], selection=["rices"], labels=labels)
    counter = _CharCounter(limit)
    problem = check_context(counter, td, [2], ["rices"], labels=labels)
    if refused:
        assert "classify 2-shot (rices, even its 2 demonstrations with the fewest tokens)" in problem
        assert ("to score the longest nonce word" if labels == "nonce" else "to score the longest class name") in problem
    else:
        assert problem is None
    assert check_context(None, td, [2], ["rices"], labels=labels) is None  # no counter: nothing checked
