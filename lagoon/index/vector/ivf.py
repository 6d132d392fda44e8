"""The IVF vector index of one segment attribute, opened from its ``vec.<attr>`` file (codec:
lagoon/format/vec.py; built by lagoon/index/vector/build.py), and its search.

Search. Queries are planned across all the parts of a snapshot (lagoon/index/vector/plan.py,
docs/vector-search.md): the planner decides, from the recall table, how many clusters each
segment's ``ProbeSearch`` (lagoon/index/vector/probe.py) scans. A probe ranks the candidates of
the probed clusters exactly (f32 distances, then float64 distances for the k returned rows; ties
by row = by id) after an 8-bit first pass (lagoon/index/vector/quantized.py) that keeps the best
``max(RERANK_FACTOR·k, RERANK_MIN)``. ``exact`` is the brute-force scan (same arithmetic as
``lagoon.index.sources.table.LiveDocs.vector_topk``).

Invariants: in memory the vectors are kept once as float32 in cluster order (``cvec``), plus their
8-bit codes, with ``cord`` (their row ordinals) and ``row_to_c`` (row -> index in ``cvec`` or -1).
A cluster's slices are written once, under the index lock, before the cluster is marked loaded;
queries read only loaded clusters, so one index serves concurrent queries while a lazily opened
one fills in. No per-row Python loops: a probe gathers the candidate indices of the probed
clusters (vectorised), drops masked-out rows, and computes their inner products with the query in
one faiss kernel call (``fvec_inner_products_by_idx``, AVX2, no copy of the rows), run with one
OpenMP thread on the calling thread (single queries are slower with more). Pure: no I/O.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from lagoon.errors import DataCorruption, InternalError
from lagoon.format import vec as vecfile
from lagoon.format.segment import SectionFile, gather_runs
from lagoon.index.bits import Bits, as_bits
from lagoon.index.vector import plan as _plan
from lagoon.index.vector.kernels import exact_dist, inner_products, topk_smallest
from lagoon.index.vector.plan import DEFAULT_RECALL_TARGET, RecallCurve
from lagoon.index.vector.probe import GATHER_FRACTION, ProbeSearch
from lagoon.index.vector.quantized import QUANTIZED_FIRST_PASS, CodePass, first_pass_width

WHOLE_FILE_FRACTION = 0.5  # a lazy index needing more of its block bytes than this fetches the file
SCAN_CODES_ABOVE = 4  # ANN scans of more candidates than this x the first pass's width use the codes
_ENCODE_CHUNK = 65_536  # vectors encoded to 8-bit codes per call when a whole index loads


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
        head = vecfile.read_head(sf, n_rows, lazy=blocks is not None)
        self._head = head
        self.what = head.what
        self.attr, self.dims, self.dtype, self.metric = head.attr, head.dims, head.dtype, head.metric
        self.n_vectors, self.n_clusters = head.n_vectors, head.n_clusters
        try:
            probe = head.nprobe
            self.probe_k = np.array(probe["k"], dtype=np.float64)
            self.probe_n = np.array(probe["nprobe"], dtype=np.float64)
            self.default_nprobe = int(probe["default"])
            self.curve = RecallCurve.from_meta(probe, head.n_clusters)
        except (KeyError, TypeError, ValueError) as e:
            raise DataCorruption(f"{self.what}: malformed meta ({e!r})") from None
        if self.probe_k.shape != self.probe_n.shape or self.probe_k.size == 0:
            raise DataCorruption(f"{self.what}: malformed nprobe table")
        k, m = self.n_clusters, self.n_vectors
        self.centroids = head.centroids
        self.list_ptr = np.zeros(k + 1, np.int64)
        np.cumsum(head.counts, out=self.list_ptr[1:])
        self.sizes = head.counts
        self._lengths = head.lengths
        self._blocks_len = head.blocks_len
        self._source = blocks
        self._lock = threading.Lock()
        self._loaded = np.zeros(k, bool)
        self._complete = k == 0
        self.cvec = np.zeros((m, self.dims), np.float32)
        self.aux = np.zeros(m, np.float32)
        self._init_row_map(head.cord, n_rows)
        if self.metric == "cosine_distance":
            self.centroid_sq = np.zeros(k, np.float32)
        else:
            self.centroid_sq = np.einsum("ij,ij->i", self.centroids, self.centroids, dtype=np.float32)
        self._codes: CodePass | None = None  # the 8-bit first pass over the loaded clusters
        self._sq_range = head.sq_range
        if blocks is None:
            self._fill_region(sf.region(head.blocks_at, head.blocks_len), verify_blocks=False)

    def _init_row_map(self, cord: np.ndarray, n_rows: int) -> None:
        """``cord`` (row of each vector, cluster order), ``row_to_c`` (its inverse, -1: no
        vector), ``row_cluster`` (cluster of each row; ``n_clusters``: no vector), ``valid``."""
        k, m = self.n_clusters, self.n_vectors
        row_to_c = np.full(n_rows, -1, np.int64)
        row_to_c[cord] = np.arange(m, dtype=np.int64)
        if m and int(np.count_nonzero(row_to_c >= 0)) != m:
            raise DataCorruption(f"{self.what}: a row has two vectors")
        self.row_cluster = np.full(n_rows, k, np.intp)
        self.row_cluster[cord] = np.repeat(np.arange(k, dtype=np.intp), self.sizes)
        self.row_cluster.setflags(write=False)
        self.cord = cord
        # The kernels' copy of ``cord``: int32 while rows fit (half the bytes a filtered probe
        # reads per row to find its candidates: 0.40 against 0.44 ms for the 90k rows of a
        # 10 % filter's 362 clusters at 1M vectors).
        self.kernel_cord = cord.astype(np.int32) if n_rows <= np.iinfo(np.int32).max else cord
        self.row_to_c = row_to_c
        self.valid = row_to_c >= 0
        self.all_valid = m == n_rows
        # ``valid`` packed, for candidate sets to be ANDed with (None: every row has a vector)
        self.valid_bits = None if self.all_valid else Bits.from_rows(cord, n_rows)
        for a in (self.cord, self.kernel_cord, self.row_to_c, self.valid, self.list_ptr, self.sizes):
            a.setflags(write=False)

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
                region = np.frombuffer(data, np.uint8, count=self._blocks_len, offset=self._head.blocks_abs)
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
                region = np.frombuffer(data, np.uint8, count=self._blocks_len, offset=self._head.blocks_abs)
                self._fill_region(region, verify_blocks=False)
                return
            starts = self._head.blocks_abs + self._head.offsets[need]
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
        """Load every cluster not loaded yet from the blocks ``region``; they are marked loaded
        only once their vectors *and* codes are in place (a query running meanwhile in another
        thread skips or fetches what is not marked, never scans a half-filled cluster)."""
        todo = np.flatnonzero(~self._loaded)
        for c in todo.tolist():
            o, n = int(self._head.offsets[c]), int(self._lengths[c])
            self._fill_block(c, region[o : o + n], verify=verify_blocks, quantize=False, mark=False)
        self._quantize(todo)
        self._loaded[todo] = True
        self._complete = True

    def _quantize(self, clusters: np.ndarray) -> None:
        """Add the (loaded) vectors of ``clusters`` to the 8-bit first pass, creating it on first
        use; files without stored value ranges take them from the vectors (all loaded)."""
        if self.n_clusters <= 1 or self.n_vectors == 0 or not QUANTIZED_FIRST_PASS or clusters.shape[0] == 0:
            return
        if self._codes is None:
            if self._sq_range is None:  # an older file: ranges from every vector, loaded eagerly
                x = self._space(0, self.n_vectors)
                self._sq_range = (x.min(axis=0), x.max(axis=0))
            vmin, vmax = self._sq_range
            self._codes = CodePass(self.n_vectors, self.dims, self.metric, vmin, vmax)
        if clusters.shape[0] == self.n_clusters:  # every cluster: in chunks of contiguous rows
            for lo in range(0, self.n_vectors, _ENCODE_CHUNK):
                hi = min(self.n_vectors, lo + _ENCODE_CHUNK)
                self._codes.add(lo, self._space(lo, hi))
            return
        for c in clusters.tolist():
            lo, hi = int(self.list_ptr[c]), int(self.list_ptr[c + 1])
            if hi > lo:
                self._codes.add(lo, self._space(lo, hi))

    def _space(self, lo: int, hi: int) -> np.ndarray:
        return self._space_of(np.arange(lo, hi))

    def _space_of(self, idx: np.ndarray) -> np.ndarray:
        """float32 vectors ``cvec[idx]`` in the clustering space (unit length for cosine)."""
        x: np.ndarray = self.cvec[idx]
        if self.metric == "cosine_distance":
            x = x * self.aux[idx][:, None]
        return x

    def _fill_block(
        self, c: int, block: np.ndarray, *, verify: bool, quantize: bool = True, mark: bool = True
    ) -> None:
        """Copy block ``c`` into ``cvec`` (and its norms into ``aux``); checks its ordinals against
        ``cord`` and, when ``verify``, its CRC-32C against the table of contents. ``quantize``:
        encode its codes; ``mark``: then mark it loaded (the caller does both otherwise)."""
        lo, hi = int(self.list_ptr[c]), int(self.list_ptr[c + 1])
        vec = vecfile.block_vectors(self._head, c, block, self.cord[lo:hi], verify=verify)
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
        if mark:
            self._loaded[c] = True

    # ------------------------------------------------------------------------------------- rows

    @property
    def nbytes(self) -> int:
        codes = 0 if self._codes is None else int(self._codes.codes.nbytes)
        cords = self.cord.nbytes + (self.kernel_cord.nbytes if self.kernel_cord is not self.cord else 0)
        return int(self.cvec.nbytes + codes + cords + self.row_to_c.nbytes + self.centroids.nbytes)

    def rows_matrix(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(float32 (len(rows), dims) with zeros where a row has no vector, bool valid)."""
        idx = self.row_to_c[rows]
        valid = idx >= 0
        self._ensure(self.row_cluster[rows])
        out = np.zeros((rows.shape[0], self.dims), np.float32)
        out[valid] = self.cvec[idx[valid]]
        return out, valid

    # ------------------------------------------------------------------------------------- search

    def candidates(self, cand: np.ndarray | Bits) -> np.ndarray:
        """Indices into ``cvec`` of the rows ``cand`` (bool over rows, or Bits) keeps that have a
        vector, in row order. O(rows) to scan a mask (O(rows / 64) for Bits), then O(kept)."""
        cidx = self.row_to_c[cand.rows() if isinstance(cand, Bits) else np.flatnonzero(cand)]
        out: np.ndarray = cidx[cidx >= 0]
        return out

    def exact(
        self,
        query: np.ndarray,
        metric: str,
        k: int,
        cand: np.ndarray | Bits | None,
        *,
        cidx: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` rows among ``cand`` (bool over rows or Bits; None = all rows with a vector):
        (rows int64, float64 distances), ascending, ties by row. ``cidx`` = ``candidates(cand)``
        when the caller has it."""
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
        m = self.n_vectors
        if cand is not None and cidx is None:
            cidx = self.candidates(cand)
        n_cand = m if cidx is None else int(cidx.shape[0])
        if n_cand == 0 or k <= 0:
            return np.empty(0, np.int64), np.empty(0, np.float64)
        if not self._complete:
            self._ensure(None if cidx is None else self.row_cluster[self.cord[cidx]])
        if cidx is not None and n_cand < GATHER_FRACTION * m:
            idx = np.sort(cidx)  # memory order: the rows are read front to back
            dist = self._dist(q, metric, idx)
            top = topk_smallest(dist, self.cord[idx], min(k, n_cand))
            return self.finish(idx[top], q, metric)
        dist = self._dist(q, metric, None)
        if cidx is not None:
            keep = np.zeros(m, dtype=bool)
            keep[cidx] = True
            dist[~keep] = np.inf
        top = topk_smallest(dist, self.cord, min(k, n_cand))
        return self.finish(top, q, metric)

    def scan(
        self,
        query: np.ndarray,
        metric: str,
        k: int,
        cand: np.ndarray | Bits | None,
        *,
        cand_rows: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ANN side of an exact scan: a candidate set of at most ``GATHER_FRACTION`` of the
        vectors and several times the first pass's width is scanned by its 8-bit codes, the best
        ``first_pass_width(k)`` ranked exactly (a quarter of the bytes; a true neighbour is lost
        only when its code ranks it below that cut). Anything else: ``exact``. ``cand_rows``:
        the rows ``cand`` keeps, ascending, when the caller has them (no pass over the mask)."""
        width = first_pass_width(k)
        if self._codes is None or metric != self.metric or cand is None:
            return self.exact(query, metric, k, cand)
        if cand_rows is None:
            cidx = self.candidates(cand)
        else:
            cidx = self.row_to_c[cand_rows]
            cidx = cidx[cidx >= 0]
        n_cand = int(cidx.shape[0])
        if n_cand >= GATHER_FRACTION * self.n_vectors or n_cand <= SCAN_CODES_ABOVE * width:
            return self.exact(query, metric, k, cand, cidx=cidx)
        if not self._complete:
            self._ensure(self.row_cluster[self.cord[cidx]])
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
        best = self._codes.search_of(self._query_vector(q, metric), np.sort(cidx), width)
        return self.finish(self.best_of(q, metric, k, np.sort(best)), q, metric)

    def search(
        self,
        query: np.ndarray,
        metric: str,
        k: int,
        cand: np.ndarray | Bits | None,
        *,
        nprobe: int | None = None,
        recall_target: float = DEFAULT_RECALL_TARGET,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top-``k`` rows among ``cand`` (bool over rows or Bits, None = all) at
        ``recall_target`` as the only part of a query (lagoon/index/vector/plan.py);
        ``nprobe`` forces a fixed number of probed clusters (no planning, no exact fallback)."""
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
        if k <= 0 or self.n_vectors == 0:
            return np.empty(0, np.int64), np.empty(0, np.float64)
        if nprobe is not None and metric == self.metric and self.n_clusters > 1:
            cdist = self.centroid_dist(q, metric)
            probe = self._nearest(cdist, max(1, min(int(nprobe), self.n_clusters)))
            bits = None if cand is None else as_bits(cand)
            return self.finish(self.probe_clusters(q, metric, k, bits, probe), q, metric)
        part = self.start(q, metric, k, cand)
        results, _ = _plan.plan_and_search(
            [part], k, recall_target, lambda r: np.zeros(r[0][0].shape[0], np.int64)
        )
        return results[0]

    def start(self, query: np.ndarray, metric: str, k: int, cand: np.ndarray | Bits | None) -> ProbeSearch:
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

    def centroid_dist(self, q: np.ndarray, metric: str) -> np.ndarray:
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

    def probe_clusters(
        self,
        q: np.ndarray,
        metric: str,
        k: int,
        cand: Bits | None,
        probe: np.ndarray,
        *,
        dense: bool = False,
        seen: np.ndarray | None = None,
    ) -> np.ndarray:
        """Cluster-order indices of the best ``k`` candidates (set in ``cand``) of the clusters
        ``probe``, best first (f32 distances, ties by row). ``seen`` (int64[3]): unless ``dense``,
        the candidates in the probed clusters are added to ``seen[0]``; when ``dense``, the
        candidate bits tested to ``seen[1]`` and those set to ``seen[2]`` (``CodePass.search``)."""
        probe = np.sort(probe)  # ascending cluster = ascending memory: sequential reads
        self._ensure(probe)
        if self._codes is not None and metric == self.metric:
            width = first_pass_width(k)
            if int(self.sizes[probe].sum()) > width:
                return self._probe_quantized(q, metric, k, cand, probe, width, dense=dense, seen=seen)
        starts = self.list_ptr[probe]
        idx = gather_runs(starts, self.list_ptr[probe + 1] - starts)
        if cand is not None:
            tested = idx.shape[0]
            idx = idx[cand.test(self.cord[idx])]
            if seen is not None:
                if dense:  # every bit tested: the share is exact
                    seen[1] += tested
                    seen[2] += idx.shape[0]
                else:
                    seen[0] += idx.shape[0]
        return self.best_of(q, metric, k, idx)

    def _probe_quantized(
        self,
        q: np.ndarray,
        metric: str,
        k: int,
        cand: Bits | None,
        probe: np.ndarray,
        width: int,
        *,
        dense: bool = False,
        seen: np.ndarray | None = None,
    ) -> np.ndarray:
        """``probe_clusters`` with the 8-bit first pass (lagoon/index/vector/quantized.py) keeping
        the best ``width`` candidates (set in ``cand``), which are then ranked exactly."""
        assert self._codes is not None
        starts = self.list_ptr[probe]
        idx = self._codes.search(
            self._query_vector(q, metric),
            starts,
            self.list_ptr[probe + 1],
            width,
            self.kernel_cord,
            None if cand is None else cand.data,
            dense=dense,
            seen=seen,
        )
        return self.best_of(q, metric, k, np.sort(idx))

    def best_of(self, q: np.ndarray, metric: str, k: int, idx: np.ndarray) -> np.ndarray:
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

    def finish(self, sel: np.ndarray, q: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
        rows = self.cord[sel]
        exact = exact_dist(self.cvec[sel], q, metric)
        order = np.lexsort((rows, exact))
        return rows[order], exact[order]


__all__ = ["WHOLE_FILE_FRACTION", "BlockSource", "ProbeSearch", "VectorIndex"]
