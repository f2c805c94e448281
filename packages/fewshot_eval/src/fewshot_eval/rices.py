"""RICES: Retrieval-based In-Context Example Selection (Yang et al., arXiv 2109.05014; used by Flamingo,
arXiv 2204.14198, Appendix A.2).

The query image's pooled embedding from the frozen vision encoder is compared by cosine similarity with every
support example's (an exact faiss inner-product index over L2-normalised vectors); the top-k become the
demonstrations, ordered so that the most similar comes last, nearest to the query. Support features are
computed once and cached on disk as ``.npy`` + a JSON sidecar, keyed by the encoder identifier and the support
set's fingerprint, so later runs reuse them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import faiss
import numpy as np

__all__ = ["RICES", "cached_features", "l2_normalize"]


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class RICES:
    """Nearest-neighbour demonstration retrieval over a support set.

    Args:
        features: (N, D) support embeddings (normalised again here, so cosine = inner product).
        ids: the N support example ids, used to exclude a query that is itself in the support set.
    """

    def __init__(self, features: np.ndarray, ids: Sequence[str]):
        features = l2_normalize(features)
        if features.ndim != 2 or len(features) != len(ids):
            raise ValueError(f"features {features.shape} do not match {len(ids)} support ids")
        self.ids = [str(i) for i in ids]
        self.index = faiss.IndexFlatIP(features.shape[1])
        self.index.add(np.ascontiguousarray(features))

    def __len__(self) -> int:
        return self.index.ntotal

    def search(
        self, queries: np.ndarray, k: int, exclude_ids: Sequence[str | None] | None = None
    ) -> list[list[int]]:
        """Support indices of the ``k`` most similar examples for each query, most similar LAST.

        Args:
            queries: (Q, D) query embeddings.
            k: neighbours per query.
            exclude_ids: per query, a support id never to return (the query's own id).

        Returns:
            Q lists of k support indices, in increasing similarity.
        """
        queries = l2_normalize(np.atleast_2d(queries))
        exclude_ids = list(exclude_ids) if exclude_ids is not None else [None] * len(queries)
        n_excl = max((sum(1 for i in self.ids if i == e) for e in set(exclude_ids) if e is not None), default=0)
        if k + n_excl > len(self) or k < 0:
            raise ValueError(f"cannot retrieve {k} demonstrations from a support set of {len(self)}"
                             + (f" ({n_excl} excluded as the query itself)" if n_excl else ""))
        if k == 0:
            return [[] for _ in range(len(queries))]
        _, idx = self.index.search(np.ascontiguousarray(queries), k + n_excl)
        out = []
        for row, excl in zip(idx, exclude_ids):
            kept = [int(i) for i in row if i >= 0 and (excl is None or self.ids[i] != str(excl))][:k]
            out.append(kept[::-1])  # faiss gives most similar first; the prompt wants it last
        return out


def _key(encoder_id: str, dataset_fingerprint: str) -> str:
    return hashlib.sha256(f"{encoder_id}\0{dataset_fingerprint}".encode()).hexdigest()[:24]


def cached_features(
    cache_dir: str | Path | None,
    encoder_id: str,
    dataset_fingerprint: str,
    ids: Sequence[str],
    compute: Callable[[], np.ndarray],
) -> np.ndarray:
    """Support features from the cache, or ``compute()`` them and store them.

    Args:
        cache_dir: folder for ``<key>.npy`` + ``<key>.json``; None disables caching.
        encoder_id: the vision encoder's stable identifier.
        dataset_fingerprint: the support set's fingerprint (ids, media paths, targets).
        ids: the example ids, in feature-row order (stored in the sidecar and checked on load).
        compute: returns the (N, D) features when the cache misses.

    Returns:
        (N, D) float32 features.
    """
    if cache_dir is None:
        return np.asarray(compute(), dtype=np.float32)
    cache_dir = Path(cache_dir)
    key = _key(encoder_id, dataset_fingerprint)
    npy, meta = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"
    ids = [str(i) for i in ids]
    ids_hash = hashlib.sha256("\n".join(ids).encode()).hexdigest()
    if npy.is_file() and meta.is_file():
        try:
            info = json.loads(meta.read_text())
            feats = np.load(npy, allow_pickle=False)
            if info.get("ids_sha256") == ids_hash and feats.shape[0] == len(ids):
                return feats.astype(np.float32, copy=False)
        except (OSError, ValueError):
            pass  # a damaged cache entry is recomputed and overwritten
    feats = np.asarray(compute(), dtype=np.float32)
    if feats.shape[0] != len(ids):
        raise ValueError(f"computed {feats.shape[0]} features for {len(ids)} support examples")
    cache_dir.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.save(buf, feats, allow_pickle=False)
    _atomic_write(npy, buf.getvalue())
    sidecar = {"encoder": encoder_id, "dataset": dataset_fingerprint, "n": len(ids), "dim": int(feats.shape[1]),
               "ids_sha256": ids_hash, "format": "float32 .npy, rows in support-set order"}
    _atomic_write(meta, json.dumps(sidecar, indent=1).encode())
    return feats


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
