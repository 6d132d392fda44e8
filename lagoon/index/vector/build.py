"""Building the IVF index of one vector column (the ``vec.<attr>`` file; codec in
lagoon/format/vec.py): k-means, cluster layout, and the recall table the planner reads.

The vectors of the rows that have one are clustered with faiss k-means (spherical for cosine
distance, on unit vectors) into ``k = round(4·√m)`` clusters, or one cluster (flat) below
``FLAT_BELOW`` vectors; training uses a seeded sample of at most ``min(64·k, 100_000)`` points.
Every vector is assigned to its nearest centroid and stored in its cluster's block (row ordinals
ascending, then the vectors in the column's own dtype, f32, f16 or i8). Then the index measures
its own recall: a seeded sample of the segment's vectors serve as queries (leave-one-out: the
query's own row is not a neighbour, which makes a sample point distributed like a fresh query
from the same data); for every neighbour-rank bucket (``RANK_EDGES``) the number of probed
clusters that finds each share (``RECALL_LEVELS``) of such neighbours is computed exactly from
the cluster rank of every true neighbour, with no trial searches. The file stores that table
(meta ``nprobe.by_rank``) and, for older readers, the nprobe reaching ``TARGET_RECALL`` for
recall@K, K in (10, 100, 1000). k-means uses faiss with ``BUILD_THREADS`` OpenMP threads.

How many calibration queries: the planned nprobe is a quantile of the sample, and its noise is
the sample's. At 200k vectors, 500 queries gave planned probes with a spread (one standard
deviation over seeds) of 4 % of the probes, and 300 held-out queries can need 15 % fewer probes
than 3,000 do; ``CALIBRATION_QUERIES`` (1,000) narrow it by a third. Their full scans stay cheap
because each query's neighbours are selected among the few columns under a threshold taken from
a sample of the row (``_nearest``): 1,000 queries at 1M vectors cost about what 300 cost with a
full selection (7 s of CPU in a 6-minute build); at 10k vectors 1.1 s beside 1.2 s of k-means
(2,000 queries took 2.4 s there, for little: small segments are cheap to probe or scan).
Buckets are made monotone by a weighted least-squares fit (``_monotone``), not a running
maximum, which raised every deeper bucket to the noisiest shallow one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lagoon.errors import InternalError
from lagoon.format import vec as vecfile

FLAT_BELOW = 8192  # fewer vectors than this: a single cluster (exact scan)
CLUSTERS_PER_SQRT = 4.0
KMEANS_NITER = 12
KMEANS_SEED = 1234
TRAIN_POINTS_PER_CLUSTER = 64
TRAIN_MAX_POINTS = 100_000
BUILD_THREADS = 2
TARGET_RECALL = 0.97  # the legacy per-K table (older readers); queries plan from the rank table
CALIBRATION_QUERIES = 1000  # leave-one-out queries (a full scan each), or every vector below that
CALIBRATION_BLOCK = 32  # queries per distance block
SELECT_SAMPLE_PER_K = 32  # neighbour selection: columns sampled per wanted neighbour (see _nearest)
SELECT_OVERSAMPLE = 2  # the sample's threshold keeps about this x the wanted neighbours
SELECT_SLACK = 8
CALIBRATION_KS = (10, 100, 1000)
# Upper edges of the neighbour-rank buckets of the recall table (bucket i: ranks in (edge[i-1], edge[i]])
RANK_EDGES = (1, 2, 3, 4, 6, 8, 11, 16, 23, 32, 46, 64, 91, 128, 182, 256, 362, 512, 724, 1000)
# Recall levels at which the table stores the probes needed: 0.5 ... 0.9995 (geometric in 1 - level), 1
RECALL_LEVELS = (*tuple(round(1 - 0.5 * 0.001 ** (i / 46), 6) for i in range(47)), 1.0)


@dataclass(frozen=True)
class BuiltVectors:
    data: bytes  # the framed vec file
    summary: dict[str, Any]


def build_vec_file(
    attr: str, matrix: np.ndarray, valid: np.ndarray, *, dtype: str, metric: str, index: bool = True
) -> BuiltVectors:
    """The ``vec.<attr>`` file of one vector column. ``matrix`` is (n_rows, dims) in the column's
    dtype (rows without a vector hold anything); ``valid`` marks the rows that have one. Without
    ``index`` (ANN disabled for the attribute) the vectors form a single cluster."""
    if metric not in vecfile.METRICS:
        raise InternalError(f"unknown distance metric {metric!r}")
    if dtype not in vecfile.DTYPES:
        raise InternalError(f"unknown vector dtype {dtype!r}")
    n_rows, dims = matrix.shape
    rows = np.flatnonzero(valid).astype(np.int64)
    m = int(rows.shape[0])
    orig = np.ascontiguousarray(matrix[rows], dtype=vecfile.DTYPES[dtype])
    x = orig.astype(np.float32, copy=False)  # the clustering space (unit vectors for cosine)
    cosine = metric == "cosine_distance"
    if cosine:
        x = _normalise(x)
    k = 0 if m == 0 else 1 if m < FLAT_BELOW or not index else round(CLUSTERS_PER_SQRT * math.sqrt(m))
    centroids, assign, train_points = _cluster(x, k, spherical=cosine)
    order = np.lexsort((rows, assign))
    counts = np.bincount(assign, minlength=k).astype(np.int64) if k else np.zeros(0, np.int64)
    table: dict[str, Any] | None = None
    if k > 1:
        ks, probes, nq, table = _calibrate(x, assign, centroids, cosine)
    else:
        ks, probes, nq = [10], [k], 0
    sq_min = x.min(axis=0) if m else np.zeros(dims, np.float32)
    sq_max = x.max(axis=0) if m else np.zeros(dims, np.float32)
    del x
    nprobe: dict[str, Any] = {
        "target_recall": TARGET_RECALL,
        "k": ks,
        "nprobe": probes,
        "queries": nq,
        "default": int(probes[0]),
    }
    if table is not None:
        nprobe["by_rank"] = table
    encoded = vecfile.encode(
        attr,
        n_rows=n_rows,
        dtype=dtype,
        metric=metric,
        centroids=centroids,
        cord=rows[order],
        counts=counts,
        vectors=orig[order],
        sq_min=sq_min,
        sq_max=sq_max,
        nprobe=nprobe,
        kmeans={"niter": KMEANS_NITER, "seed": KMEANS_SEED, "train_points": train_points},
    )
    summary = {
        "kind": "vec",
        "attr": attr,
        "dims": int(dims),
        "dtype": dtype,
        "metric": metric,
        "vectors": m,
        "clusters": k,
        "nprobe": nprobe["default"],
        "head_bytes": encoded.head_bytes,
    }
    return BuiltVectors(encoded.data, summary)


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float32))
    norms[norms == 0] = 1.0
    out: np.ndarray = x / norms[:, None]
    return out


def _cluster(x: np.ndarray, k: int, *, spherical: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """(centroids f32 (k, d), assignment int64 (m,), training points)."""
    m, d = x.shape
    if k == 0:
        return np.zeros((0, d), np.float32), np.zeros(0, np.int64), 0
    if k == 1:
        c = x.mean(axis=0, dtype=np.float64).astype(np.float32)
        if spherical:
            norm = float(np.linalg.norm(c))
            c = c / norm if norm > 0 else c
        return c.reshape(1, d), np.zeros(m, np.int64), m
    import faiss

    n_train = min(m, TRAIN_POINTS_PER_CLUSTER * k, TRAIN_MAX_POINTS)
    rng = np.random.default_rng(KMEANS_SEED)
    sample = x if n_train == m else x[np.sort(rng.choice(m, n_train, replace=False))]
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(BUILD_THREADS)
    try:
        km = faiss.Kmeans(
            d,
            k,
            niter=KMEANS_NITER,
            seed=KMEANS_SEED,
            spherical=spherical,
            min_points_per_centroid=1,
            max_points_per_centroid=1 << 30,
            verbose=False,
        )
        km.train(np.ascontiguousarray(sample, dtype=np.float32))
        _, assign = km.index.search(np.ascontiguousarray(x, dtype=np.float32), 1)
        centroids = np.array(km.centroids, dtype=np.float32).reshape(k, d)
    finally:
        faiss.omp_set_num_threads(previous)
    return centroids, assign.reshape(-1).astype(np.int64), n_train


def _calibrate(
    x: np.ndarray, assign: np.ndarray, centroids: np.ndarray, cosine: bool
) -> tuple[list[int], list[int], int, dict[str, Any]]:
    """The index's recall table, measured on a sample of its own vectors (see module doc).

    An IVF search that scans the probed clusters exactly finds a true neighbour iff the neighbour's
    cluster is among the nprobe nearest clusters of the query, so recall(nprobe) is the share of
    (query, neighbour) pairs whose cluster rank is below nprobe: a quantile, computed directly.
    Returns the legacy table (smallest nprobe reaching TARGET_RECALL for recall@K, K in
    CALIBRATION_KS), the number of queries, and the rank table: for every neighbour-rank bucket
    (``RANK_EDGES``) the probes needed to find that share (``RECALL_LEVELS``) of its neighbours.
    """
    m = x.shape[0]
    ncl = centroids.shape[0]
    ks = [kk for kk in CALIBRATION_KS if kk <= m - 1] or [max(1, m - 1)]
    kmax = ks[-1]
    edges = [e for e in RANK_EDGES if e <= kmax] or [kmax]
    rng = np.random.default_rng(KMEANS_SEED + 1)
    nq = int(min(m, CALIBRATION_QUERIES))
    queries = np.sort(rng.choice(m, nq, replace=False))
    sq = None if cosine else np.einsum("ij,ij->i", x, x)
    csq = None if cosine else np.einsum("ij,ij->i", centroids, centroids)
    ranks: list[np.ndarray] = []  # (b, kmax) cluster rank of each query's r-th neighbour
    for lo in range(0, nq, CALIBRATION_BLOCK):
        qi = queries[lo : lo + CALIBRATION_BLOCK]
        q = x[qi]
        b = qi.shape[0]
        dist = q @ x.T
        if sq is None:
            np.negative(dist, out=dist)
        else:
            dist *= -2.0
            dist += sq[None, :]
        dist[np.arange(b), qi] = np.inf  # leave one out
        nb = _nearest(dist, kmax)
        cip = q @ centroids.T
        cdist = -cip if csq is None else csq[None, :] - 2.0 * cip
        crank = np.empty(cdist.shape, np.int64)
        np.put_along_axis(crank, np.argsort(cdist, axis=1), np.arange(ncl)[None, :].repeat(b, 0), axis=1)
        ranks.append(np.take_along_axis(crank, assign[nb], axis=1))
    r = np.concatenate(ranks)  # (nq, kmax)
    probes = []
    for kk in ks:
        probes.append(_probes_needed(r[:, :kk].ravel(), [TARGET_RECALL], ncl)[0])
    probes = np.maximum.accumulate(np.array(probes, np.int64)).tolist()
    table_probes = []
    lo = 0
    for e in edges:
        table_probes.append(_probes_needed(r[:, lo:e].ravel(), RECALL_LEVELS, ncl))
        lo = e
    widths = np.diff(np.array([0, *edges], np.float64))  # pairs per bucket, per query
    tp = _monotone(np.array(table_probes, np.float64), widths)
    table = {"ranks": list(edges), "levels": list(RECALL_LEVELS), "probes": tp.tolist()}
    return ks, [int(p) for p in probes], nq, table


def _nearest(dist: np.ndarray, kmax: int) -> np.ndarray:
    """(b, kmax) column indices of each row's ``kmax`` smallest ``dist``, ascending.

    A full selection over every column of a row (``argpartition``) costs more than the distances
    themselves at 1M vectors; a threshold from a sample of the columns first keeps about
    ``SELECT_OVERSAMPLE`` x kmax of them (one comparison per column), and the selection runs on
    those. A row whose threshold keeps fewer than ``kmax`` falls back to the full selection."""
    b, m = dist.shape
    step = max(1, m // (kmax * SELECT_SAMPLE_PER_K))
    sample = dist[:, ::step]
    j = min(sample.shape[1] - 1, SELECT_OVERSAMPLE * kmax // step + SELECT_SLACK)
    if step == 1 or j >= sample.shape[1] - 1:
        part = np.argpartition(dist, kmax - 1, axis=1)[:, :kmax]
    else:
        threshold = np.partition(sample, j, axis=1)[:, j]
        part = np.empty((b, kmax), np.int64)
        for i in range(b):
            row = dist[i]
            kept = np.flatnonzero(row <= threshold[i])
            if kept.shape[0] < kmax:
                kept = np.arange(m)
            part[i] = kept[np.argpartition(row[kept], kmax - 1)[:kmax]]
    order = np.argsort(np.take_along_axis(dist, part, axis=1), axis=1, kind="stable")
    out: np.ndarray = np.take_along_axis(part, order, axis=1)
    return out


def _monotone(probes: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """The rank table made non-decreasing over the buckets (a deeper neighbour never needs fewer
    probes), level by level, by the least-squares monotone fit weighted by each bucket's pairs
    (pool adjacent violators), rounded up to whole probes. The upper envelope (a running maximum)
    carried the noise of one shallow bucket into every deeper one."""
    out = np.empty_like(probes)
    for col in range(probes.shape[1]):
        out[:, col] = _pool_adjacent_violators(probes[:, col], widths)
    return np.ceil(out - 1e-9).astype(np.int64)


def _pool_adjacent_violators(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The non-decreasing sequence closest to ``values`` in weighted least squares."""
    means: list[float] = []
    totals: list[float] = []
    counts: list[int] = []
    for v, w in zip(values.tolist(), weights.tolist(), strict=True):
        means.append(v)
        totals.append(w)
        counts.append(1)
        while len(means) > 1 and means[-2] > means[-1]:
            w2, w1 = totals.pop(), totals.pop()
            m2, m1 = means.pop(), means.pop()
            means.append((m1 * w1 + m2 * w2) / (w1 + w2))
            totals.append(w1 + w2)
            counts.append(counts.pop() + counts.pop())
    return np.repeat(np.array(means), counts)


def _probes_needed(cluster_ranks: np.ndarray, levels: Sequence[float], ncl: int) -> list[int]:
    """For each level, the smallest nprobe whose probed clusters hold that share of the pairs."""
    rs = np.sort(cluster_ranks)
    n = rs.shape[0]
    idx = np.clip(np.ceil(np.asarray(levels) * n).astype(np.int64) - 1, 0, n - 1)
    return [int(v) for v in np.minimum(rs[idx] + 1, ncl)]


__all__ = ["BuiltVectors", "build_vec_file"]
