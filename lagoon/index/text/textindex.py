"""The full-text index of one attribute over a snapshot's documents: BM25 scores and token filters.

Built once per (snapshot, attribute) from the attribute's ``full_text_search`` options with
``lagoon.index.text`` (``Analyzer`` + ``build_postings`` with positions) and then shared by every
query: a BM25 query or token filter only touches the postings of its own terms, never the text.
Corpus statistics (N, average length, df) are taken over all documents of the index, so filters
never change scores. Pure: values in, arrays out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from lagoon.errors import InternalError
from lagoon.index.text.analyze import Analyzer
from lagoon.index.text.blockpostings import BlockPostings, block_topk
from lagoon.index.text.bm25 import (
    TermIndex,
    TermStats,
    build_postings,
    contains_all_tokens,
    contains_any_token,
    contains_token_sequence,
    corpus_stats,
    distinct_terms,
    local_stats,
    score_query,
    score_query_topk,
)
from lagoon.schema import FtsConfig, Schema


class TextIndex:
    """Analyzer + postings of one attribute; document ordinal i is snapshot position i."""

    def __init__(
        self, attr: str, config: FtsConfig, postings: TermIndex, analyzer: Analyzer | None = None
    ) -> None:
        self.attr = attr
        self.config = config
        self.analyzer = analyzer or Analyzer(config)
        self.postings = postings

    @property
    def num_docs(self) -> int:
        return self.postings.n_docs

    def stats(
        self, query: str | Sequence[str], *, last_as_prefix: bool = False, live: np.ndarray | None = None
    ) -> TermStats:
        """This index's share (over ``live`` documents) of the corpus statistics of ``query``."""
        q = self.analyzer.query(query, last_as_prefix=last_as_prefix)
        if live is not None:  # document frequencies over live rows decode the postings
            self._prefetch(q.terms)
        return local_stats(self.postings, q.terms, live)

    def _prefetch(self, terms: Sequence[str], *, positions: bool = False) -> None:
        """Postings opened from a file's head: fetch the pages of all terms in one round."""
        if isinstance(self.postings, BlockPostings):
            self.postings.prefetch(terms, positions=positions)

    def bm25(
        self,
        query: str | Sequence[str],
        *,
        last_as_prefix: bool = False,
        stats: TermStats | None = None,
        live: np.ndarray | None = None,
    ) -> np.ndarray:
        """float64[num_docs]: the BM25 score of every document (0 where no term matches or the
        document is not ``live``). ``stats`` are global statistics (summed over every source of a
        snapshot); None = this index's own, over ``live``."""
        out = np.zeros(self.num_docs, dtype=np.float64)
        docs, scores = self.bm25_sparse(query, last_as_prefix=last_as_prefix, stats=stats, live=live)
        out[docs] = scores
        return out

    def bm25_sparse(
        self,
        query: str | Sequence[str],
        *,
        last_as_prefix: bool = False,
        stats: TermStats | None = None,
        live: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The documents ``bm25`` scores above 0: (ordinals ascending, int64; float64 scores)."""
        q = self.analyzer.query(query, last_as_prefix=last_as_prefix)
        if q.is_empty:
            return np.zeros(0, np.int64), np.zeros(0, np.float64)
        self._prefetch(q.terms)
        if stats is None:
            stats = local_stats(self.postings, q.terms, live)
        return score_query(
            self.postings,
            q.terms,
            live,
            stats,
            prefixes=q.prefixes,
            k1=self.config.k1,
            b=self.config.b,
            k3=self.config.k3,
        )

    def bm25_topk(
        self,
        query: str | Sequence[str],
        k: int,
        stats: TermStats | None = None,
        candidates: np.ndarray | None = None,
        *,
        last_as_prefix: bool = False,
        live: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """A superset of the ``k`` best documents among ``candidates`` with their exact scores
        (``score_query_topk``). ``stats`` None: this index's own, over ``live`` documents (None:
        all). The query is analysed, and its terms looked up, once."""
        q = self.analyzer.query(query, last_as_prefix=last_as_prefix)
        if q.is_empty:
            return np.zeros(0, np.int64), np.zeros(0, np.float64)
        terms, _ = distinct_terms(q.terms)
        tids = [self.postings.term_id(t) for t in terms]
        if stats is None:
            if live is not None:  # document frequencies over live rows decode the postings
                self._prefetch(q.terms)
            stats = _stats_of(self.postings, terms, tids, live)
        if isinstance(self.postings, BlockPostings):
            return block_topk(
                self.postings,
                q.terms,
                k,
                stats,
                candidates,
                prefixes=q.prefixes,
                k1=self.config.k1,
                b=self.config.b,
                k3=self.config.k3,
                term_ids=tids,
            )
        return score_query_topk(
            self.postings,  # type: ignore[arg-type]
            q.terms,
            k,
            stats,
            candidates,
            prefixes=q.prefixes,
            k1=self.config.k1,
            b=self.config.b,
            k3=self.config.k3,
        )

    def match(self, op: str, query: str | Sequence[str], params: dict[str, Any]) -> np.ndarray:
        """bool[num_docs] for ContainsAllTokens / ContainsAnyToken / ContainsTokenSequence."""
        q = self.analyzer.query(query, last_as_prefix=bool(params.get("last_as_prefix", False)))
        self._prefetch(q.terms, positions=op == "ContainsTokenSequence")
        if op == "ContainsAllTokens":
            return contains_all_tokens(self.postings, q.terms, prefixes=q.prefixes)
        if op == "ContainsAnyToken":
            return contains_any_token(self.postings, q.terms, prefixes=q.prefixes)
        if op == "ContainsTokenSequence":
            return contains_token_sequence(self.postings, q.terms)
        raise InternalError(f"token matcher: unknown operator {op!r}")


def _stats_of(
    postings: TermIndex, terms: Sequence[str], tids: Sequence[int | None], live: np.ndarray | None
) -> TermStats:
    """``local_stats`` of distinct ``terms`` whose term ids (``tids``) are already known."""
    if live is not None and (live.shape != (postings.n_docs,) or live.dtype != np.bool_):
        raise InternalError(f"live must be bool[{postings.n_docs}]; got {live.dtype}{live.shape}")
    n, total = corpus_stats(postings, live)
    df = np.zeros(len(terms), np.int64)
    for i, tid in enumerate(tids):
        if tid is not None:
            df[i] = postings.df(tid) if live is None else postings.live_df(tid, live)
    return TermStats(tuple(terms), n, total, df)


def build_text_index(schema: Schema, attr: str, column: pa.ChunkedArray | pa.Array) -> TextIndex:
    """Tokenize every value of ``column`` with ``attr``'s options and build its postings."""
    a = schema.get(attr)
    if a is None or a.full_text_search is None:
        raise InternalError(f"attribute {attr!r} has no full-text index")
    config = FtsConfig.from_json(a.full_text_search, attribute=attr)
    if config is None:
        raise InternalError(f"attribute {attr!r} has full_text_search disabled")
    analyzer = Analyzer(config)
    values = column.to_pylist()
    postings = build_postings(analyzer.tokenize_many(values), with_positions=True)
    return TextIndex(attr, config, postings)
