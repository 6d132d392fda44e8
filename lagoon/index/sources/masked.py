"""``MaskedSource``: a ``LiveDocs`` built over every row of a part (cached once per part),
restricted to the rows live in one snapshot without rebuilding its derived data.

The restriction is ``rows.LiveRows`` (the same one segments use); position p is base row
``rows[p]``. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from lagoon.index.bits import Bits
from lagoon.index.cache import OnceCache
from lagoon.index.filters.tree import Filter
from lagoon.index.sources.ranks import dense_rank, rank_of_order
from lagoon.index.sources.rows import LiveRows, bm25_on_rows, bm25_stats_on_rows, sparse_on_rows
from lagoon.index.sources.table import LiveDocs
from lagoon.index.text.bm25 import TermStats
from lagoon.schema import Schema


class MaskedSource:
    """The rows of ``base`` where ``live`` is set, as a ``DocSource``."""

    def __init__(self, base: LiveDocs, live: np.ndarray) -> None:
        self.base = base
        self.rows = LiveRows(np.asarray(live, dtype=bool))
        self._cache = OnceCache()

    @property
    def schema(self) -> Schema:
        return self.base.schema

    @property
    def num_docs(self) -> int:
        return self.rows.n

    def filter_mask(self, flt: Filter | None) -> np.ndarray:
        if flt is None:
            return np.ones(self.num_docs, dtype=bool)
        return self.rows.restrict(self.base.filter_mask(flt))

    def filter_bits(self, flt: Filter | None) -> Bits:
        return Bits.full(self.num_docs) if flt is None else Bits.from_mask(self.filter_mask(flt))

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
        cand = self.rows.row_mask(mask.mask if isinstance(mask, Bits) else mask)
        pos, dist = self.base.vector_topk(attr, query, metric, k, cand, approximate=approximate)
        return self.rows.positions(pos), dist

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
        text = self.base.text_index(attr)
        return bm25_on_rows(text, self.rows, query, last_as_prefix, stats=stats, k=k, mask=mask)

    def bm25_stats(self, attr: str, query: str | Sequence[str], last_as_prefix: bool) -> TermStats:
        return bm25_stats_on_rows(self.base.text_index(attr), self.rows, query, last_as_prefix)

    def token_match(self, attr: str, op: str, query: Any, params: Any) -> np.ndarray:
        return self.rows.restrict(self.base.token_match(attr, op, query, params))

    def sparse(
        self,
        attr: str,
        dims: np.ndarray,
        weights: np.ndarray,
        *,
        k: int | None = None,
        mask: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        return sparse_on_rows(self.base.sparse_index(attr), self.rows, dims, weights, k=k, mask=mask)

    def id_rank(self) -> np.ndarray:
        if self.rows.all_live:
            return self.base.id_rank()
        return self._cache.get(
            "id_rank", "", lambda: rank_of_order(np.argsort(self.rows.restrict(self.base.id_rank())))
        )

    def sort_rank(self, attr: str) -> np.ndarray:
        if attr == "id":
            return self.id_rank()
        if self.rows.all_live:
            return self.base.sort_rank(attr)
        return self._cache.get("sort_rank", attr, lambda: dense_rank(self.column(attr)))

    def column(self, attr: str) -> pa.ChunkedArray:
        if self.rows.all_live:
            return self.base.column(attr)
        return self._cache.get("column", attr, lambda: self.base.column(attr).take(pa.array(self.rows.rows)))

    def fetch_rows(self, positions: np.ndarray, attributes: Sequence[str]) -> pa.Table:
        return self.base.fetch_rows(self.rows.rows_of(positions), attributes)

    def id_values(self, positions: np.ndarray) -> np.ndarray | pa.Array:
        return self.base.id_values(self.rows.rows_of(positions))

    def logical_bytes(self, attributes: Sequence[str]) -> int:
        total = self.base.logical_bytes(attributes)
        n = self.base.num_docs
        return total if self.rows.all_live or n == 0 else int(total * self.num_docs / n)

    def non_null_count(self, attr: str) -> int:
        if self.rows.all_live:
            return self.base.non_null_count(attr)
        return self.num_docs - int(self.column(attr).null_count)


__all__ = ["MaskedSource"]
