"""``SegmentSource``: the live rows of one segment (a ``SegmentReader``) as a ``DocSource``.

The caller computes which rows are live in its snapshot (not tombstones, not shadowed by newer
parts); ``rows.LiveRows`` maps rows to positions (rows ascend, so positions are in id order and
``id_rank`` is the identity). Filters use the segment's filter indexes for Eq/In/range leaves and
its persisted postings for token operators; vector search probes the IVF index (``ann_part`` for
probes planned across parts); BM25 goes through ``rows.bm25_on_rows`` like every other part.
Creating a source is O(rows) in bools and ints: nothing is copied until a query needs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from lagoon.errors import InternalError
from lagoon.index.bits import Bits
from lagoon.index.cache import OnceCache
from lagoon.index.filters.ops import TOKEN_OPS
from lagoon.index.filters.tree import And, Condition, Filter, Not, Or
from lagoon.index.segment.read import SegmentReader
from lagoon.index.sources.ranks import dense_rank
from lagoon.index.sources.rows import LiveRows, bm25_on_rows, bm25_stats_on_rows, read_only, sparse_on_rows
from lagoon.index.text.bm25 import TermStats
from lagoon.index.vector.kernels import VectorMatrix
from lagoon.index.vector.plan import DEFAULT_RECALL_TARGET, RecallCurve
from lagoon.index.vector.probe import ProbeSearch
from lagoon.schema import Schema

_NEGATIVE = {"NotEq": "Eq", "NotIn": "In"}
_INDEX_OPS = ("Eq", "In", "Lt", "Lte", "Gt", "Gte")


class SegmentSource:
    """The live rows of one segment as a DocSource (lagoon/index/sources/table.py) plus the extras the
    composite source needs (approximate vector search, BM25 with external statistics, token
    matching). Position p is segment row ``rows[p]``; rows ascend, so positions are in id order."""

    def __init__(self, reader: SegmentReader, live: np.ndarray) -> None:
        live = np.asarray(live)
        if live.dtype != np.bool_ or live.shape != (reader.num_rows,):
            raise InternalError(
                f"segment source: live must be bool[{reader.num_rows}], got {live.dtype}{live.shape}"
            )
        self.reader = reader
        self.live_rows = LiveRows(live)
        self.live, self.rows, self.all_live = (
            self.live_rows.live,
            self.live_rows.rows,
            self.live_rows.all_live,
        )
        self._n = self.live_rows.n
        self._cache = OnceCache()

    @property
    def schema(self) -> Schema:
        return self.reader.schema

    @property
    def num_docs(self) -> int:
        return self._n

    @property
    def reads_store(self) -> bool:
        """May a query on this source read the store (its segment's files opened from their heads)?"""
        return self.reader.reads_store

    # ----------------------------------------------------------------------------------- columns

    def column(self, attr: str) -> pa.ChunkedArray:
        if self.all_live:
            return self.reader.column(attr)

        def build() -> pa.ChunkedArray:
            a = self.schema.attributes.get(attr)
            if a is not None and a.type.is_vector:
                return pa.chunked_array([self.reader._vector_array(attr, self.rows)])
            return self.reader.column(attr).take(pa.array(self.rows))

        return self._cache.get("column", attr, build)

    def fetch_rows(self, positions: np.ndarray, attributes: Sequence[str]) -> pa.Table:
        pos = np.asarray(positions, dtype=np.int64)
        rows = pos if self.all_live else self.rows[pos]
        names = ["id", *[a for a in attributes if a != "id" and a in self.schema.attributes]]
        return self.reader.take(rows, names)

    def id_values(self, positions: np.ndarray) -> np.ndarray | pa.Array:
        rows = self.live_rows.rows_of(positions)
        ids = self.reader.uint_ids()
        return ids[rows] if ids is not None else self.reader.ids().take(pa.array(rows))

    def non_null_count(self, attr: str) -> int:
        """Live documents with a value for ``attr``; vectors from the index's row map (no
        vector data is read)."""
        a = self.schema.attributes.get(attr)
        if a is not None and a.type.is_vector:
            vi = self.reader.vector_index(attr)
            if vi is None:
                return 0
            return int(np.count_nonzero(vi.valid if self.all_live else vi.valid[self.rows]))
        if self.all_live:  # from the docs file's column summaries: no column is read
            return self._n - self.reader.null_count(attr)
        return self._n - int(self.column(attr).null_count)

    def logical_bytes(self, attributes: Sequence[str]) -> int:
        names = {"id", *attributes} & {"id", *self.schema.attributes}
        total = sum(self.reader.column_nbytes(name) for name in names)
        n = self.reader.num_rows
        return total if self.all_live or n == 0 else int(total * self._n / n)

    def id_rank(self) -> np.ndarray:
        return self._cache.get("id_rank", "", lambda: read_only(np.arange(self._n, dtype=np.int64)))

    def sort_rank(self, attr: str) -> np.ndarray:
        if attr == "id":
            return self.id_rank()
        return self._cache.get("sort_rank", attr, lambda: dense_rank(self.column(attr)))

    # ----------------------------------------------------------------------------------- filters

    def filter_mask(self, flt: Filter | None) -> np.ndarray:
        """bool[num_docs]. Eq/In/Lt/Lte/Gt/Gte (and NotEq/NotIn) leaves on indexed attributes use
        the filter index; token operators use the persisted postings; other leaves scan columns."""
        if flt is None:
            return np.ones(self._n, dtype=bool)
        mask = np.asarray(self._eval(flt), dtype=bool)
        if mask.shape != (self._n,):
            raise InternalError(f"filter returned a mask of shape {mask.shape} for {self._n} documents")
        return mask

    def _eval(self, f: Filter) -> np.ndarray:
        if isinstance(f, And):
            out = np.ones(self._n, dtype=bool)
            for child in f.children:
                if not out.any():
                    break
                np.logical_and(out, self._eval(child), out=out)
            return out
        if isinstance(f, Or):
            out = np.zeros(self._n, dtype=bool)
            for child in f.children:
                if self._n and out.all():
                    break
                np.logical_or(out, self._eval(child), out=out)
            return out
        if isinstance(f, Not):
            negated: np.ndarray = np.logical_not(self._eval(f.child))
            return negated
        if isinstance(f, Condition):
            indexed = self._indexed(f)
            if indexed is not None:
                return indexed
        return self._scan(f)

    def filter_bits(self, flt: Filter | None) -> Bits:
        """``filter_mask`` as Bits, evaluated as bits throughout: the filter index's rows are set
        straight into them, scanned conditions come from Arrow's boolean bitmaps, And/Or/Not
        combine 64 documents per operation."""
        if flt is None:
            return Bits.full(self._n)
        bits = flt.combine_bits(self._n, self._condition_bits)
        if bits.n != self._n:
            raise InternalError(f"filter returned bits of {bits.n} documents for {self._n}")
        return bits

    def _condition_bits(self, c: Condition) -> Bits:
        """A leaf of ``filter_bits``: from the filter index when it answers ``c``, else scanned."""
        found = self._index_rows(c)
        if found is None:
            return self._scan_bits(c)
        rows, complement = found
        return self.live_rows.positions_bits(rows, complement=complement)

    def _indexed(self, c: Condition) -> np.ndarray | None:
        found = self._index_rows(c)
        if found is None:
            return None
        rows, complement = found
        return self.live_rows.positions_mask(rows, complement=complement)

    def _index_rows(self, c: Condition) -> tuple[np.ndarray, bool] | None:
        """(segment rows, complement) answering ``c`` from the attribute's filter index: the
        matching rows, or (``complement``) the rows that do not match; None without an index."""
        if c.ref_new is not None or c.attr_type is None or c.attr_type.array or c.attr == "id":
            return None
        positive = _NEGATIVE.get(c.op)
        op = positive or c.op
        if op not in _INDEX_OPS:
            return None
        fi = self.reader.filter_index(c.attr)
        if fi is None:
            return None
        found = fi.match(op, c.value)
        if found is None:
            return None
        rows, complement = found
        return rows, complement != (positive is not None)

    def _scan(self, f: Filter) -> np.ndarray:
        return f.evaluate(self._scan_table(f), token_matcher=self._token_matcher)

    def _scan_bits(self, f: Filter) -> Bits:
        return f.evaluate_bits(self._scan_table(f), token_matcher=self._token_matcher)

    def _scan_table(self, f: Filter) -> pa.Table:
        """The columns ``f`` reads (none for a token operator: it reads the postings)."""
        cols: dict[str, pa.ChunkedArray] = {}
        token_only = isinstance(f, Condition) and f.op in TOKEN_OPS
        if not token_only:
            for name in sorted(f.attributes()):
                a = self.schema.attributes.get(name)
                if name == "id" or (a is not None and not a.type.is_vector):
                    cols[name] = self.column(name)
        if not cols:  # the table only carries the row count
            cols["$rows"] = pa.chunked_array([pa.nulls(self._n)])
        return pa.table(cols)

    def _token_matcher(self, attr: str, op: str, tokens: Any, params: Any, table: pa.Table) -> np.ndarray:
        return self.token_match(attr, op, tokens, params)

    # ----------------------------------------------------------------------------------- vectors

    def vector_topk(
        self,
        attr: str,
        query: np.ndarray,
        metric: str,
        k: int,
        mask: np.ndarray | Bits | None,
        *,
        approximate: bool = False,
        nprobe: int | None = None,
        recall_target: float = DEFAULT_RECALL_TARGET,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest live documents with a vector among ``mask``: (positions, float64
        distances), ascending, ties by id. ``approximate`` probes the IVF (planned for
        ``recall_target`` as the only part, or the given ``nprobe``); otherwise the scan is exact."""
        vi = self.reader.vector_index(attr)
        if vi is None or k <= 0 or self._n == 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
        cand = self._candidates(mask)
        if approximate:
            rows, dist = vi.search(query, metric, k, cand, nprobe=nprobe, recall_target=recall_target)
        else:
            rows, dist = vi.exact(query, metric, k, cand)
        return self.live_rows.positions(rows), dist

    def _candidates(self, mask: np.ndarray | Bits | None) -> np.ndarray | Bits | None:
        """The segment rows live and in ``mask`` (over positions): bool over rows, or Bits for
        Bits; None = every row."""
        if isinstance(mask, Bits):
            if mask.n != self._n:
                raise InternalError(f"vector_topk: bits of {mask.n} for {self._n} documents")
            return self.live_rows.row_bits(mask)
        if mask is None:
            return self.live_rows.live_mask
        m = np.asarray(mask, dtype=bool)
        if m.shape != (self._n,):
            raise InternalError(f"vector_topk: mask of shape {m.shape} for {self._n} documents")
        return self.live_rows.row_mask(m)

    def ann_part(
        self, attr: str, query: np.ndarray, metric: str, k: int, mask: np.ndarray | Bits | None
    ) -> SegmentAnnPart | None:
        """This segment's side of a planned ANN query (lagoon/index/vector/plan.py), or None
        when it has no vector index for ``attr``."""
        vi = self.reader.vector_index(attr)
        if vi is None or self._n == 0:
            return None
        return SegmentAnnPart(self, vi.start(query, metric, k, self._candidates(mask)))

    def vectors(self, attr: str) -> VectorMatrix:
        """The attribute's vectors in position order (float32; zeros where a document has none)."""

        def build() -> VectorMatrix:
            vi = self.reader.vector_index(attr)
            a = self.schema.attributes[attr]
            if vi is None:
                return VectorMatrix(
                    np.zeros((self._n, a.type.dims), np.float32), np.zeros(self._n, bool), False
                )
            matrix, valid = vi.rows_matrix(self.rows)
            return VectorMatrix(read_only(matrix), read_only(valid), bool(valid.all()))

        return self._cache.get("vectors", attr, build)

    # ----------------------------------------------------------------------------------- text

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
        text = self.reader.text_index(attr)
        return bm25_on_rows(text, self.live_rows, query, last_as_prefix, stats=stats, k=k, mask=mask)

    def bm25_stats(self, attr: str, query: str | Sequence[str], last_as_prefix: bool) -> TermStats:
        """This source's share of the BM25 statistics of ``query`` (its live rows only)."""
        return bm25_stats_on_rows(self.reader.text_index(attr), self.live_rows, query, last_as_prefix)

    def token_match(self, attr: str, op: str, query: Any, params: Any) -> np.ndarray:
        """bool[num_docs] for ContainsAllTokens / ContainsAnyToken / ContainsTokenSequence."""
        return self.live_rows.restrict(self.reader.text_index(attr).match(op, query, dict(params or {})))

    def sparse(
        self,
        attr: str,
        dims: np.ndarray,
        weights: np.ndarray,
        *,
        k: int | None = None,
        mask: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scored through the segment's ``spv`` index: only the query dimensions' postings."""
        return sparse_on_rows(self.reader.sparse_index(attr), self.live_rows, dims, weights, k=k, mask=mask)


class SegmentAnnPart:
    """``ProbeSearch`` of one segment with results in the source's positions (plan.AnnPart)."""

    def __init__(self, src: SegmentSource, search: ProbeSearch) -> None:
        self._src = src
        self._s = search

    @property
    def n_cand(self) -> int:
        return self._s.n_cand

    @property
    def curve(self) -> RecallCurve | None:
        return self._s.curve

    @property
    def sigma(self) -> float:
        return self._s.sigma

    def ivf_cost(self, nprobe: int) -> float:
        return self._s.ivf_cost(nprobe)

    def exact_cost(self) -> float:
        return self._s.exact_cost()

    def exact(self) -> tuple[np.ndarray, np.ndarray]:
        rows, dist = self._s.exact()
        return self._src.live_rows.positions(rows), dist

    def probe(self, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        rows, dist = self._s.probe(nprobe)
        return self._src.live_rows.positions(rows), dist


__all__ = ["SegmentAnnPart", "SegmentSource"]
