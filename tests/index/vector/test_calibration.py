"""The IVF's build-time recall table (lagoon/index/vector/build.py): the neighbour selection
behind it is exact, its buckets are made monotone by a least-squares fit, and the recall it
predicts is the recall of held-out queries, unfiltered and behind a 50 % filter."""

from __future__ import annotations

import math

import numpy as np

from lagoon.index.vector import build as B
from lagoon.index.vector import plan as P
from tests.index.segment.data import exact_topk, queries, vectors


def test_nearest_is_the_exact_selection() -> None:
    rng = np.random.default_rng(3)
    dist = rng.standard_normal((5, 40_000)).astype(np.float32)
    dist[1, :] = 0.0  # all tied: the threshold keeps every column
    dist[2, rng.choice(40_000, 30_000, replace=False)] = -5.0  # a threshold keeping too many
    dist[3, :39_000] = np.inf  # fewer finite columns than the sample predicts
    got = B._nearest(dist, 100)
    for i in range(dist.shape[0]):
        want = np.sort(dist[i])[:100]
        assert np.array_equal(np.sort(dist[i, got[i]]), want)
        assert np.all(np.diff(dist[i, got[i]]) >= 0)  # ascending
        assert np.unique(got[i]).shape[0] == 100


def test_monotone_fit() -> None:
    widths = np.array([1.0, 1.0, 2.0, 4.0])
    rising = np.array([[3.0, 5.0], [4.0, 6.0], [4.0, 9.0], [7.0, 9.0]])
    assert np.array_equal(B._monotone(rising, widths), rising)  # already monotone: unchanged
    # an outlier in a one-rank bucket is pooled with its neighbours, not carried to every bucket
    noisy = np.array([[9.0], [3.0], [4.0], [7.0]])
    fit = B._monotone(noisy, widths)[:, 0]
    assert np.all(np.diff(fit) >= 0)
    assert fit.tolist() == [math.ceil((9 + 3 + 2 * 4) / 4)] * 3 + [7]
    assert np.maximum.accumulate(noisy[:, 0]).tolist() == [9, 9, 9, 9]  # the running maximum


def _cluster_ranks(q: np.ndarray, centroids: np.ndarray, assign: np.ndarray, nb: np.ndarray) -> np.ndarray:
    """Cluster rank (0 = nearest centroid to the query) of each neighbour ``nb[i, j]``."""
    order = np.argsort(-(q @ centroids.T), axis=1)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(centroids.shape[0])[None, :].repeat(q.shape[0], 0), axis=1)
    out: np.ndarray = np.take_along_axis(rank, assign[nb], axis=1)
    return out


def test_table_predicts_held_out_recall() -> None:
    """The table comes from leave-one-out queries on the segment's own vectors; an exact scan of
    the planned clusters finds the share of held-out queries' true neighbours it predicts."""
    n = 30_000
    x = vectors(n, 64)
    k = round(B.CLUSTERS_PER_SQRT * math.sqrt(n))
    centroids, assign, _ = B._cluster(x, k, spherical=True)
    _, _, nq, table = B._calibrate(x, assign, centroids, True)
    assert nq == B.CALIBRATION_QUERIES
    curve = P.RecallCurve(table["ranks"], table["levels"], table["probes"], k)
    qs = queries(1500, 64, seed=11)
    weights = P.prior_weights(10, 64)
    for share in (1.0, 0.5):
        mask = None if share == 1.0 else np.random.default_rng(7).random(n) < share
        ranks = _cluster_ranks(qs, centroids, assign, exact_topk(x, qs, 10, mask))
        sigma = P.quantize_sigma(share if mask is None else float(mask.mean()))
        for aim in (0.9, 0.958):
            p = curve.nprobe_for(weights, sigma, aim)
            measured = float((ranks < p).mean())
            assert abs(measured - curve.recall(weights, sigma, p)) < 0.012, (share, aim, p, measured)
            assert measured > aim - 0.012, (share, aim, p, measured)
