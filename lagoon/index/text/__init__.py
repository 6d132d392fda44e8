"""Full-text search: analysis (``analyze``), postings and BM25 scoring (``bm25``), the per-attribute
text index (``textindex``) and the postings codec (``postings``). The options an attribute is
analysed with are ``lagoon.schema.FtsConfig``.

Pure algorithms on values and numpy arrays: no I/O, no asyncio, no storage imports. The engine
builds ``Postings`` per segment and for the WAL tail, sums ``local_stats`` over them (live
documents only) and scores each with the shared ``TermStats``. ``docs/bm25.md`` states the
formula and every analysis decision. ``corpus`` is a test/benchmark data generator, not used at
run time.
"""

from lagoon.index.text.analyze import AnalyzedQuery, Analyzer, TokenBatch
from lagoon.index.text.bm25 import (
    PREFIX_SCORE,
    Postings,
    TermStats,
    build_postings,
    contains_all_tokens,
    contains_any_token,
    contains_token_sequence,
    corpus_stats,
    distinct_terms,
    idf,
    local_stats,
    merge_postings,
    query_weight,
    score,
    score_query,
    term_df,
    top_k,
)

__all__ = [
    "PREFIX_SCORE",
    "AnalyzedQuery",
    "Analyzer",
    "Postings",
    "TermStats",
    "TokenBatch",
    "build_postings",
    "contains_all_tokens",
    "contains_any_token",
    "contains_token_sequence",
    "corpus_stats",
    "distinct_terms",
    "idf",
    "local_stats",
    "merge_postings",
    "query_weight",
    "score",
    "score_query",
    "term_df",
    "top_k",
]
