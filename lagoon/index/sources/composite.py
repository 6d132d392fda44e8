"""Composite document sources: one snapshot's live documents spread over several parts.

A snapshot's documents live in index segments (oldest first) and in runs of unindexed WAL entries
(newest last). Each part holds at most one row per id; a row is *live* when it is not a tombstone
and no newer part has a row for its id. ``CompositeSource`` presents the live rows of all parts as
one ``DocSource`` (lagoon/index/sources/table.py) to the query executor:

- positions are the concatenation of each part's live positions, in part order;
- filters, vector search and text search run per part (each with its own indexes) and merge;
- BM25 statistics (N, average length, document frequencies) are summed over the parts' live rows
  first, so every part scores with the statistics of the whole snapshot: the result equals a
  single-index BM25 over the live documents;
- ties and orderings use global ranks computed over the concatenated columns.

``MaskedSource`` restricts a source built over all rows of a part (cached once per part) to the
rows live in one snapshot, without rebuilding its derived data. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar

import numpy as np
import pyarrow as pa

from lagoon.index.cache import OnceCache
from lagoon.index.cancel import checkpoint
from lagoon.index.filters.tree import Filter
from lagoon.index.sources.table import LiveDocs, dense_rank, sort_positions
from lagoon.index.text.bm25 import TermStats
from lagoon.index.vector.kernels import topk_smallest
from lagoon.index.vector.plan import DEFAULT_RECALL_TARGET, AnnPart, RecallCurve, plan_and_search
from lagoon.schema import Schema
from lagoon.tracing import tracer

T = TypeVar("T")


class PartSource(Protocol):
    """A DocSource plus what a composite needs to merge parts exactly."""

    @property
    def schema(self) -> Schema: ...

    @property
    def num_docs(self) -> int: ...

    def filter_mask(self, flt: Filter | None) -> np.ndarray: ...

    def vector_topk(
        self,
        attr: str,
        query: np.ndarray,
        metric: str,
        k: int,
        mask: np.ndarray | None,
        *,
        approximate: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def bm25_local_stats(self, attr: str, query: str | Sequence[str], last_as_prefix: bool) -> TermStats: ...

    def bm25_scores_with(
        self, attr: str, query: str | Sequence[str], last_as_prefix: bool, stats: TermStats
    ) -> np.ndarray: ...

    def bm25_sparse_with(
        self, attr: str, query: str | Sequence[str], last_as_prefix: bool, stats: TermStats
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def bm25_topk_with(
        self,
        attr: str,
        query: str | Sequence[str],
        last_as_prefix: bool,
        stats: TermStats,
        k: int,
        mask: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def column(self, attr: str) -> pa.ChunkedArray: ...

    def fetch_rows(self, positions: np.ndarray, attributes: Sequence[str]) -> pa.Table: ...

    def logical_bytes(self, attributes: Sequence[str]) -> int: ...

    def non_null_count(self, attr: str) -> int: ...


class MaskedSource:
    """The rows of ``base`` where ``live`` is set; position p is base row ``rows[p]``."""

    def __init__(self, base: LiveDocs, live: np.ndarray) -> None:
        self.base = base
        self.live = np.asarray(live, dtype=bool)
        self.all_live = bool(self.live.all())
        self.rows = np.flatnonzero(self.live).astype(np.int64)
        self._cache = OnceCache()

    @property
    def schema(self) -> Schema:
        return self.base.schema

    @property
    def num_docs(self) -> int:
        return int(self.rows.shape[0])

    def _restrict(self, full: np.ndarray) -> np.ndarray:
        return full if self.all_live else full[self.rows]

    def _local(self, base_rows: np.ndarray) -> np.ndarray:
        if self.all_live:
            return base_rows
        return np.searchsorted(self.rows, base_rows).astype(np.int64)

    def filter_mask(self, flt: Filter | None) -> np.ndarray:
        if flt is None:
            return np.ones(self.num_docs, dtype=bool)
        return self._restrict(self.base.filter_mask(flt))

    def vector_topk(
        self,
        attr: str,
        query: np.ndarray,
        metric: str,
        k: int,
        mask: np.ndarray | None,
        *,
        approximate: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.all_live:
            return self.base.vector_topk(attr, query, metric, k, mask, approximate=approximate)
        full = np.zeros(self.base.num_docs, dtype=bool)
        full[self.rows if mask is None else self.rows[mask]] = True
        pos, dist = self.base.vector_topk(attr, query, metric, k, full, approximate=approximate)
        return self._local(pos), dist

    def bm25_local_stats(self, attr: str, query: str | Sequence[str], last_as_prefix: bool) -> TermStats:
        return self.base.bm25_local_stats(attr, query, last_as_prefix, None if self.all_live else self.live)

    def bm25_scores_with(
        self, attr: str, query: str | Sequence[str], last_as_prefix: bool, stats: TermStats
    ) -> np.ndarray:
        live = None if self.all_live else self.live
        return self._restrict(self.base.bm25_scores_with(attr, query, last_as_prefix, stats, live))

    def bm25_sparse_with(
        self, attr: str, query: str | Sequence[str], last_as_prefix: bool, stats: TermStats
    ) -> tuple[np.ndarray, np.ndarray]:
        live = None if self.all_live else self.live
        rows, scores = self.base.bm25_sparse_with(attr, query, last_as_prefix, stats, live)
        return self._local(rows), scores

    def bm25_topk_with(
        self,
        attr: str,
        query: str | Sequence[str],
        last_as_prefix: bool,
        stats: TermStats,
        k: int,
        mask: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.all_live:
            cand = None if mask is None else np.asarray(mask, dtype=bool)
        else:
            cand = np.zeros(self.base.num_docs, dtype=bool)
            cand[self.rows if mask is None else self.rows[np.asarray(mask, dtype=bool)]] = True
        rows, scores = self.base.bm25_topk_with(attr, query, last_as_prefix, stats, k, cand)
        return self._local(rows), scores

    def token_match(self, attr: str, op: str, query: Any, params: Any) -> np.ndarray:
        return self._restrict(self.base.token_match(attr, op, query, params))

    def column(self, attr: str) -> pa.ChunkedArray:
        if self.all_live:
            return self.base.column(attr)
        return self._cache.get("column", attr, lambda: self.base.column(attr).take(pa.array(self.rows)))

    def fetch_rows(self, positions: np.ndarray, attributes: Sequence[str]) -> pa.Table:
        rows = positions if self.all_live else self.rows[np.asarray(positions, dtype=np.int64)]
        return self.base.fetch_rows(rows, attributes)

    def logical_bytes(self, attributes: Sequence[str]) -> int:
        total = self.base.logical_bytes(attributes)
        n = self.base.num_docs
        return total if self.all_live or n == 0 else int(total * self.num_docs / n)

    def non_null_count(self, attr: str) -> int:
        if self.all_live:
            return self.base.non_null_count(attr)
        return self.num_docs - int(self.column(attr).null_count)


class CompositeSource:
    """Several parts (oldest first, already restricted to live rows) as one DocSource."""

    def __init__(
        self, schema: Schema, parts: Sequence[PartSource], recall_target: float = DEFAULT_RECALL_TARGET
    ) -> None:
        self._schema = schema
        self.parts = [p for p in parts if p.num_docs > 0]
        sizes = [p.num_docs for p in self.parts]
        self.offsets = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)
        self._n = int(self.offsets[-1])
        self._cache = OnceCache()
        self.recall_target = recall_target  # for ANN queries (the namespace's ann_recall_target)
        self.last_plan: dict[str, Any] = {}

    @property
    def schema(self) -> Schema:
        return self._schema

    @property
    def num_docs(self) -> int:
        return self._n

    def _concat(self, arrays: list[np.ndarray], dtype: Any) -> np.ndarray:
        if not arrays:
            return np.zeros(0, dtype=dtype)
        return np.concatenate(arrays).astype(dtype, copy=False)

    def _slices(self, mask: np.ndarray | None) -> list[np.ndarray | None]:
        if mask is None:
            return [None] * len(self.parts)
        return [mask[self.offsets[i] : self.offsets[i + 1]] for i in range(len(self.parts))]

    def _part(self, i: int, operation: str) -> AbstractContextManager[Any]:
        """A tracing span for work on part ``i`` (lagoon/tracing.py); first a cancellation checkpoint."""
        checkpoint()
        p = self.parts[i]
        reader = getattr(p, "reader", None)
        name = f"segment {reader.ref.id}" if reader is not None else "wal run"
        return tracer.start_as_current_span(
            "lagoon.part",
            attributes={"lagoon.part": name, "lagoon.operation": operation, "lagoon.rows": p.num_docs},
        )

    def filter_mask(self, flt: Filter | None) -> np.ndarray:
        if flt is None:
            return np.ones(self._n, dtype=bool)
        masks = []
        for i, p in enumerate(self.parts):
            with self._part(i, "filter"):
                masks.append(p.filter_mask(flt))
        return self._concat(masks, bool)

    def vector_topk(
        self,
        attr: str,
        query: np.ndarray,
        metric: str,
        k: int,
        mask: np.ndarray | None,
        *,
        approximate: bool = False,
        recall_target: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact: every part's exact top-k, merged. Approximate: the parts' probes are planned
        together for the namespace's recall target (lagoon/index/vector/plan.py)."""
        if approximate:
            target = self.recall_target if recall_target is None else recall_target
            return self._ann_topk(attr, query, metric, k, mask, target)
        positions, dists = [], []
        for i, (p, m) in enumerate(zip(self.parts, self._slices(mask), strict=True)):
            if m is not None and not m.any():
                continue
            with self._part(i, "vector"):
                pos, dist = p.vector_topk(attr, query, metric, k, m)
            positions.append(np.asarray(pos, dtype=np.int64) + self.offsets[i])
            dists.append(np.asarray(dist, dtype=np.float64))
        return self._merge_topk(positions, dists, k)

    def _merge_topk(
        self, positions: list[np.ndarray], dists: list[np.ndarray], k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        if not positions:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
        pos_all, dist_all = np.concatenate(positions), np.concatenate(dists)
        top = topk_smallest(dist_all, self.id_rank()[pos_all], k)
        return pos_all[top], dist_all[top]

    def _ann_topk(
        self, attr: str, query: np.ndarray, metric: str, k: int, mask: np.ndarray | None, target: float
    ) -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
        parts: list[AnnPart] = []
        where: list[int] = []
        for i, (p, m) in enumerate(zip(self.parts, self._slices(mask), strict=True)):
            if m is not None and not m.any():
                continue
            ann = getattr(p, "ann_part", None)
            part = ann(attr, q, metric, k, m) if ann is not None else None
            part = part if part is not None else _ExactPart(p, attr, q, metric, k, m)
            parts.append(_TracedPart(part, lambda i=i: self._part(i, "vector")))
            where.append(i)
        offsets = [int(self.offsets[i]) for i in where]

        def merged(results: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            pos = [np.asarray(r[0], np.int64) + o for r, o in zip(results, offsets, strict=True)]
            src = [np.full(r[0].shape[0], j, np.int64) for j, r in enumerate(results)]
            if not pos:
                e = np.empty(0, np.int64)
                return e, np.empty(0, np.float64), e
            pos_all, dist_all = np.concatenate(pos), np.concatenate([r[1] for r in results])
            top = topk_smallest(dist_all, self.id_rank()[pos_all], k)
            return pos_all[top], dist_all[top], np.concatenate(src)[top]

        results, info = plan_and_search(parts, k, target, lambda r: merged(r)[2])
        pos, dist, _ = merged(results)
        self.last_plan = info
        return pos, dist

    def bm25_scores(self, attr: str, query: str | Sequence[str], last_as_prefix: bool) -> np.ndarray:
        if not self.parts:
            return np.zeros(0, dtype=np.float64)
        stats = TermStats.total([p.bm25_local_stats(attr, query, last_as_prefix) for p in self.parts])
        return self._concat(
            [p.bm25_scores_with(attr, query, last_as_prefix, stats) for p in self.parts], np.float64
        )

    def bm25_sparse(
        self, attr: str, query: str | Sequence[str], last_as_prefix: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        if not self.parts:
            return np.zeros(0, np.int64), np.zeros(0, np.float64)
        stats = TermStats.total([p.bm25_local_stats(attr, query, last_as_prefix) for p in self.parts])
        positions, scores = [], []
        for i, (offset, p) in enumerate(zip(self.offsets[:-1], self.parts, strict=True)):
            with self._part(i, "bm25"):
                pos, sc = p.bm25_sparse_with(attr, query, last_as_prefix, stats)
            positions.append(np.asarray(pos, dtype=np.int64) + offset)
            scores.append(sc)
        return np.concatenate(positions), np.concatenate(scores)

    def bm25_topk(
        self, attr: str, query: str | Sequence[str], last_as_prefix: bool, k: int, mask: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each part's top-k superset (with ties), with the global statistics: the union holds the
        global top k."""
        if not self.parts:
            return np.zeros(0, np.int64), np.zeros(0, np.float64)
        stats = TermStats.total([p.bm25_local_stats(attr, query, last_as_prefix) for p in self.parts])
        positions, scores = [], []
        for i, (p, m) in enumerate(zip(self.parts, self._slices(mask), strict=True)):
            if m is not None and not m.any():
                continue
            with self._part(i, "bm25 top-k"):
                pos, sc = p.bm25_topk_with(attr, query, last_as_prefix, stats, k, m)
            positions.append(np.asarray(pos, dtype=np.int64) + self.offsets[i])
            scores.append(sc)
        if not positions:
            return np.zeros(0, np.int64), np.zeros(0, np.float64)
        return np.concatenate(positions), np.concatenate(scores)

    def id_rank(self) -> np.ndarray:
        def build() -> np.ndarray:
            order = sort_positions(self.column("id"))
            rank = np.empty(self._n, dtype=np.int64)
            rank[order] = np.arange(self._n, dtype=np.int64)
            rank.setflags(write=False)
            return rank

        return self._cache.get("id_rank", "", build)

    def sort_rank(self, attr: str) -> np.ndarray:
        if attr == "id":
            return self.id_rank()
        return self._cache.get("sort_rank", attr, lambda: dense_rank(self.column(attr)))

    def column(self, attr: str) -> pa.ChunkedArray:
        def build() -> pa.ChunkedArray:
            chunks: list[pa.Array] = []
            for p in self.parts:
                chunks.extend(p.column(attr).chunks)
            if chunks:
                return pa.chunked_array(chunks)
            from lagoon.schema import id_arrow_type

            if attr == "id":
                return pa.chunked_array([], type=id_arrow_type(self._schema.id_type or "uint"))
            a = self._schema.attributes[attr]
            return pa.chunked_array([], type=a.type.arrow_type())

        return self._cache.get("column", attr, build)

    def fetch_rows(self, positions: np.ndarray, attributes: Sequence[str]) -> pa.Table:
        positions = np.asarray(positions, dtype=np.int64)
        if self.parts and all(a == "id" for a in attributes):  # ids only: one take of the id column
            return pa.table({"id": self.column("id").take(pa.array(positions))})
        part_of = np.searchsorted(self.offsets, positions, side="right") - 1
        pieces: list[pa.Table] = []
        order_parts: list[np.ndarray] = []
        for i in np.unique(part_of):
            sel = np.flatnonzero(part_of == i)
            pieces.append(self.parts[i].fetch_rows(positions[sel] - self.offsets[i], attributes))
            order_parts.append(sel)
        cols = ["id", *[a for a in attributes if a != "id"]]
        if not pieces:
            return (
                self.parts[0].fetch_rows(positions, attributes)
                if self.parts
                else pa.table({c: pa.array([]) for c in cols})
            )
        table = pa.concat_tables([t.select(cols) for t in pieces], promote_options="permissive")
        if len(pieces) == 1:
            return table
        where = np.concatenate(order_parts)
        inverse = np.empty_like(where)
        inverse[where] = np.arange(where.shape[0])
        return table.take(pa.array(inverse))

    def logical_bytes(self, attributes: Sequence[str]) -> int:
        return sum(p.logical_bytes(attributes) for p in self.parts)

    def non_null_count(self, attr: str) -> int:
        return sum(p.non_null_count(attr) for p in self.parts)


class _ExactPart:
    """A part without a vector index (a WAL run, a segment without the attribute's index): its
    ANN side is an exact scan (plan.AnnPart)."""

    curve: RecallCurve | None = None

    def __init__(
        self, part: PartSource, attr: str, q: np.ndarray, metric: str, k: int, mask: np.ndarray | None
    ) -> None:
        self._p, self._args, self._mask = part, (attr, q, metric, k), mask
        self.n_cand = part.non_null_count(attr) if mask is None else int(np.count_nonzero(mask))
        self.sigma = 1.0
        self._result: tuple[np.ndarray, np.ndarray] | None = None

    def ivf_cost(self, nprobe: int) -> float:
        return float("inf")

    def exact_cost(self) -> float:
        return float(self.n_cand)

    def exact(self) -> tuple[np.ndarray, np.ndarray]:
        if self._result is None:
            attr, q, metric, k = self._args
            self._result = self._p.vector_topk(attr, q, metric, k, self._mask)
        return self._result

    def probe(self, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        return self.exact()


class _TracedPart:
    """An AnnPart whose searches run in a ``lagoon.part`` tracing span (like the other operations)."""

    def __init__(self, part: AnnPart, span: Any) -> None:
        self._p, self._span = part, span
        self.n_cand, self.curve, self.sigma = part.n_cand, part.curve, part.sigma

    def ivf_cost(self, nprobe: int) -> float:
        return self._p.ivf_cost(nprobe)

    def exact_cost(self) -> float:
        return self._p.exact_cost()

    def exact(self) -> tuple[np.ndarray, np.ndarray]:
        with self._span():
            return self._p.exact()

    def probe(self, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        with self._span():
            return self._p.probe(nprobe)
