"""Random selection is seeded and per-query; ensembling equals the mean over orderings computed one by one."""

import numpy as np
import pytest
from PIL import Image

from fewshot_eval.ensemble import ensemble_scores, normalized_scores, permutations
from fewshot_eval.prompts import Shot, build_prompt, get_template
from fewshot_eval.selection import RandomSelector, mean_std


def test_random_selection_is_reproducible_and_excludes_query():
    ids = [str(i) for i in range(20)]
    s = RandomSelector(ids, seed=3, trial=0)
    a = s.select(["5", "7"], 8)
    assert a == RandomSelector(ids, seed=3, trial=0).select(["5", "7"], 8)
    assert a[0] == s.select(["5"], 8)[0]  # independent of batching
    assert all(ids.index("5") not in x for x in [a[0]]) and len(set(a[0])) == 8
    assert RandomSelector(ids, seed=3, trial=1).select(["5"], 8) != [a[0]]
    with pytest.raises(ValueError, match="support set of 19"):
        s.select(["5"], 20)


def test_mean_std():
    assert mean_std([1.0, 3.0]) == (2.0, 1.0)
    assert mean_std([4.0]) == (4.0, 0.0)


def test_permutations():
    assert permutations(2, 6) == [(0, 1), (1, 0)]
    perms = permutations(4, 6, seed=1)
    assert len(perms) == 6 and len(set(perms)) == 6 and perms[0] == (0, 1, 2, 3)
    assert all(sorted(p) == [0, 1, 2, 3] for p in perms)
    assert permutations(4, 1) == [(0, 1, 2, 3)]


def test_ensemble_equals_mean_of_single_orderings(fake_model):
    template = get_template("classify")
    demos = [Shot(Image.new("RGB", (4, 4)), c) for c in ["red", "blue", "red", "green"]]
    query = Shot(Image.new("RGB", (4, 4)))
    conts = [template.continuation(c) for c in ["red", "blue", "green", "yellow"]]

    def build(order):
        return build_prompt([demos[o] for o in order], query, template)

    got = ensemble_scores(fake_model, build, len(demos), conts, k=6, seed=0)
    one_by_one = [normalized_scores(fake_model, build(p), conts) for p in permutations(4, 6, seed=0)]
    np.testing.assert_allclose(got, np.mean(one_by_one, axis=0))
    # orderings matter for this model, so the ensemble is not just the first ordering
    assert not np.allclose(got, one_by_one[0])
    assert len(fake_model.loglikelihood_calls) == 12  # one prefix call per ordering (twice: got + one_by_one)
