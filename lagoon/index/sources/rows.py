"""The live-row restriction, written once: a part's rows that are live in one snapshot.

A part (a segment, a run of WAL entries) holds one row per id it saw, built and cached once for all
snapshots; a snapshot keeps the rows that are not tombstones and not shadowed by a newer part.
``LiveRows`` maps between the part's rows and the snapshot's positions (position p is row
``rows[p]``; rows ascend, so positions keep row order), and ``bm25_on_rows`` is the one BM25 entry
point over a row-level ``TextIndex`` restricted to them. When every row is live, every mapping is
the identity and costs nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

import numpy as np

from lagoon.errors import InternalError
from lagoon.index.bits import Bits
from lagoon.index.sparse import SparseIndex
from lagoon.index.text.bm25 import TermStats
from lagoon.index.text.textindex import TextIndex


def read_only(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


class LiveRows:
    """The live rows of a part of ``num_rows`` rows (``live``: bool per row)."""

    def __init__(self, live: np.ndarray) -> None:
        live = np.asarray(live)
        if live.dtype != np.bool_ or live.ndim != 1:
            raise InternalError(f"live rows must be a bool vector, got {live.dtype}{live.shape}")
        self.num_rows = int(live.shape[0])
        self.live = read_only(live.copy())
        self.rows = read_only(np.flatnonzero(live).astype(np.int64))
        self.n = int(self.rows.shape[0])
        self.all_live = self.n == self.num_rows

    @property
    def live_mask(self) -> np.ndarray | None:
        """The live rows as a row mask, or None when every row is live."""
        return None if self.all_live else self.live

    @cached_property
    def _rowmap(self) -> np.ndarray:
        """int64[num_rows]: position of each row, -1 for rows that are not live."""
        m = np.full(self.num_rows, -1, np.int64)
        m[self.rows] = np.arange(self.n, dtype=np.int64)
        return read_only(m)

    def restrict(self, per_row: np.ndarray) -> np.ndarray:
        """A per-row array as a per-position array."""
        return per_row if self.all_live else per_row[self.rows]

    def positions(self, rows: np.ndarray) -> np.ndarray:
        """Positions of ``rows`` (each of them live)."""
        return rows.astype(np.int64, copy=False) if self.all_live else self._rowmap[rows]

    def rows_of(self, positions: np.ndarray) -> np.ndarray:
        """The rows at ``positions``."""
        pos = np.asarray(positions, dtype=np.int64)
        return pos if self.all_live else self.rows[pos]

    def row_mask(self, mask: np.ndarray | None) -> np.ndarray | None:
        """A position mask (None: every position) as a row mask that is False off the live rows;
        None when that is every row."""
        if self.all_live:
            return None if mask is None else np.asarray(mask, dtype=bool)
        if mask is None:
            return self.live
        out = np.zeros(self.num_rows, dtype=bool)
        out[self.rows[np.asarray(mask, dtype=bool)]] = True
        return out

    @cached_property
    def live_bits(self) -> Bits:
        """The live rows as Bits over the part's rows."""
        return Bits.from_rows(self.rows, self.num_rows)

    def row_bits(self, bits: Bits | None) -> Bits | None:
        """``row_mask`` for a position set given as Bits: O(set positions), no bool per row."""
        if self.all_live:
            return bits
        if bits is None:
            return self.live_bits
        return Bits.from_rows(self.rows[bits.rows()], self.num_rows)

    def positions_bits(self, rows: np.ndarray, *, complement: bool = False) -> Bits:
        """``positions_mask`` as Bits: the positions are set straight from ``rows``."""
        pos = rows if self.all_live else self._rowmap[rows]
        if not self.all_live:
            pos = pos[pos >= 0]
        out = Bits.from_rows(pos, self.n)
        return ~out if complement else out

    def positions_mask(self, rows: np.ndarray, *, complement: bool = False) -> np.ndarray:
        """bool[n]: the positions of those of ``rows`` that are live (or of every other position)."""
        pos = rows if self.all_live else self._rowmap[rows]
        if not self.all_live:
            pos = pos[pos >= 0]
        out = np.full(self.n, complement, dtype=bool)
        out[pos] = not complement
        return out


def bm25_on_rows(
    text: TextIndex,
    rows: LiveRows | None,
    query: str | Sequence[str],
    last_as_prefix: bool,
    *,
    stats: TermStats | None = None,
    k: int | None = None,
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``DocSource.bm25`` for a source whose text index covers all rows of a part (``rows`` None:
    every row is live and positions are rows)."""
    live = None if rows is None else rows.live_mask
    if k is None:  # (stats None: the text index's own over ``live``, computed once inside)
        docs, scores = text.bm25_sparse(query, last_as_prefix=last_as_prefix, stats=stats, live=live)
        positions = docs if rows is None else rows.positions(docs)
        if mask is not None:
            keep = np.asarray(mask, dtype=bool)[positions]
            positions, scores = positions[keep], scores[keep]
        return positions, scores
    candidates = (
        (None if mask is None else np.asarray(mask, dtype=bool)) if rows is None else rows.row_mask(mask)
    )
    docs, scores = text.bm25_topk(query, k, stats, candidates, last_as_prefix=last_as_prefix, live=live)
    return (docs if rows is None else rows.positions(docs)), scores


def sparse_on_rows(
    index: SparseIndex,
    rows: LiveRows | None,
    dims: np.ndarray,
    weights: np.ndarray,
    *,
    k: int | None = None,
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``DocSource.sparse`` for a source whose sparse index covers all rows of a part (``rows``
    None: every row is live and positions are rows)."""
    if rows is None:
        row_mask = None if mask is None else np.asarray(mask, dtype=bool)
    else:
        row_mask = rows.row_mask(mask)
    found, scores = index.search(dims, weights, row_mask, k)
    return (found if rows is None else rows.positions(found)), scores


def bm25_stats_on_rows(
    text: TextIndex, rows: LiveRows | None, query: str | Sequence[str], last_as_prefix: bool
) -> TermStats:
    """``DocSource.bm25_stats`` for a source whose text index covers all rows of a part."""
    return text.stats(query, last_as_prefix=last_as_prefix, live=None if rows is None else rows.live_mask)


__all__ = ["LiveRows", "bm25_on_rows", "bm25_stats_on_rows", "read_only", "sparse_on_rows"]
