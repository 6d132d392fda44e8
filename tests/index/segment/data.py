"""Calibrated clustered vectors for ANN tests and ``bench/ann_bench.py``.

The vector part of the project's benchmark generator, ``bench/benchdata.py`` (points in a 64-d latent
space of 1,000 Gaussian clusters, spread 1.3, projected to ``dim`` by a fixed random map, plus
0.25·N(0,1) isotropic noise, unit-normalised). Calibrated so that IVF needs a few percent of its
lists probed for recall@10 ≈ 0.95: a realistic, not trivially easy, set. Deterministic: the base
set is generated in chunks of 100k (seed 1000 + chunk), so any prefix is stable; queries use seed 7.
"""

from __future__ import annotations

import numpy as np

from bench.benchdata import queries as _bench_queries
from bench.benchdata import vectors as _bench_vectors


def vectors(n: int, dim: int = 128, seed: int = 1000, model_seed: int = 0) -> np.ndarray:
    """``n`` base vectors (unit norm, float32), generated in chunks of 100k so prefixes are stable."""
    return _bench_vectors(n, dim, seed, model_seed)


def queries(nq: int, dim: int = 128, seed: int = 7, model_seed: int = 0) -> np.ndarray:
    """``nq`` held-out queries from the same distribution as ``vectors``."""
    return _bench_queries(nq, dim, seed, model_seed)


def exact_topk(base: np.ndarray, qs: np.ndarray, k: int, mask: np.ndarray | None = None) -> np.ndarray:
    """Exact top-``k`` indices by inner product (= cosine on unit vectors), best first; rows
    outside ``mask`` are excluded. Batched matmul + argpartition."""
    out = np.empty((qs.shape[0], k), np.int64)
    for lo in range(0, qs.shape[0], 64):
        scores = qs[lo : lo + 64] @ base.T
        if mask is not None:
            scores[:, ~mask] = -np.inf
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
        out[lo : lo + 64] = np.take_along_axis(part, order, axis=1)
    return out


def recall_at_k(found: list[np.ndarray], truth: np.ndarray) -> float:
    """Mean over queries of |found ∩ truth| / k."""
    k = truth.shape[1]
    hits = sum(len(np.intersect1d(f[:k], t)) for f, t in zip(found, truth, strict=True))
    return hits / (k * truth.shape[0])
