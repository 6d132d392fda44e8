"""The IVF vector index of one segment attribute: build (k-means, layout, nprobe calibration),
the ``vec.<attr>`` file, and search (approximate with adaptive probing, or exact).

Build. The vectors of the rows that have one are clustered with faiss k-means (spherical for
cosine distance, on unit vectors) into ``k = round(4·√m)`` clusters, or one cluster (flat) below
``FLAT_BELOW`` vectors; training uses a seeded sample of at most ``min(64·k, 100_000)`` points.
Every vector is assigned to its nearest centroid and stored in its cluster's block (row ordinals
ascending, then the vectors in the column's own dtype, f32, f16 or i8), so a cold reader could fetch
the centroids and then only the probed blocks with ranged reads (each block has its offset,
length, count and CRC-32C in the table of contents). Then the index measures its own recall: a
seeded sample of the segment's vectors serve as queries (leave-one-out: the query's own row is
not a neighbour, which makes a sample point distributed like a fresh query from the same data);
for every neighbour-rank bucket (``RANK_EDGES``) the number of probed clusters that finds each
share (``RECALL_LEVELS``) of such neighbours is computed exactly from the cluster rank of every
true neighbour, with no trial searches. The file stores that table (meta ``nprobe.by_rank``) and,
for older readers, the nprobe reaching ``TARGET_RECALL`` for recall@K, K in (10, 100, 1000).

Search. Queries are planned across all the parts of a snapshot (lagoon/index/vector/plan.py,
docs/vector-search.md): the planner decides, from the recall table, how many clusters each
segment's ``ProbeSearch`` scans. A probe ranks the candidates of the probed clusters exactly
(f32 distances, then float64 distances for the k returned rows; ties by row = by id) after a
first pass over 8-bit codes (faiss ``IndexIVFScalarQuantizer`` over the loaded clusters, ids =
rows, masks as an ``IDSelectorBitmap``) that keeps the best ``max(RERANK_FACTOR·k, RERANK_MIN)``:
a quarter of the bytes to scan, and recall as with full vectors (only a true neighbour ranked
below the cut by its codes is lost). With a candidate mask (filter and/or live rows) the probe
follows a mask correlated with the vectors (see ``ProbeSearch``), widens (x2) while it finds
fewer than k, and scans the candidates exactly when they are at most ``max(2000, 2 % of vectors)``
or the probe reaches half the clusters. ``exact`` is the brute-force scan (same arithmetic as
``lagoon.index.sources.table.LiveDocs.vector_topk``).

Invariants: in memory the vectors are kept once as float32 in cluster order (``cvec``), plus their
8-bit codes, with ``cord`` (their row ordinals) and ``row_to_c`` (row -> index in ``cvec`` or -1).
A cluster's slices are written once, under the index lock, before the cluster is marked loaded;
queries read only loaded clusters, so one index serves concurrent queries while a lazily opened
one fills in. No per-row Python loops: a probe
gathers the candidate indices of the probed clusters (vectorised), drops masked-out rows, and
computes their inner products with the query in one faiss kernel call
(``fvec_inner_products_by_idx``, AVX2, no copy of the rows), run with one OpenMP thread on the
calling thread (single queries are slower with more). k-means uses faiss with 2 OpenMP threads.
Pure: no I/O.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from lagoon.errors import DataCorruption, InternalError
from lagoon.format.segment import MAGIC_VEC, SectionFile, SectionWriter, align, crc32c_of, gather_runs
from lagoon.index.vector import plan as _plan
from lagoon.index.vector.kernels import exact_dist, inner_products, one_omp_thread, topk_smallest
from lagoon.index.vector.plan import DEFAULT_RECALL_TARGET, RecallCurve

FLAT_BELOW = 8192  # fewer vectors than this: a single cluster (exact scan)
CLUSTERS_PER_SQRT = 4.0
KMEANS_NITER = 12
KMEANS_SEED = 1234
TRAIN_POINTS_PER_CLUSTER = 64
TRAIN_MAX_POINTS = 100_000
BUILD_THREADS = 2
TARGET_RECALL = 0.97  # the legacy per-K table (older readers); queries plan from the rank table
CALIBRATION_QUERIES = 600  # at most; fewer for large segments (CALIBRATION_BUDGET)
CALIBRATION_MIN_QUERIES = 300
CALIBRATION_BUDGET = 1e8  # calibration queries x vectors (a full scan each)
CALIBRATION_KS = (10, 100, 1000)
# Upper edges of the neighbour-rank buckets of the recall table (bucket i: ranks in (edge[i-1], edge[i]])
RANK_EDGES = (1, 2, 3, 4, 6, 8, 11, 16, 23, 32, 46, 64, 91, 128, 182, 256, 362, 512, 724, 1000)
# Recall levels at which the table stores the probes needed: 0.5 ... 0.9995 (geometric in 1 - level), 1
RECALL_LEVELS = (*tuple(round(1 - 0.5 * 0.001 ** (i / 46), 6) for i in range(47)), 1.0)
EXACT_BELOW_ROWS = 2000  # masks keeping fewer rows than max(this, fraction · vectors) go exact
EXACT_BELOW_FRACTION = 0.02
EXACT_ABOVE_PROBE_FRACTION = 0.5  # probing at least this share of clusters: scan exactly instead
CANDIDATE_MARGIN = 2.0  # expected masked candidates in the probed clusters >= margin · k
SEEN_SAMPLE = 2048  # candidates of newly scanned clusters are counted on about this many rows
ANTI_CORRELATED = 0.7  # probed clusters holding < this x the mask's share of candidates: follow the mask
_GATHER_FRACTION = 0.3
QUANTIZED_FIRST_PASS = True  # probe with 8-bit codes, then rank the best RERANK_FACTOR·k exactly
RERANK_FACTOR = 8
RERANK_MIN = 64
WHOLE_FILE_FRACTION = 0.5  # a lazy index needing more of its block bytes than this fetches the file

METRICS = ("cosine_distance", "euclidean_squared")
_DTYPES: dict[str, np.dtype[Any]] = {"f32": np.dtype("<f4"), "f16": np.dtype("<f2"), "i8": np.dtype("i1")}


# --------------------------------------------------------------------------------------------- build


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
    if metric not in METRICS:
        raise InternalError(f"unknown distance metric {metric!r}")
    if dtype not in _DTYPES:
        raise InternalError(f"unknown vector dtype {dtype!r}")
    n_rows, dims = matrix.shape
    rows = np.flatnonzero(valid).astype(np.int64)
    m = int(rows.shape[0])
    orig = np.ascontiguousarray(matrix[rows], dtype=_DTYPES[dtype])
    x = orig.astype(np.float32, copy=False)  # the clustering space (unit vectors for cosine)
    cosine = metric == "cosine_distance"
    if cosine:
        x = _normalise(x)
    if m == 0:
        k = 0
    elif m < FLAT_BELOW or not index:
        k = 1
    else:
        k = round(CLUSTERS_PER_SQRT * math.sqrt(m))
    centroids, assign, train_points = _cluster(x, k, spherical=cosine)
    order = np.lexsort((rows, assign))
    cord = rows[order]
    counts = np.bincount(assign, minlength=k).astype(np.int64) if k else np.zeros(0, np.int64)
    table: dict[str, Any] | None = None
    if k > 1:
        ks, probes, nq, table = _calibrate(x, assign, centroids, cosine)
    else:
        ks, probes, nq = [10], [k], 0
    sq_min = x.min(axis=0) if m else np.zeros(dims, np.float32)
    sq_max = x.max(axis=0) if m else np.zeros(dims, np.float32)
    del x

    # Cluster blocks: [u32 row ordinals][pad to 64][vectors in the column dtype], 64-aligned.
    isz = _DTYPES[dtype].itemsize
    vec_off = _align64(4 * counts)
    lengths = vec_off + counts * dims * isz
    offsets = np.zeros(k, np.int64)
    if k:
        np.cumsum(_align64(lengths[:-1]), out=offsets[1:])
    total = int(offsets[-1] + align(int(lengths[-1]))) if k else 0
    blocks = np.zeros(total, np.uint8)
    crcs = np.zeros(k, np.uint32)
    ptr = np.zeros(k + 1, np.int64)
    np.cumsum(counts, out=ptr[1:])
    sorted_orig = orig[order]
    del orig
    for c in range(k):
        o, n = int(offsets[c]), int(counts[c])
        lo, hi = int(ptr[c]), int(ptr[c + 1])
        blocks[o : o + 4 * n].view(np.uint32)[:] = cord[lo:hi]
        vo = o + int(vec_off[c])
        blocks[vo : vo + n * dims * isz].view(_DTYPES[dtype]).reshape(n, dims)[:] = sorted_orig[lo:hi]
        crcs[c] = crc32c_of(blocks[o : o + int(lengths[c])])

    w = SectionWriter()
    w.add("centroids", centroids.astype("<f4").reshape(k, dims))
    w.add("cluster_offset", offsets.astype("<u8"))
    w.add("cluster_length", lengths.astype("<u8"))
    w.add("cluster_count", counts.astype("<u4"))
    w.add("cluster_crc32c", crcs.astype("<u4"))
    row_cluster = np.full(n_rows, k, np.uint32)  # k: the row has no vector
    row_cluster[cord] = np.repeat(np.arange(k, dtype=np.uint32), counts)
    w.add("row_cluster", row_cluster.astype("<u4"))
    w.add("sq_min", sq_min.astype("<f4"))
    w.add("sq_max", sq_max.astype("<f4"))
    head = {"length": w.size, "crc32c": w.area_crc32c()}
    blocks_at = w.add_raw(blocks)
    nprobe = {
        "target_recall": TARGET_RECALL,
        "k": ks,
        "nprobe": probes,
        "queries": nq,
        "default": int(probes[0]),
    }
    if table is not None:
        nprobe["by_rank"] = table
    meta = {
        "attr": attr,
        "dims": int(dims),
        "dtype": dtype,
        "metric": metric,
        "n_rows": int(n_rows),
        "n_vectors": m,
        "n_clusters": k,
        "spherical": cosine,
        "kmeans": {"niter": KMEANS_NITER, "seed": KMEANS_SEED, "train_points": train_points},
        "nprobe": nprobe,
        "blocks": {"offset": blocks_at, "length": total},
        "head": head,
    }
    summary = {
        "kind": "vec",
        "attr": attr,
        "dims": int(dims),
        "dtype": dtype,
        "metric": metric,
        "vectors": m,
        "clusters": k,
        "nprobe": nprobe["default"],
    }
    data = w.finish(MAGIC_VEC, meta)
    summary["head_bytes"] = w.data_start + head["length"]
    return BuiltVectors(data, summary)


def _align64(n: np.ndarray) -> np.ndarray:
    out: np.ndarray = (n + 63) // 64 * 64
    return out


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
    nq = int(min(m, CALIBRATION_QUERIES, max(CALIBRATION_MIN_QUERIES, CALIBRATION_BUDGET // max(1, m))))
    queries = np.sort(rng.choice(m, nq, replace=False))
    sq = None if cosine else np.einsum("ij,ij->i", x, x)
    csq = None if cosine else np.einsum("ij,ij->i", centroids, centroids)
    ranks: list[np.ndarray] = []  # (b, kmax) cluster rank of each query's r-th neighbour
    for lo in range(0, nq, 32):
        qi = queries[lo : lo + 32]
        q = x[qi]
        b = qi.shape[0]
        dist = q @ x.T
        if sq is None:
            np.negative(dist, out=dist)
        else:
            dist *= -2.0
            dist += sq[None, :]
        dist[np.arange(b), qi] = np.inf  # leave one out
        part = np.argpartition(dist, kmax - 1, axis=1)[:, :kmax]
        nb = np.take_along_axis(part, np.argsort(np.take_along_axis(dist, part, axis=1), axis=1), axis=1)
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
    # a deeper bucket never needs fewer probes than a shallower one (noise of small samples)
    tp = np.maximum.accumulate(np.array(table_probes, np.int64), axis=0)
    table = {"ranks": list(edges), "levels": list(RECALL_LEVELS), "probes": tp.tolist()}
    return ks, [int(p) for p in probes], nq, table


def _probes_needed(cluster_ranks: np.ndarray, levels: Sequence[float], ncl: int) -> list[int]:
    """For each level, the smallest nprobe whose probed clusters hold that share of the pairs."""
    rs = np.sort(cluster_ranks)
    n = rs.shape[0]
    idx = np.clip(np.ceil(np.asarray(levels) * n).astype(np.int64) - 1, 0, n - 1)
    return [int(v) for v in np.minimum(rs[idx] + 1, ncl)]


# --------------------------------------------------------------------------------------------- read


class BlockSource(Protocol):
    """Where a lazily opened index gets the bytes after its head (absolute file offsets).
    Called from query threads, never from the event loop."""

    def ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """The bytes ``[start, end)`` of each range."""
        ...

    def whole(self) -> bytes:
        """The whole file, verified against the manifest's size and checksum."""
        ...


class VectorIndex:
    """A ``vec.<attr>`` file: the IVF and every vector (float32, cluster order).

    Opened from the whole file (every block is loaded at once), or lazily from the file's head
    (meta, centroids, table of contents, ``row_cluster``) and a ``BlockSource``: then blocks are
    fetched with ranged reads the first time a query needs them (each checked against its own
    CRC-32C and the ordinals ``row_cluster`` implies), or all at once when a query needs more than
    ``WHOLE_FILE_FRACTION`` of the block bytes, or when ``hydrate`` hands over the whole file."""

    def __init__(self, sf: SectionFile, n_rows: int, *, blocks: BlockSource | None = None) -> None:
        what = sf.what
        meta = sf.meta
        try:
            self.attr = str(meta["attr"])
            self.dims = int(meta["dims"])
            self.dtype = str(meta["dtype"])
            self.metric = str(meta["metric"])
            self.n_vectors = int(meta["n_vectors"])
            self.n_clusters = int(meta["n_clusters"])
            probe = meta["nprobe"]
            self.probe_k = np.array(probe["k"], dtype=np.float64)
            self.probe_n = np.array(probe["nprobe"], dtype=np.float64)
            self.default_nprobe = int(probe["default"])
            self.curve = RecallCurve.from_meta(probe, int(meta["n_clusters"]))
            blocks_at = int(meta["blocks"]["offset"])
            blocks_len = int(meta["blocks"]["length"])
            file_rows = int(meta["n_rows"])
        except (KeyError, TypeError, ValueError) as e:
            raise DataCorruption(f"{what}: malformed meta ({e!r})") from None
        if self.dtype not in _DTYPES or self.metric not in METRICS or self.dims < 1:
            raise DataCorruption(f"{what}: unknown dtype, metric or dims")
        if file_rows != n_rows:
            raise DataCorruption(f"{what}: written for {file_rows} rows, the segment has {n_rows}")
        if self.probe_k.shape != self.probe_n.shape or self.probe_k.size == 0:
            raise DataCorruption(f"{what}: malformed nprobe table")
        self.what = what
        k, d = self.n_clusters, self.dims
        self.centroids = np.ascontiguousarray(sf.array("centroids", "<f4").reshape(k, d))
        offsets = sf.array("cluster_offset", "<u8").astype(np.int64)
        lengths = sf.array("cluster_length", "<u8").astype(np.int64)
        counts = sf.array("cluster_count", "<u4").astype(np.int64)
        if not (offsets.shape == lengths.shape == counts.shape == (k,)):
            raise DataCorruption(f"{what}: table of contents does not have one entry per cluster")
        dt = _DTYPES[self.dtype]
        expect_len = _align64(4 * counts) + counts * d * dt.itemsize
        if (
            int(counts.sum()) != self.n_vectors
            or not np.array_equal(lengths, expect_len)
            or np.any(offsets < 0)
            or np.any(offsets + lengths > blocks_len)
        ):
            raise DataCorruption(f"{what}: table of contents is inconsistent")
        m = self.n_vectors
        self.list_ptr = np.zeros(k + 1, np.int64)
        np.cumsum(counts, out=self.list_ptr[1:])
        self.sizes = counts
        self._offsets = offsets
        self._lengths = lengths
        self._blocks_at = sf.data_start + blocks_at  # absolute file offset of the blocks region
        self._blocks_len = blocks_len
        self._crcs = sf.array("cluster_crc32c", "<u4") if sf.has("cluster_crc32c") else None
        self._source = blocks
        self._lock = threading.Lock()
        self._loaded = np.zeros(k, bool)
        self._complete = k == 0
        self.cvec = np.zeros((m, d), np.float32)
        self.aux = np.zeros(m, np.float32)

        if sf.has("row_cluster"):
            rc = sf.array("row_cluster", "<u4")
            if rc.shape != (n_rows,) or (n_rows and int(rc.max()) > k):
                raise DataCorruption(f"{what}: row_cluster does not map every row to a cluster")
            if not np.array_equal(np.bincount(rc, minlength=k + 1)[:k], counts):
                raise DataCorruption(f"{what}: row_cluster disagrees with the cluster counts")
            cord = np.argsort(rc, kind="stable")[:m].astype(np.int64)
        elif blocks is not None:
            raise InternalError(f"{what}: a lazy open needs the row_cluster section")
        else:  # files written before row_cluster: the ordinals come from the blocks
            region = sf.region(blocks_at, blocks_len)
            cord = np.empty(m, np.int64)
            for c in range(k):
                o, n = int(offsets[c]), int(counts[c])
                lo = int(self.list_ptr[c])
                cord[lo : lo + n] = region[o : o + 4 * n].view("<u4")
            if m and (int(cord.min()) < 0 or int(cord.max()) >= n_rows):
                raise DataCorruption(f"{what}: row ordinal out of range")
        row_to_c = np.full(n_rows, -1, np.int64)
        row_to_c[cord] = np.arange(m, dtype=np.int64)
        if m and int(np.count_nonzero(row_to_c >= 0)) != m:
            raise DataCorruption(f"{what}: a row has two vectors")
        self.row_cluster = np.full(n_rows, k, np.intp)  # cluster of each row; k: no vector
        self.row_cluster[cord] = np.repeat(np.arange(k, dtype=np.intp), counts)
        self.row_cluster.setflags(write=False)
        self.cord = cord
        self.row_to_c = row_to_c
        self.valid = row_to_c >= 0
        self.all_valid = m == n_rows
        for a in (self.cord, self.row_to_c, self.valid, self.list_ptr, self.sizes):
            a.setflags(write=False)
        if self.metric == "cosine_distance":
            self.centroid_sq = np.zeros(k, np.float32)
        else:
            self.centroid_sq = np.einsum("ij,ij->i", self.centroids, self.centroids, dtype=np.float32)
        self._sq: Any = None  # faiss IndexIVFScalarQuantizer over the loaded clusters
        self._sq_range: tuple[np.ndarray, np.ndarray] | None = None
        if sf.has("sq_min") and sf.has("sq_max"):
            lo_, hi_ = sf.array("sq_min", "<f4"), sf.array("sq_max", "<f4")
            if lo_.shape != (d,) or hi_.shape != (d,):
                raise DataCorruption(f"{what}: sq_min / sq_max do not have one value per dimension")
            self._sq_range = (lo_.copy(), hi_.copy())
        if blocks is None:
            self._fill_region(sf.region(blocks_at, blocks_len), verify_blocks=False)

    # ------------------------------------------------------------------------------------- loading

    @property
    def lazy(self) -> bool:
        """Was the index opened from its head (blocks fetched on demand)?"""
        return self._source is not None

    @property
    def loaded_fraction(self) -> float:
        """Share of the block bytes in memory (1.0 once complete)."""
        if self._complete or self._blocks_len == 0:
            return 1.0
        return float(self._lengths[self._loaded].sum()) / float(self._lengths.sum())

    def hydrate(self, data: bytes) -> None:
        """Load every block not yet loaded from the whole file (already verified by the caller)."""
        if self._complete:
            return
        with self._lock:
            if not self._complete:
                region = np.frombuffer(data, np.uint8, count=self._blocks_len, offset=self._blocks_at)
                self._fill_region(region, verify_blocks=False)

    def _ensure(self, clusters: np.ndarray | None) -> None:
        """Make sure the blocks of ``clusters`` (None: all) are in memory."""
        if self._complete:
            return
        k = self.n_clusters
        if clusters is None:
            need = np.flatnonzero(~self._loaded)
        else:
            c = np.unique(clusters)
            c = c[(c >= 0) & (c < k)]
            need = c[~self._loaded[c]]
        if need.shape[0] == 0:
            return
        source = self._source
        if source is None:  # pragma: no cover - an eagerly opened index is complete
            raise InternalError(f"{self.what}: blocks missing from an eagerly opened index")
        with self._lock:
            need = need[~self._loaded[need]]
            if need.shape[0] == 0:
                return
            if float(self._lengths[need].sum()) > WHOLE_FILE_FRACTION * self._blocks_len:
                data = source.whole()
                region = np.frombuffer(data, np.uint8, count=self._blocks_len, offset=self._blocks_at)
                self._fill_region(region, verify_blocks=False)
                return
            starts = self._blocks_at + self._offsets[need]
            bufs = source.ranges(
                [(int(s), int(s + n)) for s, n in zip(starts, self._lengths[need], strict=True)]
            )
            for cluster, buf in zip(need.tolist(), bufs, strict=True):
                block = np.frombuffer(buf, np.uint8)
                if block.shape[0] != int(self._lengths[cluster]):
                    raise DataCorruption(
                        f"{self.what}: block {cluster} has {block.shape[0]} bytes, "
                        f"expected {self._lengths[cluster]}"
                    )
                self._fill_block(cluster, block, verify=True)
            if self._loaded.all():
                self._complete = True

    def _fill_region(self, region: np.ndarray, *, verify_blocks: bool) -> None:
        todo = np.flatnonzero(~self._loaded)
        for c in todo.tolist():
            o, n = int(self._offsets[c]), int(self._lengths[c])
            self._fill_block(c, region[o : o + n], verify=verify_blocks, quantize=False)
        self._quantize(todo)
        self._complete = True

    def _quantize(self, clusters: np.ndarray) -> None:
        """Add the (loaded) vectors of ``clusters`` to the 8-bit first-pass index, creating it on
        first use; files without stored value ranges take them from the vectors (all loaded)."""
        if self.n_clusters <= 1 or self.n_vectors == 0 or not QUANTIZED_FIRST_PASS or clusters.shape[0] == 0:
            return
        import faiss

        if self._sq is None:
            if self._sq_range is None:  # an older file: ranges from every vector, loaded eagerly
                x = self._space(0, self.n_vectors)
                self._sq_range = (x.min(axis=0), x.max(axis=0))
            vmin, vmax = self._sq_range
            fmetric = faiss.METRIC_INNER_PRODUCT if self.metric == "cosine_distance" else faiss.METRIC_L2
            index = faiss.IndexIVFScalarQuantizer(
                faiss.IndexFlat(self.dims, fmetric),
                self.dims,
                self.n_clusters,
                faiss.ScalarQuantizer.QT_8bit,
                fmetric,
                False,  # codes of the vectors themselves, not of residuals
            )
            trained = np.concatenate([vmin, np.maximum(vmax - vmin, 1e-12)]).astype(np.float32)
            faiss.copy_array_to_vector(trained, index.sq.trained)
            index.is_trained = True
            self._sq = index
        starts, ends = self.list_ptr[clusters], self.list_ptr[clusters + 1]
        idx = gather_runs(starts, ends - starts)
        if idx.shape[0] == 0:
            return
        x = np.ascontiguousarray(self._space_of(idx))
        ids = np.ascontiguousarray(self.cord[idx], dtype=np.int64)
        assign = np.ascontiguousarray(self.row_cluster[ids], dtype=np.int64)
        self._sq.add_core(idx.shape[0], faiss.swig_ptr(x), faiss.swig_ptr(ids), faiss.swig_ptr(assign))

    def _space(self, lo: int, hi: int) -> np.ndarray:
        return self._space_of(np.arange(lo, hi))

    def _space_of(self, idx: np.ndarray) -> np.ndarray:
        """float32 vectors ``cvec[idx]`` in the clustering space (unit length for cosine)."""
        x: np.ndarray = self.cvec[idx]
        if self.metric == "cosine_distance":
            x = x * self.aux[idx][:, None]
        return x

    def _fill_block(self, c: int, block: np.ndarray, *, verify: bool, quantize: bool = True) -> None:
        """Copy block ``c`` into ``cvec`` (and its norms into ``aux``); checks its ordinals against
        ``cord`` and, when ``verify``, its CRC-32C against the table of contents."""
        if verify and self._crcs is not None and crc32c_of(block) != int(self._crcs[c]):
            raise DataCorruption(f"{self.what}: block {c} checksum mismatch")
        lo, hi = int(self.list_ptr[c]), int(self.list_ptr[c + 1])
        n, d = hi - lo, self.dims
        dt = _DTYPES[self.dtype]
        if not np.array_equal(block[: 4 * n].view("<u4"), self.cord[lo:hi]):
            raise DataCorruption(f"{self.what}: block {c} holds other rows than its table says")
        vo = align(4 * n)
        vec = block[vo : vo + n * d * dt.itemsize].view(dt).reshape(n, d)
        out = self.cvec[lo:hi]
        out[:] = vec
        sq = np.einsum("ij,ij->i", out, out, dtype=np.float32)
        if self.metric == "cosine_distance":
            inv = np.zeros_like(sq)
            np.divide(1.0, np.sqrt(sq), out=inv, where=sq > 0)
            self.aux[lo:hi] = inv
        else:
            self.aux[lo:hi] = sq
        if quantize:
            self._quantize(np.array([c], np.int64))
        self._loaded[c] = True

    # ------------------------------------------------------------------------------------- rows

    @property
    def nbytes(self) -> int:
        return int(self.cvec.nbytes + self.cord.nbytes + self.row_to_c.nbytes + self.centroids.nbytes)

    def rows_matrix(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(float32 (len(rows), dims) with zeros where a row has no vector, bool valid)."""
        idx = self.row_to_c[rows]
        valid = idx >= 0
        self._ensure(self.row_cluster[rows])
        out = np.zeros((rows.shape[0], self.dims), np.float32)
        out[valid] = self.cvec[idx[valid]]
        return out, valid

    # ------------------------------------------------------------------------------------- search

    def candidates(self, cand: np.ndarray) -> np.ndarray:
        """Indices into ``cvec`` of the rows ``cand`` (bool over rows) keeps that have a vector,
        in row order. O(rows) to scan the mask, then O(kept)."""
        cidx = self.row_to_c[np.flatnonzero(cand)]
        out: np.ndarray = cidx[cidx >= 0]
        return out

    def exact(
        self,
        query: np.ndarray,
        metric: str,
        k: int,
        cand: np.ndarray | None,
        *,
        cidx: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` rows among ``cand`` (bool over rows; None = all rows with a vector):
        (rows int64, float64 distances), ascending, ties by row. ``cidx`` = ``candidates(cand)``
        when the caller has it."""
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
        m = self.n_vectors
        if cand is not None and cidx is None:
            cidx = self.candidates(cand)
        n_cand = m if cidx is None else int(cidx.shape[0])
        if n_cand == 0 or k <= 0:
            return np.empty(0, np.int64), np.empty(0, np.float64)
        self._ensure(None if cidx is None else self.row_cluster[self.cord[cidx]])
        if cidx is not None and n_cand < _GATHER_FRACTION * m:
            idx = np.sort(cidx)  # memory order: the rows are read front to back
            dist = self._dist(q, metric, idx)
            top = topk_smallest(dist, self.cord[idx], min(k, n_cand))
            return self._finish(idx[top], q, metric)
        dist = self._dist(q, metric, None)
        if cidx is not None:
            keep = np.zeros(m, dtype=bool)
            keep[cidx] = True
            dist[~keep] = np.inf
        top = topk_smallest(dist, self.cord, min(k, n_cand))
        return self._finish(top, q, metric)

    def cluster_counts(self, cand: np.ndarray) -> np.ndarray:
        """int64[n_clusters]: rows of each cluster that ``cand`` (bool over rows) keeps. One
        sequential pass over the mask and the per-row cluster ids."""
        kept = self.row_cluster.take(np.flatnonzero(cand))  # (a boolean compress is slower)
        counts: np.ndarray = np.bincount(kept, minlength=self.n_clusters + 1)
        return counts[: self.n_clusters]

    def search(
        self,
        query: np.ndarray,
        metric: str,
        k: int,
        cand: np.ndarray | None,
        *,
        nprobe: int | None = None,
        recall_target: float = DEFAULT_RECALL_TARGET,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top-``k`` rows among ``cand`` (bool over rows, None = all) at
        ``recall_target`` as the only part of a query (lagoon/index/vector/plan.py);
        ``nprobe`` forces a fixed number of probed clusters (no planning, no exact fallback)."""
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
        if k <= 0 or self.n_vectors == 0:
            return np.empty(0, np.int64), np.empty(0, np.float64)
        if nprobe is not None and metric == self.metric and self.n_clusters > 1:
            cdist = self._centroid_dist(q, metric)
            probe = self._nearest(cdist, max(1, min(int(nprobe), self.n_clusters)))
            return self._finish(self._probe(q, metric, k, cand, probe), q, metric)
        part = self.start(q, metric, k, cand)
        results, _ = _plan.plan_and_search(
            [part], k, recall_target, lambda r: np.zeros(r[0][0].shape[0], np.int64)
        )
        return results[0]

    def start(self, query: np.ndarray, metric: str, k: int, cand: np.ndarray | None) -> ProbeSearch:
        """One query's search of this index, probed as the planner decides (``ProbeSearch``)."""
        return ProbeSearch(self, np.ascontiguousarray(query, dtype=np.float32).reshape(-1), metric, k, cand)

    def nprobe_for(self, k_eff: float) -> int:
        """nprobe from the build-time table for an effective recall depth ``k_eff`` (log-log)."""
        ks, ps = self.probe_k, np.maximum(self.probe_n, 1.0)
        if ks.size == 1 or k_eff <= ks[0]:
            p = float(ps[0])
        elif k_eff >= ks[-1]:  # extrapolate the last segment of the log-log curve
            slope = math.log(ps[-1] / ps[-2]) / math.log(ks[-1] / ks[-2])
            p = float(ps[-1]) * (k_eff / float(ks[-1])) ** slope
        else:
            p = math.exp(float(np.interp(math.log(k_eff), np.log(ks), np.log(ps))))
        return max(1, min(self.n_clusters, math.ceil(p)))

    def _centroid_dist(self, q: np.ndarray, metric: str) -> np.ndarray:
        ip: np.ndarray = inner_products(self.centroids, self._query_vector(q, metric))
        if metric == "cosine_distance":
            return -ip
        out: np.ndarray = self.centroid_sq - np.float32(2.0) * ip
        return out

    @staticmethod
    def _query_vector(q: np.ndarray, metric: str) -> np.ndarray:
        """The vector the candidates are multiplied with: the unit query for cosine."""
        if metric == "cosine_distance":
            qn = float(np.linalg.norm(q))
            if qn > 0:
                return np.ascontiguousarray(q / np.float32(qn), dtype=np.float32)
        return q

    @staticmethod
    def _nearest(cdist: np.ndarray, nprobe: int) -> np.ndarray:
        if nprobe >= cdist.shape[0]:
            return np.arange(cdist.shape[0])
        out: np.ndarray = np.argpartition(cdist, nprobe - 1)[:nprobe]
        return out

    def _probe(
        self,
        q: np.ndarray,
        metric: str,
        k: int,
        cand: np.ndarray | None,
        probe: np.ndarray,
        bitmap: np.ndarray | None = None,
    ) -> np.ndarray:
        """Cluster-order indices of the best ``k`` candidates (kept by ``cand``) of the clusters
        ``probe``, best first (f32 distances, ties by row)."""
        probe = np.sort(probe)  # ascending cluster = ascending memory: sequential reads
        self._ensure(probe)
        if self._sq is not None and metric == self.metric:
            width = max(RERANK_FACTOR * k, RERANK_MIN)
            if int(self.sizes[probe].sum()) > width:
                return self._probe_quantized(q, metric, k, cand, probe, width, bitmap)
        starts = self.list_ptr[probe]
        idx = gather_runs(starts, self.list_ptr[probe + 1] - starts)
        if cand is not None:
            idx = idx[cand[self.cord[idx]]]
        return self._best(q, metric, k, idx)

    def _probe_quantized(
        self,
        q: np.ndarray,
        metric: str,
        k: int,
        cand: np.ndarray | None,
        probe: np.ndarray,
        width: int,
        bitmap: np.ndarray | None = None,
    ) -> np.ndarray:
        """``_probe`` with an 8-bit first pass: faiss scans the probed clusters' codes for the best
        ``width`` candidates (masked by ``cand``), which are then ranked exactly like ``_probe``."""
        import faiss

        qv = np.ascontiguousarray(self._query_vector(q, metric), dtype=np.float32).reshape(1, -1)
        params = faiss.SearchParametersIVF()
        params.nprobe = int(probe.shape[0])
        if cand is not None:
            if bitmap is None:
                bitmap = np.packbits(cand, bitorder="little")
            params.sel = faiss.IDSelectorBitmap(cand.shape[0], faiss.swig_ptr(bitmap))
        assign = np.ascontiguousarray(probe, dtype=np.int64).reshape(1, -1)
        cdist = np.zeros(assign.shape, np.float32)
        dist = np.empty((1, width), np.float32)
        labels = np.empty((1, width), np.int64)
        with one_omp_thread(faiss):
            self._sq.search_preassigned_c(
                1,
                faiss.swig_ptr(qv),
                width,
                faiss.swig_ptr(assign),
                faiss.swig_ptr(cdist),
                faiss.swig_ptr(dist),
                faiss.swig_ptr(labels),
                False,
                params,
            )
        del bitmap  # (kept alive until the search is done)
        rows = labels[0][labels[0] >= 0]
        return self._best(q, metric, k, np.sort(self.row_to_c[rows]))

    def _best(self, q: np.ndarray, metric: str, k: int, idx: np.ndarray) -> np.ndarray:
        """Indices (into ``cvec``) of the ``k`` best of ``idx`` by exact float32 distance, best
        first, ties by row."""
        ip = inner_products(self.cvec, self._query_vector(q, metric), idx)
        if metric == "cosine_distance":
            dist = np.float32(1.0) - ip * self.aux[idx]
        else:
            dist = self.aux[idx] - np.float32(2.0) * ip + np.float32(np.dot(q, q))
        top = topk_smallest(dist, self.cord[idx], min(k, idx.shape[0]))
        out: np.ndarray = idx[top]
        return out

    def _dist(self, q: np.ndarray, metric: str, idx: np.ndarray | None) -> np.ndarray:
        """float32 distances to every vector (``idx`` None: one matmul) or to ``cvec[idx]`` (one
        faiss kernel call, no gather)."""
        if metric == self.metric:
            aux = self.aux if idx is None else self.aux[idx]
        else:
            m = self.cvec if idx is None else self.cvec[idx]
            sq = np.einsum("ij,ij->i", m, m, dtype=np.float32)
            if metric == "cosine_distance":
                aux = np.zeros_like(sq)
                np.divide(1.0, np.sqrt(sq), out=aux, where=sq > 0)
            else:
                aux = sq
        qv = self._query_vector(q, metric)
        ip = inner_products(self.cvec, qv, idx)
        if metric == "cosine_distance":
            return np.float32(1.0) - ip * aux  # type: ignore[no-any-return]
        if metric == "euclidean_squared":
            d = aux - np.float32(2.0) * ip + np.float32(np.dot(q, q))
            np.maximum(d, 0, out=d)
            return d  # type: ignore[no-any-return]
        raise InternalError(f"unknown distance metric {metric!r}")

    def _finish(self, sel: np.ndarray, q: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
        rows = self.cord[sel]
        exact = exact_dist(self.cvec[sel], q, metric)
        order = np.lexsort((rows, exact))
        return rows[order], exact[order]


class ProbeSearch:
    """One query's probes of one index, extended as the planner asks (lagoon/index/vector/plan.py).

    ``probe(p)`` scans the ``p`` nearest clusters not scanned yet (8-bit first pass, exact ranking
    of the best candidates) and returns the best ``k`` of everything scanned so far. With a mask it
    keeps probing, in centroid order, until the scanned clusters hold at least the candidates ``p``
    clusters hold on average (a mask correlated with the vectors — a filter on a few clusters far
    from the query — is followed to where its rows are), and widens (x2) while fewer than ``k``
    were found; past ``EXACT_ABOVE_PROBE_FRACTION`` of the clusters it scans the candidates
    exactly. The mask is only read over the scanned clusters: no O(rows) pass per query except
    the count of candidates (a popcount)."""

    def __init__(self, vi: VectorIndex, q: np.ndarray, metric: str, k: int, cand: np.ndarray | None) -> None:
        self.vi, self.q, self.metric, self.k, self.cand = vi, q, metric, k, cand
        m = vi.n_vectors
        if cand is None:
            self.n_cand = m
        elif vi.all_valid:
            self.n_cand = int(np.count_nonzero(cand))
        else:
            self.n_cand = int(np.count_nonzero(cand & vi.valid))
        self.sigma = self.n_cand / m if m else 0.0
        ivf = metric == vi.metric and vi.n_clusters > 1
        small = cand is not None and self.n_cand <= max(EXACT_BELOW_ROWS, EXACT_BELOW_FRACTION * m)
        self.curve = vi.curve if ivf and not small else None
        self._cdist: np.ndarray | None = None
        self._order = np.empty(0, np.int64)
        self._probed = np.zeros(vi.n_clusters, bool) if ivf else np.zeros(0, bool)
        self._n_probed = 0
        self._seen = 0  # candidates in the scanned clusters
        self._rows = 0  # rows of the clusters the plan asked for (not of the extensions)
        self._sel: list[np.ndarray] = []
        self._bitmap: np.ndarray | None = None
        self._exact: tuple[np.ndarray, np.ndarray] | None = None

    def exact_cost(self) -> float:
        vi = self.vi
        n = self.n_cand if self.n_cand < _GATHER_FRACTION * vi.n_vectors else vi.n_vectors
        return _plan.exact_cost(n)

    def ivf_cost(self, nprobe: int) -> float:
        vi = self.vi
        return _plan.ivf_cost(vi.n_clusters, vi.n_vectors / max(1, vi.n_clusters), nprobe, vi.dims)

    def exact(self) -> tuple[np.ndarray, np.ndarray]:
        if self._exact is None:
            self._exact = self.vi.exact(self.q, self.metric, self.k, self.cand)
        return self._exact

    def probe(self, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        vi = self.vi
        ncl = vi.n_clusters
        if self.curve is None or self._exact is not None:
            return self.exact()
        want = min(self.k, self.n_cand)
        p = max(1, min(int(nprobe), ncl))
        while True:
            if p >= EXACT_ABOVE_PROBE_FRACTION * ncl and p > self._n_probed:
                return self.exact()
            self._scan_to(p)
            if self.cand is not None and self._seen < ANTI_CORRELATED * self.sigma * self._rows:
                # The probed clusters hold clearly fewer candidates than the mask's share predicts:
                # the mask is correlated with the vectors and its rows lie farther away. Follow
                # them until the probes hold the candidates an uncorrelated mask would give.
                need = max(CANDIDATE_MARGIN * self.k, self.sigma * self._rows)
                while self._seen < need and self._n_probed < EXACT_ABOVE_PROBE_FRACTION * ncl:
                    per = max(self.n_cand / ncl, 1e-9)  # the next clusters, at the average rate
                    step = max(1, math.ceil((need - self._seen) / per), self._n_probed // 4)
                    self._scan_to(min(ncl, self._n_probed + step), count_rows=False)
                if self._seen < need:
                    return self.exact()
            best = self._best()
            if best.shape[0] >= want or self._n_probed >= ncl:
                return vi._finish(best, self.q, self.metric)
            p = min(ncl, 2 * self._n_probed)

    def _scan_to(self, p: int, *, count_rows: bool = True) -> None:
        """Scan the ``p`` nearest clusters not scanned yet; ``count_rows``: their rows count
        towards ``_rows`` (the rows an uncorrelated mask is compared with)."""
        vi = self.vi
        if p <= self._n_probed:
            return
        if self._cdist is None:
            self._cdist = vi._centroid_dist(self.q, self.metric)
        if p > self._order.shape[0]:
            cd = self._cdist
            part = np.argpartition(cd, p - 1)[:p] if p < cd.shape[0] else np.arange(cd.shape[0])
            self._order = part[np.argsort(cd[part], kind="stable")]
        nearest = self._order[:p]
        new = nearest[~self._probed[nearest]]
        self._probed[new] = True
        self._n_probed = int(p)
        if new.shape[0] == 0:
            return
        if count_rows:
            self._rows += int(vi.sizes[new].sum())
        if self.cand is not None:
            if self._bitmap is None:
                self._bitmap = np.packbits(self.cand, bitorder="little")
            starts = vi.list_ptr[new]
            idx = gather_runs(starts, vi.list_ptr[new + 1] - starts)
            step = max(1, idx.shape[0] // SEEN_SAMPLE)  # an evenly spaced sample estimates the count
            self._seen += int(np.count_nonzero(self.cand[vi.cord[idx[::step]]])) * step
        self._sel.append(vi._probe(self.q, self.metric, self.k, self.cand, new, self._bitmap))

    def _best(self) -> np.ndarray:
        if not self._sel:
            return np.empty(0, np.int64)
        if len(self._sel) == 1:
            return self._sel[0]
        idx = np.unique(np.concatenate(self._sel))
        return self.vi._best(self.q, self.metric, self.k, idx)
