"""LiveDocs: documents held as one Arrow table (a run of unindexed WAL entries), plus cached derived
data, as a ``DocSource`` (``protocol.py``).

The engine builds a ``LiveDocs`` per run of WAL entries and restricts it to one snapshot's live
rows with ``masked.MaskedSource``. It is immutable: the table never changes after construction, so every derived structure
(float32 vector matrices, text postings, sort ranks, id order) is computed at most once, lazily, and
shared by all the queries that use the snapshot (thread-safe: one lock per cache entry).

Row positions (0..num_docs-1) are the handles the executor passes around.

Invariants: ``table`` has an ``id`` column (uint64, string or binary(16); unique) and one column per
schema attribute typed ``AttrType.arrow_type()`` (columns absent from the input are added as nulls).
Hot paths are vectorised: one matmul + argpartition per vector query, postings per BM25 query.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa

from lagoon.errors import InternalError
from lagoon.index.bits import Bits
from lagoon.index.cache import OnceCache
from lagoon.index.filters.tree import Filter
from lagoon.index.sources.ranks import dense_rank, rank_of_order, sort_positions
from lagoon.index.sources.rows import bm25_on_rows, bm25_stats_on_rows, sparse_on_rows
from lagoon.index.sparse import SparseIndex, build_sparse_index
from lagoon.index.text.bm25 import TermStats
from lagoon.index.text.textindex import TextIndex, build_text_index
from lagoon.index.vector.kernels import VectorMatrix, exact_dist, inner_products, topk_smallest, vector_matrix
from lagoon.schema import Schema, id_arrow_type

T = TypeVar("T")

_GATHER_FRACTION = 0.3  # below this share of candidates, gather their rows instead of scanning all


class LiveDocs:
    """The live documents of one snapshot (newest version of each id, deletes applied)."""

    def __init__(self, schema: Schema, table: pa.Table) -> None:
        if "id" not in table.column_names:
            raise InternalError("LiveDocs: the table has no 'id' column")
        self._schema = schema
        self._table = _conform(schema, table)
        self._n = int(self._table.num_rows)
        self._cache = OnceCache()

    # ----------------------------------------------------------------------------------- basics

    @property
    def schema(self) -> Schema:
        return self._schema

    @property
    def table(self) -> pa.Table:
        return self._table

    @property
    def num_docs(self) -> int:
        return self._n

    def column(self, attr: str) -> pa.ChunkedArray:
        return self._table.column(attr)

    def _cached(self, kind: str, name: str, build: Callable[[], T]) -> T:
        return self._cache.get(kind, name, build)

    # ----------------------------------------------------------------------------------- ids, order

    def id_order(self) -> np.ndarray:
        """int64 positions in ascending id order (uuid ids order by their 16 bytes)."""
        return self._cached("id_order", "", lambda: sort_positions(self._table.column("id")))

    def id_rank(self) -> np.ndarray:
        return self._cached("id_rank", "", lambda: rank_of_order(self.id_order()))

    def sort_rank(self, attr: str) -> np.ndarray:
        if attr == "id":
            return self.id_rank()
        return self._cached("sort_rank", attr, lambda: dense_rank(self._table.column(attr)))

    # ----------------------------------------------------------------------------------- filters

    def filter_mask(self, flt: Filter | None) -> np.ndarray:
        if flt is None:
            return np.ones(self._n, dtype=bool)
        mask = np.asarray(flt.evaluate(self._table, token_matcher=self._match_tokens), dtype=bool)
        if mask.shape != (self._n,):
            raise InternalError(f"filter returned a mask of shape {mask.shape} for {self._n} documents")
        return mask

    def filter_bits(self, flt: Filter | None) -> Bits:
        return Bits.full(self._n) if flt is None else Bits.from_mask(self.filter_mask(flt))

    def _match_tokens(self, attr: str, op: str, tokens: Any, params: Any, table: pa.Table) -> np.ndarray:
        if table.num_rows != self._n:  # evaluated on a different table: no cached index applies
            index = build_text_index(self._schema, attr, table.column(attr))
        else:
            index = self.text_index(attr)
        return index.match(op, tokens, dict(params or {}))

    # ----------------------------------------------------------------------------------- vectors

    def vectors(self, attr: str) -> VectorMatrix:
        return self._cached("vectors", attr, lambda: vector_matrix(self._table.column(attr)))

    def _unit_vectors(self, attr: str) -> np.ndarray:
        def build() -> np.ndarray:
            m = self.vectors(attr).matrix
            norms: np.ndarray = np.sqrt(np.einsum("ij,ij->i", m, m, dtype=np.float32))
            norms[norms == 0] = 1.0
            unit = np.empty_like(m)
            np.divide(m, norms[:, None], out=unit)
            unit.setflags(write=False)
            return unit

        return self._cached("unit", attr, build)

    def _sq_norms(self, attr: str) -> np.ndarray:
        def build() -> np.ndarray:
            m = self.vectors(attr).matrix
            sq: np.ndarray = np.einsum("ij,ij->i", m, m, dtype=np.float32)
            sq.setflags(write=False)
            return sq

        return self._cached("sqnorm", attr, build)

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
        if isinstance(mask, Bits):
            mask = mask.mask
        vm = self.vectors(attr)
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
        if mask is None:
            cand = None if vm.all_valid else vm.valid
        else:
            cand = mask if vm.all_valid else (mask & vm.valid)
        n_cand = self._n if cand is None else int(np.count_nonzero(cand))
        if n_cand == 0 or k <= 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
        if cand is not None and n_cand < _GATHER_FRACTION * self._n:
            pos = np.flatnonzero(cand)
            dist = self._approx_dist(attr, q, metric, cand)
        else:
            pos = None
            dist = self._approx_dist(attr, q, metric, None)
            if cand is not None:
                dist[~cand] = np.inf
        top = topk_smallest(dist, self._tiebreak(pos), min(k, n_cand))
        sel = top if pos is None else pos[top]
        if cand is not None:
            sel = sel[cand[sel]]
        # Exact float64 distances for the few returned rows, then a final deterministic order.
        exact = exact_dist(vm.matrix[sel], q, metric)
        order = np.lexsort((self.id_rank()[sel], exact))
        return sel[order], exact[order]

    def _tiebreak(self, pos: np.ndarray | None) -> np.ndarray:
        r = self.id_rank()
        return r if pos is None else r[pos]

    def _approx_dist(self, attr: str, q: np.ndarray, metric: str, rows: np.ndarray | None) -> np.ndarray:
        """float32 distances by one matmul over all rows (``rows`` None) or the rows where the bool
        mask ``rows`` is set, in position order."""
        if metric == "cosine_distance":
            unit = self._unit_vectors(attr)
            qn = float(np.linalg.norm(q))
            qu = q / qn if qn > 0 else q
            idx = None if rows is None else np.flatnonzero(rows)
            return np.float32(1.0) - inner_products(unit, np.ascontiguousarray(qu, np.float32), idx)  # type: ignore[no-any-return]
        if metric == "euclidean_squared":
            m = self.vectors(attr).matrix
            sq = self._sq_norms(attr)
            idx = None if rows is None else np.flatnonzero(rows)
            if idx is not None:
                sq = sq[idx]
            d = sq - np.float32(2.0) * inner_products(m, q, idx) + np.float32(np.dot(q, q))
            np.maximum(d, 0, out=d)
            return d  # type: ignore[no-any-return]
        raise InternalError(f"unknown distance metric {metric!r}")

    # ----------------------------------------------------------------------------------- text

    def text_index(self, attr: str) -> TextIndex:
        return self._cached(
            "text", attr, lambda: build_text_index(self._schema, attr, self._table.column(attr))
        )

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
        return bm25_on_rows(self.text_index(attr), None, query, last_as_prefix, stats=stats, k=k, mask=mask)

    def bm25_stats(self, attr: str, query: str | Sequence[str], last_as_prefix: bool) -> TermStats:
        return bm25_stats_on_rows(self.text_index(attr), None, query, last_as_prefix)

    def token_match(self, attr: str, op: str, query: Any, params: Any) -> np.ndarray:
        return self.text_index(attr).match(op, query, dict(params or {}))

    def sparse_index(self, attr: str) -> SparseIndex:
        return self._cached("sparse", attr, lambda: build_sparse_index(self._table.column(attr), self._n))

    def sparse(
        self,
        attr: str,
        dims: np.ndarray,
        weights: np.ndarray,
        *,
        k: int | None = None,
        mask: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        return sparse_on_rows(self.sparse_index(attr), None, dims, weights, k=k, mask=mask)

    # ----------------------------------------------------------------------------------- rows

    def fetch_rows(self, positions: np.ndarray, attributes: Sequence[str]) -> pa.Table:
        cols = ["id", *[a for a in attributes if a != "id"]]
        return self._table.select(cols).take(pa.array(np.asarray(positions, dtype=np.int64)))

    def id_values(self, positions: np.ndarray) -> np.ndarray | pa.Array:
        pos = np.asarray(positions, dtype=np.int64)
        ids = self._cached("uint_ids", "", lambda: uint_ids(self._table.column("id")))
        return ids[pos] if ids is not None else self._table.column("id").take(pa.array(pos))

    def logical_bytes(self, attributes: Sequence[str]) -> int:
        names = {"id", *attributes} & set(self._table.column_names)
        return sum(self._cached("nbytes", name, partial(_nbytes, self._table, name)) for name in names)

    def non_null_count(self, attr: str) -> int:
        if attr not in self._table.column_names:
            return 0
        return self.num_docs - int(self._table.column(attr).null_count)


# --------------------------------------------------------------------------------------------- helpers


def uint_ids(col: pa.ChunkedArray | pa.Array) -> np.ndarray | None:
    """An id column as a read-only uint64 numpy array (one copy at most), or None when the ids
    are not unsigned integers (or hold a null)."""
    if not pa.types.is_uint64(col.type) or col.null_count:
        return None
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) and col.num_chunks != 1 else col
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.chunk(0)
    out = np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.uint64)
    out.setflags(write=False)
    return out


def _nbytes(table: pa.Table, name: str) -> int:
    return int(table.column(name).nbytes)


def _conform(schema: Schema, table: pa.Table) -> pa.Table:
    """Add schema attributes missing from ``table`` as all-null columns; normalise the id column."""
    n = table.num_rows
    out = table
    if schema.id_type is not None and out.column("id").type != id_arrow_type(schema.id_type):
        out = out.set_column(
            out.column_names.index("id"), "id", out.column("id").cast(id_arrow_type(schema.id_type))
        )
    present = set(out.column_names)  # (column_names builds a new list on every call)
    for name, a in schema.attributes.items():
        if name not in present:
            out = out.append_column(name, pa.nulls(n, a.type.arrow_type()))
    return out
