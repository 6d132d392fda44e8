"""Composite document sources: one snapshot's live documents spread over several parts.

A snapshot's documents live in index segments (oldest first) and in runs of unindexed WAL entries
(newest last). Each part holds at most one row per id; a row is *live* when it is not a tombstone
and no newer part has a row for its id. ``CompositeSource`` presents the live rows of all parts as
one ``DocSource`` (``protocol.py``) to the query executor:

- positions are the concatenation of each part's live positions, in part order;
- filters, vector search and text search run per part (each with its own indexes) and merge;
- BM25 statistics (N, average length, document frequencies) are summed over the parts' live rows
  first, so every part scores with the statistics of the whole snapshot: the result equals a
  single-index BM25 over the live documents;
- ties and orderings use global ranks computed over the concatenated columns;
- with a ``fanout`` (``index/fanout.py``), a stage's per-part calls run at once when two or more
  of its parts may read the store (segments opened from their heads): a cold query's sequential
  round trips then do not grow with the number of segments.

Parts are restricted to their live rows before they get here (``masked.MaskedSource`` for runs of
WAL entries, ``segment.SegmentSource`` for segments). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa

from lagoon.index.bits import Bits
from lagoon.index.cache import OnceCache
from lagoon.index.cancel import checkpoint
from lagoon.index.fanout import Fanout
from lagoon.index.filters.tree import Filter
from lagoon.index.sources.planned import search_at_once
from lagoon.index.sources.protocol import DocSource
from lagoon.index.sources.ranks import dense_rank, rank_of_order, sort_positions
from lagoon.index.text.bm25 import TermStats
from lagoon.index.vector.kernels import topk_smallest
from lagoon.index.vector.plan import DEFAULT_RECALL_TARGET, AnnPart, RecallCurve, plan_and_search
from lagoon.schema import Schema
from lagoon.tracing import tracer

T = TypeVar("T")


class CompositeSource:
    """Several parts (oldest first, already restricted to live rows) as one DocSource."""

    def __init__(
        self, schema: Schema, parts: Sequence[DocSource], recall_target: float = DEFAULT_RECALL_TARGET
    ) -> None:
        self._schema = schema
        self.parts = [p for p in parts if p.num_docs > 0]
        sizes = [p.num_docs for p in self.parts]
        self.offsets = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)
        self._n = int(self.offsets[-1])
        self._cache = OnceCache()
        self.recall_target = recall_target  # for ANN queries (the namespace's ann_recall_target)
        self.last_plan: dict[str, Any] = {}
        self.fanout: Fanout | None = None  # set by the engine: per-part reads at once

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

    def _slices(self, mask: np.ndarray | Bits | None) -> list[Any]:
        """Each part's share of ``mask`` (a bool slice, or Bits for Bits; None for None)."""
        if mask is None:
            return [None] * len(self.parts)
        o = self.offsets
        if isinstance(mask, Bits):
            return [mask.slice(int(o[i]), int(o[i + 1])) for i in range(len(self.parts))]
        return [mask[o[i] : o[i + 1]] for i in range(len(self.parts))]

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

    def _each(
        self, operation: str | None, which: Sequence[int], fn: Callable[[int, DocSource], T]
    ) -> list[T]:
        """``fn(i, part)`` for the parts at indexes ``which``, each in its ``_part`` span (none for
        ``operation`` None); at once (``fanout``) when two or more of them may read the store,
        else one after another."""

        def call(i: int) -> Callable[[], T]:
            def run() -> T:
                if operation is None:
                    return fn(i, self.parts[i])
                with self._part(i, operation):
                    return fn(i, self.parts[i])

            return run

        calls = [call(i) for i in which]
        fanout = self.fanout
        if fanout is None or sum(_reads_store(self.parts[i]) for i in which) < 2:
            return [c() for c in calls]
        return fanout.map(calls)

    def _masked(self, mask: np.ndarray | Bits | None) -> list[int]:
        """Indexes of the parts with at least one document in ``mask`` (all for None)."""
        return [i for i, m in enumerate(self._slices(mask)) if m is None or m.any()]

    def filter_mask(self, flt: Filter | None) -> np.ndarray:
        if flt is None:
            return np.ones(self._n, dtype=bool)
        masks = self._each("filter", range(len(self.parts)), lambda _, p: p.filter_mask(flt))
        return self._concat(masks, bool)

    def filter_bits(self, flt: Filter | None) -> Bits:
        if flt is None:
            return Bits.full(self._n)
        parts = self._each("filter", range(len(self.parts)), lambda _, p: p.filter_bits(flt))
        return parts[0] if len(parts) == 1 else Bits.concat(parts)

    def vector_topk(
        self,
        attr: str,
        query: np.ndarray,
        metric: str,
        k: int,
        mask: np.ndarray | Bits | None,
        *,
        approximate: bool = False,
        recall_target: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact: every part's exact top-k, merged. Approximate: the parts' probes are planned
        together for the namespace's recall target (lagoon/index/vector/plan.py)."""
        if approximate:
            target = self.recall_target if recall_target is None else recall_target
            return self._ann_topk(attr, query, metric, k, mask, target)
        slices = self._slices(mask)
        which = self._masked(mask)
        found = self._each("vector", which, lambda i, p: p.vector_topk(attr, query, metric, k, slices[i]))
        positions = [
            np.asarray(pos, dtype=np.int64) + self.offsets[i]
            for i, (pos, _) in zip(which, found, strict=True)
        ]
        dists = [np.asarray(dist, dtype=np.float64) for _, dist in found]
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
        self, attr: str, query: np.ndarray, metric: str, k: int, mask: np.ndarray | Bits | None, target: float
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

        reading = sum(_reads_store(self.parts[i]) for i in where)
        if self.fanout is not None and reading >= 2:  # cold segments: each round's probes at once
            results, info = search_at_once(parts, k, target, lambda r: merged(r)[2], self.fanout)
        else:
            results, info = plan_and_search(parts, k, target, lambda r: merged(r)[2])
        pos, dist, _ = merged(results)
        self.last_plan = info
        return pos, dist

    def bm25_stats(self, attr: str, query: str | Sequence[str], last_as_prefix: bool) -> TermStats:
        every = range(len(self.parts))
        return TermStats.total(
            self._each(None, every, lambda _, p: p.bm25_stats(attr, query, last_as_prefix))
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
        """Every part scored with the statistics of the whole snapshot (summed over the parts'
        live rows unless given); with ``k``, each part's top-k superset: their union holds the
        global top k."""
        if not self.parts:
            return np.zeros(0, np.int64), np.zeros(0, np.float64)
        if stats is None:
            stats = self.bm25_stats(attr, query, last_as_prefix)
        operation = "bm25" if k is None else "bm25 top-k"
        slices = self._slices(mask)
        which = self._masked(mask)
        found = self._each(
            operation,
            which,
            lambda i, p: p.bm25(attr, query, last_as_prefix, stats=stats, k=k, mask=slices[i]),
        )
        return self._joined(which, found)

    def _joined(
        self, which: Sequence[int], found: Sequence[tuple[np.ndarray, np.ndarray]]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-part (positions, scores) of the parts ``which`` as one pair over this source's
        positions (float64 scores)."""
        if not found:
            return np.zeros(0, np.int64), np.zeros(0, np.float64)
        positions = [
            np.asarray(pos, np.int64) + self.offsets[i] for i, (pos, _) in zip(which, found, strict=True)
        ]
        scores = [np.asarray(sc, np.float64) for _, sc in found]
        return np.concatenate(positions), np.concatenate(scores)

    def sparse(
        self,
        attr: str,
        dims: np.ndarray,
        weights: np.ndarray,
        *,
        k: int | None = None,
        mask: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Every part through its own index; with ``k`` each part's superset of its k best, whose
        union holds the k best overall (dot products need no shared statistics)."""
        slices = self._slices(mask)
        which = self._masked(mask)
        found = self._each("sparse", which, lambda i, p: p.sparse(attr, dims, weights, k=k, mask=slices[i]))
        return self._joined(which, found)

    def token_match(self, attr: str, op: str, query: Any, params: Any) -> np.ndarray:
        every = range(len(self.parts))
        return self._concat(
            self._each(None, every, lambda _, p: p.token_match(attr, op, query, params)), bool
        )

    def id_rank(self) -> np.ndarray:
        return self._cache.get("id_rank", "", lambda: rank_of_order(sort_positions(self.column("id"))))

    def sort_rank(self, attr: str) -> np.ndarray:
        if attr == "id":
            return self.id_rank()
        return self._cache.get("sort_rank", attr, lambda: dense_rank(self.column(attr)))

    def column(self, attr: str) -> pa.ChunkedArray:
        def build() -> pa.ChunkedArray:
            columns = self._each(None, range(len(self.parts)), lambda _, p: p.column(attr))
            chunks = [chunk for col in columns for chunk in col.chunks]
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
        if len(self.parts) == 1:  # the part's positions are ours
            return self.parts[0].fetch_rows(positions, attributes)
        if self.parts and all(a == "id" for a in attributes):  # ids only: one take of the id column
            return pa.table({"id": self.column("id").take(pa.array(positions))})
        part_of = np.searchsorted(self.offsets, positions, side="right") - 1
        which = [int(i) for i in np.unique(part_of)]
        order_parts = [np.flatnonzero(part_of == i) for i in which]
        picked = dict(zip(which, order_parts, strict=True))
        pieces: list[pa.Table] = self._each(
            None, which, lambda i, p: p.fetch_rows(positions[picked[i]] - self.offsets[i], attributes)
        )
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

    def id_values(self, positions: np.ndarray) -> np.ndarray | pa.Array:
        positions = np.asarray(positions, dtype=np.int64)
        if len(self.parts) == 1:
            return self.parts[0].id_values(positions)
        part_of = np.searchsorted(self.offsets, positions, side="right") - 1
        pieces = [
            self.parts[i].id_values(positions[part_of == i] - self.offsets[i]) for i in range(len(self.parts))
        ]
        if all(isinstance(p, np.ndarray) for p in pieces):
            out = np.empty(positions.shape[0], np.uint64)
            for i, p in enumerate(pieces):
                out[part_of == i] = p
            return out
        return self.column("id").take(pa.array(positions))

    def logical_bytes(self, attributes: Sequence[str]) -> int:
        return sum(p.logical_bytes(attributes) for p in self.parts)

    def non_null_count(self, attr: str) -> int:
        return sum(p.non_null_count(attr) for p in self.parts)


def _reads_store(part: DocSource) -> bool:
    """May ``part`` read the object store to answer (a segment opened from its files' heads)?"""
    return bool(getattr(part, "reads_store", False))


class _ExactPart:
    """A part without a vector index (a WAL run, a segment without the attribute's index): its
    ANN side is an exact scan (plan.AnnPart)."""

    curve: RecallCurve | None = None

    def __init__(
        self, part: DocSource, attr: str, q: np.ndarray, metric: str, k: int, mask: np.ndarray | Bits | None
    ) -> None:
        self._p, self._args, self._mask = part, (attr, q, metric, k), mask
        if mask is None:
            self.n_cand = part.non_null_count(attr)
        else:
            self.n_cand = mask.count if isinstance(mask, Bits) else int(np.count_nonzero(mask))
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
