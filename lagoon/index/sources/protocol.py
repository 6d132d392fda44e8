"""``DocSource``: what the query executor reads a snapshot through, and what every part of a snapshot
offers the composite source.

Positions ``0..num_docs-1`` are the handles passed around; every source of the package
(``table.LiveDocs``, ``masked.MaskedSource``, ``segment.SegmentSource``, ``composite.CompositeSource``)
implements the whole protocol, so a composite can hold any of them and the executor cannot tell
them apart. BM25 has one entry point, ``bm25``, with optional shared statistics: the composite
sums each part's ``bm25_stats`` and scores every part with the total, so scores equal a single
index over the snapshot's live documents.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from lagoon.index.bits import Bits
from lagoon.index.filters.tree import Filter
from lagoon.index.text.bm25 import TermStats
from lagoon.schema import Schema


class DocSource(Protocol):
    """A set of documents addressed by position (see the module docstring)."""

    @property
    def schema(self) -> Schema: ...

    @property
    def num_docs(self) -> int: ...

    def filter_mask(self, flt: Filter | None) -> np.ndarray:
        """bool[num_docs]: documents matching ``flt`` (all True for None)."""
        ...

    def filter_bits(self, flt: Filter | None) -> Bits:
        """``filter_mask`` as packed bits (lagoon/index/bits.py), for a vector search's
        candidates: evaluated to bits where the source can (a segment's filter indexes and
        Arrow's boolean results), without a bool per document on the way."""
        ...

    def vector_topk(
        self,
        attr: str,
        query: np.ndarray,
        metric: str,
        k: int,
        mask: np.ndarray | Bits | None,
        *,
        approximate: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest documents with a vector among ``mask`` (bool[num_docs] or Bits):
        (positions, float64 distances), ascending distance, ties by id. ``approximate`` allows an
        index probe (IVF)."""
        ...

    def bm25(
        self,
        attr: str,
        query: str | Sequence[str],
        last_as_prefix: bool,
        *,
        stats: TermStats | None = None,
        k: int | None = None,
        mask: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """BM25 of ``query`` on ``attr`` as (positions, float64 scores).

        ``stats``: the corpus statistics to score with (None: this source's own, ``bm25_stats``).
        ``k`` None: every document scoring above 0, positions ascending. ``k`` given: a superset
        of the ``k`` best documents (every document scoring at least the k-th best score), with
        exact scores, usually far fewer. ``mask`` (bool[num_docs]) restricts the documents."""
        ...

    def bm25_stats(self, attr: str, query: str | Sequence[str], last_as_prefix: bool) -> TermStats:
        """This source's share of the BM25 statistics of ``query`` (its documents only)."""
        ...

    def sparse(
        self,
        attr: str,
        dims: np.ndarray,
        weights: np.ndarray,
        *,
        k: int | None = None,
        mask: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Dot products of the sparse query (``dims`` uint32 ascending, ``weights`` float64) with
        the documents of sparse attribute ``attr`` that share a dimension with it, as (positions
        ascending, float64 scores); ``k``: a superset of the ``k`` best, exact scores (as for
        ``bm25``); ``mask`` restricts the documents."""
        ...

    def token_match(self, attr: str, op: str, query: Any, params: Any) -> np.ndarray:
        """bool[num_docs] for ContainsAllTokens / ContainsAnyToken / ContainsTokenSequence."""
        ...

    def id_rank(self) -> np.ndarray:
        """int64[num_docs]: each document's rank in ascending id order (unique)."""
        ...

    def sort_rank(self, attr: str) -> np.ndarray:
        """int64[num_docs]: dense ascending rank of the attribute's value; null ranks lowest (0)."""
        ...

    def column(self, attr: str) -> pa.ChunkedArray: ...

    def fetch_rows(self, positions: np.ndarray, attributes: Sequence[str]) -> pa.Table:
        """The ``id`` column and ``attributes`` of the documents at ``positions``, in that order."""
        ...

    def id_values(self, positions: np.ndarray) -> np.ndarray | pa.Array:
        """The ids at ``positions``, in that order: a uint64 numpy array for unsigned ids (no
        Arrow call: the top-k rows of a query), else an Arrow array of the id column's type."""
        ...

    def logical_bytes(self, attributes: Sequence[str]) -> int:
        """Logical size of the named columns (and ids) over all documents, for billing."""
        ...

    def non_null_count(self, attr: str) -> int:
        """Documents with a value for ``attr`` (without reading vector data)."""
        ...


def dense_scores(n: int, positions: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """float64[n] with ``scores`` at ``positions`` and 0 elsewhere (a fresh, writable array)."""
    out = np.zeros(n, dtype=np.float64)
    out[positions] = scores
    return out


__all__ = ["DocSource", "dense_scores"]
