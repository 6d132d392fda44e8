"""``ProbeSearch``: one query's probes of one IVF index, extended as the planner asks
(lagoon/index/vector/plan.py).

The planner decides how many clusters a segment's search scans; this class scans them (nearest
centroids first, an 8-bit first pass and exact ranking inside ``VectorIndex.probe_clusters``),
follows a candidate mask correlated with the vectors, widens while it finds fewer than k, and
falls back to the exact scan when the candidates are few or the probe reaches half the clusters.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

from lagoon.index.bits import Bits, as_bits
from lagoon.index.vector import plan as _plan
from lagoon.index.vector.plan import RecallCurve
from lagoon.index.vector.quantized import DENSE_MASK, sampled_count

EXACT_BELOW_ROWS = 2000  # masks keeping fewer rows than max(this, fraction · vectors) go exact
EXACT_BELOW_FRACTION = 0.02
EXACT_ABOVE_PROBE_FRACTION = 0.5  # probing at least this share of clusters: scan exactly instead
CANDIDATE_MARGIN = 2.0  # expected masked candidates in the probed clusters >= margin · k
SEEN_SAMPLE = 512  # a dense mask's candidates in newly scanned clusters: counted on this many rows
SEEN_MIN_TESTS = 256  # ... unless the scan tested at least this many bits (their share is used)
ANTI_CORRELATED = 0.7  # probed clusters holding < this x the mask's share of candidates: follow the mask
GATHER_FRACTION = 0.3  # an exact scan of fewer candidates than this share gathers them (else: all)


class ProbedIndex(Protocol):
    """What a probe needs of its index (``lagoon.index.vector.ivf.VectorIndex``)."""

    n_vectors: int
    n_clusters: int
    dims: int
    metric: str
    all_valid: bool
    valid: np.ndarray
    valid_bits: Bits | None
    curve: RecallCurve
    sizes: np.ndarray
    list_ptr: np.ndarray
    cord: np.ndarray
    kernel_cord: np.ndarray

    def exact(
        self, query: np.ndarray, metric: str, k: int, cand: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def scan(
        self,
        query: np.ndarray,
        metric: str,
        k: int,
        cand: Bits | None,
        *,
        cand_rows: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def centroid_dist(self, q: np.ndarray, metric: str) -> np.ndarray: ...

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
    ) -> np.ndarray: ...

    def best_of(self, q: np.ndarray, metric: str, k: int, idx: np.ndarray) -> np.ndarray: ...

    def finish(self, sel: np.ndarray, q: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]: ...


class ProbeSearch:
    """One query's probes of one index, extended as the planner asks (lagoon/index/vector/plan.py).

    ``probe(p)`` scans the ``p`` nearest clusters not scanned yet (8-bit first pass, exact ranking
    of the best candidates) and returns the best ``k`` of everything scanned so far. With a mask it
    keeps probing, in centroid order, until the scanned clusters hold at least the candidates ``p``
    clusters hold on average (a mask correlated with the vectors — a filter on a few clusters far
    from the query — is followed to where its rows are), and widens (x2) while fewer than ``k``
    were found; past ``EXACT_ABOVE_PROBE_FRACTION`` of the clusters it scans the candidates
    exactly. The candidates come as packed bits with their count (lagoon/index/bits.py: a
    filter's result as Arrow evaluated it; a bool mask is packed once); only the bits of the
    scanned clusters' rows are tested, and an exact scan lists its candidates from the bitmap."""

    def __init__(
        self, vi: ProbedIndex, q: np.ndarray, metric: str, k: int, cand: np.ndarray | Bits | None
    ) -> None:
        m = vi.n_vectors
        bits = None if cand is None else as_bits(cand)
        if bits is not None and vi.valid_bits is not None:
            bits = bits & vi.valid_bits
        self.n_cand = m if bits is None else bits.count
        self.vi, self.q, self.metric, self.k, self.cand = vi, q, metric, k, bits
        self.sigma = self.n_cand / m if m else 0.0
        ivf = metric == vi.metric and vi.n_clusters > 1
        small = cand is not None and self.n_cand <= max(EXACT_BELOW_ROWS, EXACT_BELOW_FRACTION * m)
        self.curve = vi.curve if ivf and not small else None
        self._cdist: np.ndarray | None = None
        self._order = np.empty(0, np.int64)
        self._probed = np.zeros(vi.n_clusters, bool) if ivf else np.zeros(0, bool)
        self._n_probed = 0
        self._seen = 0  # candidates in the scanned clusters
        self._near = False  # a sparse mask found correlated: count candidates near the query
        self._rows = 0  # rows of the clusters the plan asked for (not of the extensions)
        self._sel: list[np.ndarray] = []
        self._exact: tuple[np.ndarray, np.ndarray] | None = None

    def exact_cost(self) -> float:
        vi = self.vi
        n = self.n_cand if self.n_cand < GATHER_FRACTION * vi.n_vectors else vi.n_vectors
        return _plan.exact_cost(n)

    def ivf_cost(self, nprobe: int) -> float:
        vi = self.vi
        return _plan.ivf_cost(vi.n_clusters, vi.n_vectors / max(1, vi.n_clusters), nprobe, vi.dims)

    def exact(self) -> tuple[np.ndarray, np.ndarray]:
        if self._exact is None:
            rows = None if self.cand is None else self.cand.rows()
            self._exact = self.vi.scan(self.q, self.metric, self.k, self.cand, cand_rows=rows)
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
                # A sparse mask's exact count holds the candidates of whole clusters, and those
                # around a plane lie on its far side: the clusters added from here are scanned as
                # a dense mask's (codes near the query counted), or the following stops short
                # (half-space masks of 25-30 %: recall 0.86 at 400 of 894 clusters).
                if not self._near and self.sigma <= DENSE_MASK:
                    self._near = True
                    self._seen = 0  # recount what was scanned: its candidates near the query
                    self._scan(np.flatnonzero(self._probed))
                while self._seen < need and self._n_probed < EXACT_ABOVE_PROBE_FRACTION * ncl:
                    per = max(self.n_cand / ncl, 1e-9)  # the next clusters, at the average rate
                    step = max(1, math.ceil((need - self._seen) / per), self._n_probed // 4)
                    self._scan_to(min(ncl, self._n_probed + step), count_rows=False)
                if self._seen < need:
                    return self.exact()
            best = self._best()
            if best.shape[0] >= want or self._n_probed >= ncl:
                return vi.finish(best, self.q, self.metric)
            p = min(ncl, 2 * self._n_probed)

    def _scan_to(self, p: int, *, count_rows: bool = True) -> None:
        """Scan the ``p`` nearest clusters not scanned yet; ``count_rows``: their rows count
        towards ``_rows`` (the rows an uncorrelated mask is compared with)."""
        vi = self.vi
        if p <= self._n_probed:
            return
        if self._cdist is None:
            self._cdist = vi.centroid_dist(self.q, self.metric)
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
        self._scan(new)

    def _scan(self, new: np.ndarray) -> None:
        vi = self.vi
        dense = self.sigma > DENSE_MASK or self._near
        counted = np.zeros(3, np.int64)  # sparse: candidates; dense: bits tested, bits set
        self._sel.append(
            vi.probe_clusters(self.q, self.metric, self.k, self.cand, new, dense=dense, seen=counted)
        )
        if not dense or self.cand is None:
            self._seen += int(counted[0])
            return
        # A dense mask's candidates in the new clusters: the kernel tested the bits of the codes
        # that would enter the heap, and their share stands for the clusters' (the heap's first
        # entries are the runs' first codes, the later ones the codes nearest the query: a mask
        # whose rows lie away from the query shows it as a low share, as it should). At 50 % and
        # 218 clusters of 1M vectors that is ~1,000 tests for free, where counting 512 sampled
        # rows read their scattered ordinals and bits (50-80 µs). Too few tests (clusters added
        # to a full heap): the sample.
        tests, hits = int(counted[1]), int(counted[2])
        if tests >= SEEN_MIN_TESTS:
            self._seen += round(int(vi.sizes[new].sum()) * hits / tests)
        else:
            starts, ends = vi.list_ptr[new], vi.list_ptr[new + 1]
            self._seen += sampled_count(starts, ends, vi.kernel_cord, self.cand.data, SEEN_SAMPLE)

    def _best(self) -> np.ndarray:
        if not self._sel:
            return np.empty(0, np.int64)
        if len(self._sel) == 1:
            return self._sel[0]
        idx = np.unique(np.concatenate(self._sel))
        return self.vi.best_of(self.q, self.metric, self.k, idx)


__all__ = ["ProbeSearch", "ProbedIndex"]
