"""``SparseIndex``: dimension -> (rows, weights) postings over every row of a part.

Postings of dimension ``dims[i]`` are ``rows[offsets[i]:offsets[i+1]]`` (ascending) with the
weights at the same places; they are cut into blocks of ``BLOCK`` postings, and ``block_max``
holds each block's largest weight (blocks of dimension i: ``block_offsets[i]:block_offsets[i+1]``).

``search`` computes the dot product of a query (dimensions, weights) with every row that shares
a dimension with it, touching only the postings of the query's dimensions. With ``k`` and
non-negative weights on both sides it prunes like MaxScore: a lower bound ``theta`` of the k-th
best score is the k-th largest single-term contribution of the term with the largest upper bound;
the terms whose upper bounds (query weight × largest block maximum) add up to less than ``theta``
cannot make a row reach the top k on their own, so only rows of the other terms are candidates,
and those whose partial score plus the remaining bounds stays below ``theta`` are dropped before
the remaining terms are looked up (binary search in their postings). The result is then a
superset of the k best rows, each with its exact score (the contract of ``DocSource.bm25``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pyarrow as pa

from lagoon.errors import DataCorruption
from lagoon.format.segment import gather_runs

BLOCK = 128
MAXSCORE_MIN_POSTINGS = 1 << 19
"""Below this many postings over the query's dimensions, scoring them all (a few vectorised numpy
passes) is as fast or faster than MaxScore's bookkeeping: on 1M rows (40 dimensions of ~170k
postings each; ``bench/sparse_bench.py --wide-lists``, docs/benchmarks.md) MaxScore took 0.96-1.26x
the time of scoring everything at ~340k postings, 0.53-1.11x at 0.86M-1.7M and 0.59-0.63x at 3.4M."""


def _ro(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class SparseIndex:
    n_rows: int
    dims: np.ndarray  # uint32[d], strictly ascending
    offsets: np.ndarray  # int64[d + 1], offsets[0] = 0, offsets[d] = P
    rows: np.ndarray  # uint32[P], ascending within each dimension
    weights: np.ndarray  # float16[P]
    block_offsets: np.ndarray  # int64[d + 1]
    block_max: np.ndarray  # float32[B]

    @property
    def n_postings(self) -> int:
        return int(self.rows.shape[0])

    @cached_property
    def nonnegative(self) -> bool:
        """Every stored weight is >= 0 (MaxScore's bounds need it); computed once."""
        return bool(self.weights.size == 0 or float(self.weights.min()) >= 0.0)

    def check(self, what: str) -> None:
        """``DataCorruption`` unless the arrays form a valid index (decoders call it)."""
        d, p = self.dims.shape[0], self.rows.shape[0]
        ok = (
            self.offsets.shape == (d + 1,)
            and self.block_offsets.shape == (d + 1,)
            and self.weights.shape == (p,)
            and (d == 0 or bool(np.all(self.dims[1:] > self.dims[:-1])))
            and int(self.offsets[0]) == 0
            and int(self.offsets[-1]) == p
            and bool(np.all(np.diff(self.offsets) > 0))
            and int(self.block_offsets[0]) == 0
            and int(self.block_offsets[-1]) == self.block_max.shape[0]
        )
        if not ok:
            raise DataCorruption(f"{what}: malformed sparse index directory")
        lengths = np.diff(self.offsets)
        if not np.array_equal(np.diff(self.block_offsets), (lengths + BLOCK - 1) // BLOCK):
            raise DataCorruption(f"{what}: block directory does not match the postings")
        if p and int(self.rows.max()) >= self.n_rows:
            raise DataCorruption(f"{what}: a posting names a row beyond the segment")
        if p > 1:
            starts = np.zeros(p, dtype=bool)
            starts[self.offsets[:-1]] = True
            if not np.all((self.rows[1:] > self.rows[:-1]) | starts[1:]):
                raise DataCorruption(f"{what}: postings are not ascending by row")
        if not np.all(np.isfinite(self.weights)):
            raise DataCorruption(f"{what}: a weight is not finite")
        if not np.array_equal(self.block_max, _block_max(self.weights, self.offsets, self.block_offsets)):
            raise DataCorruption(f"{what}: block maxima do not match the weights")

    def term_bounds(self, slots: np.ndarray) -> np.ndarray:
        """float64: the largest weight of each dimension slot (the maximum of its block maxima)."""
        out = np.empty(slots.shape[0], dtype=np.float64)
        for j, s in enumerate(slots.tolist()):
            out[j] = float(self.block_max[self.block_offsets[s] : self.block_offsets[s + 1]].max())
        return out

    def search(
        self,
        qdims: np.ndarray,
        qweights: np.ndarray,
        row_mask: np.ndarray | None = None,
        k: int | None = None,
        *,
        maxscore_min_postings: int = MAXSCORE_MIN_POSTINGS,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(rows ascending, float64 dot products) of the rows sharing a dimension with the query
        (among ``row_mask``); with ``k``, a superset of the k best of them (module docstring),
        pruned with MaxScore when the query's dimensions hold ``maxscore_min_postings`` or more."""
        empty = np.zeros(0, np.int64), np.zeros(0, np.float64)
        if self.dims.size == 0 or qdims.size == 0:
            return empty
        slot = np.searchsorted(self.dims, qdims)
        slot_c = np.minimum(slot, self.dims.size - 1)
        hit = (slot < self.dims.size) & (self.dims[slot_c] == qdims)
        slots, qw = slot_c[hit].astype(np.int64), np.asarray(qweights, np.float64)[hit]
        if slots.size == 0:
            return empty
        total = int((self.offsets[slots + 1] - self.offsets[slots]).sum())
        prune = k is not None and k > 0 and slots.size > 1 and total >= maxscore_min_postings
        if prune and bool(np.all(qw > 0)) and self.nonnegative:
            return self._maxscore(slots, qw, row_mask, int(k or 0))
        return self._exact(slots, qw, row_mask)

    def _postings(
        self, slots: np.ndarray, qw: np.ndarray, row_mask: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        starts, ends = self.offsets[slots], self.offsets[slots + 1]
        idx = gather_runs(starts, ends - starts)
        rows = self.rows[idx].astype(np.int64)
        contrib = self.weights[idx].astype(np.float64) * np.repeat(qw, ends - starts)
        if row_mask is not None:
            keep = row_mask[rows]
            rows, contrib = rows[keep], contrib[keep]
        return rows, contrib

    def _exact(
        self, slots: np.ndarray, qw: np.ndarray, row_mask: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        rows, contrib = self._postings(slots, qw, row_mask)
        uniq, inverse = np.unique(rows, return_inverse=True)
        return uniq, np.bincount(inverse, weights=contrib, minlength=uniq.shape[0])

    def _maxscore(
        self, slots: np.ndarray, qw: np.ndarray, row_mask: np.ndarray | None, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        bounds = qw * self.term_bounds(slots)
        order = np.argsort(bounds, kind="stable")  # ascending upper bound
        slots, qw, bounds = slots[order], qw[order], bounds[order]
        _, top_contrib = self._postings(slots[-1:], qw[-1:], row_mask)
        if top_contrib.size < k:
            return self._exact(slots, qw, row_mask)
        theta = float(np.partition(top_contrib, top_contrib.size - k)[top_contrib.size - k])
        n_lookup = int(np.searchsorted(np.cumsum(bounds), theta, side="left"))  # sum < theta
        n_lookup = min(n_lookup, slots.size - 1)
        if n_lookup == 0:
            return self._exact(slots, qw, row_mask)
        cand, partial = self._exact(slots[n_lookup:], qw[n_lookup:], row_mask)
        rest = float(bounds[:n_lookup].sum())
        keep = partial + rest >= theta
        cand, scores = cand[keep], partial[keep]
        for j in range(n_lookup - 1, -1, -1):  # largest remaining bound first
            s = int(slots[j])
            lo, hi = int(self.offsets[s]), int(self.offsets[s + 1])
            postings = self.rows[lo:hi]
            at = np.searchsorted(postings, cand)
            at_c = np.minimum(at, postings.shape[0] - 1)
            found = (at < postings.shape[0]) & (postings[at_c] == cand)
            scores[found] += self.weights[lo + at_c[found]].astype(np.float64) * qw[j]
        return cand, scores


def _block_max(weights: np.ndarray, offsets: np.ndarray, block_offsets: np.ndarray) -> np.ndarray:
    """float32[B]: the largest weight of each block of ``BLOCK`` postings of every dimension."""
    n_blocks = int(block_offsets[-1])
    if n_blocks == 0:
        return np.zeros(0, np.float32)
    per_dim = np.diff(block_offsets)
    # block b of dimension i starts at offsets[i] + BLOCK * (b - block_offsets[i])
    local = np.arange(n_blocks, dtype=np.int64) - np.repeat(block_offsets[:-1], per_dim)
    starts = np.repeat(offsets[:-1], per_dim) + BLOCK * local
    return np.maximum.reduceat(weights.astype(np.float32), starts).astype(np.float32)


def build_sparse_index(column: pa.ChunkedArray | pa.Array, n_rows: int) -> SparseIndex:
    """The index of a ``map<uint32, float16>`` column of ``n_rows`` rows (nulls have no postings)."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(arr) != n_rows:
        raise DataCorruption(f"sparse column has {len(arr)} rows, expected {n_rows}")
    if len(arr) == 0 or pa.types.is_null(arr.type):
        return _empty(n_rows)
    offs = np.asarray(arr.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
    lengths = np.diff(offs)
    if arr.null_count:
        valid = np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        lengths = np.where(valid, lengths, 0)
    idx = gather_runs(offs[:-1], lengths)
    keys = np.asarray(arr.keys.to_numpy(zero_copy_only=False), dtype=np.uint32)[idx]
    weights = np.asarray(arr.items.to_numpy(zero_copy_only=False), dtype=np.float16)[idx]
    rows = np.repeat(np.arange(n_rows, dtype=np.uint32), lengths)
    order = np.argsort(keys, kind="stable")  # rows stay ascending within a dimension
    keys, weights, rows = keys[order], weights[order], rows[order]
    if keys.size == 0:
        return _empty(n_rows)
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    dims = keys[starts]
    offsets = np.r_[starts, keys.size].astype(np.int64)
    per_dim = (np.diff(offsets) + BLOCK - 1) // BLOCK
    block_offsets = np.r_[0, np.cumsum(per_dim)].astype(np.int64)
    block_max = _block_max(weights, offsets, block_offsets)
    return SparseIndex(
        n_rows, _ro(dims), _ro(offsets), _ro(rows), _ro(weights), _ro(block_offsets), _ro(block_max)
    )


def _empty(n_rows: int) -> SparseIndex:
    z64 = _ro(np.zeros(1, np.int64))
    return SparseIndex(
        n_rows,
        _ro(np.zeros(0, np.uint32)),
        z64,
        _ro(np.zeros(0, np.uint32)),
        _ro(np.zeros(0, np.float16)),
        z64,
        _ro(np.zeros(0, np.float32)),
    )


__all__ = ["BLOCK", "SparseIndex", "build_sparse_index"]
