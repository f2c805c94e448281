"""RICES returns the true nearest neighbours, most similar last, never the query itself; support features are
cached on disk (.npy + JSON sidecar) keyed by encoder and dataset."""

import json

import numpy as np
import pytest

from fewshot_eval.rices import RICES, cached_features, l2_normalize


@pytest.fixture
def feats():
    return l2_normalize(np.random.default_rng(0).normal(size=(200, 16)))


def test_true_nearest_neighbours_most_similar_last(feats):
    rices = RICES(feats, [str(i) for i in range(len(feats))])
    queries = l2_normalize(np.random.default_rng(1).normal(size=(10, 16)))
    got = rices.search(queries, k=5)
    sims = queries @ feats.T
    for q, idx in enumerate(got):
        expected = np.argsort(-sims[q])[:5][::-1]  # brute force, ascending similarity
        assert idx == [int(i) for i in expected]
        assert all(sims[q, idx[j]] <= sims[q, idx[j + 1]] for j in range(4))


def test_query_in_support_is_never_returned(feats):
    ids = [f"img{i}" for i in range(len(feats))]
    rices = RICES(feats, ids)
    got = rices.search(feats[:20], k=4, exclude_ids=ids[:20])
    sims = feats[:20] @ feats.T
    for q, idx in enumerate(got):
        assert q not in idx and len(idx) == 4
        order = [i for i in np.argsort(-sims[q]) if i != q][:4][::-1]
        assert idx == [int(i) for i in order]


def test_cosine_not_dot_product():
    support = np.array([[10.0, 0.0], [0.6, 0.8]])  # the first has the larger dot product with the query
    rices = RICES(support, ["a", "b"])
    assert rices.search(np.array([[0.5, 0.8]]), k=1) == [[1]]


def test_too_many_shots(feats):
    rices = RICES(feats[:3], ["a", "b", "c"])
    with pytest.raises(ValueError, match="support set of 3"):
        rices.search(feats[:1], k=3, exclude_ids=["a"])


def test_feature_cache_is_reused_and_keyed(tmp_path, feats):
    calls = []

    def compute():
        calls.append(1)
        return feats

    ids = [str(i) for i in range(len(feats))]
    a = cached_features(tmp_path, "enc-A", "data-1", ids, compute)
    b = cached_features(tmp_path, "enc-A", "data-1", ids, compute)
    assert len(calls) == 1 and np.array_equal(a, b)
    cached_features(tmp_path, "enc-B", "data-1", ids, compute)  # another encoder: recomputed
    cached_features(tmp_path, "enc-A", "data-2", ids, compute)  # another dataset: recomputed
    assert len(calls) == 3
    npys, sidecars = sorted(tmp_path.glob("*.npy")), sorted(tmp_path.glob("*.json"))
    assert len(npys) == 3 and len(sidecars) == 3
    meta = json.loads(sidecars[0].read_text())
    assert meta["n"] == 200 and meta["dim"] == 16 and meta["encoder"] in ("enc-A", "enc-B")
    assert np.load(npys[0], allow_pickle=False).shape == (200, 16)


def test_damaged_cache_is_recomputed(tmp_path, feats):
    ids = [str(i) for i in range(len(feats))]
    cached_features(tmp_path, "enc", "d", ids, lambda: feats)
    next(tmp_path.glob("*.npy")).write_bytes(b"garbage")
    again = cached_features(tmp_path, "enc", "d", ids, lambda: feats * 1)
    assert np.allclose(again, feats)
