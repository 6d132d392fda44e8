"""The ``Highlight`` computed attribute: the best fragments of a full-text attribute per row.

For each returned row, the attribute's text (each element, for ``[]string``) is cut into
fragments (``fragment_by``: sentence by default, paragraph, word, or none; see
``lagoon/index/text/highlight.py``). The fragments are ranked by ``rank_fragments_by`` (default:
the query's own BM25 clauses on the attribute), a BM25 expression over ``$fragment`` evaluated with
**the row's fragments as the corpus** (N = fragments with a token, df and avgdl among them, the
attribute's k1/b/k3), so a fragment that holds more of the rarer query terms ranks first. Fragments
scoring 0 are dropped; the best ``fragment_limit`` (default 3) are returned, best first (ties:
earlier element, then earlier in the text), as ``{"text": …}``. With ``include_offsets`` each also
has ``fragment_range`` ``[start, end)`` and ``match_ranges`` (the tokens whose analysed term is a
query term, or starts with a ``last_as_prefix`` prefix) in that unit (``utf-8`` bytes, ``utf-16``
code units or ``codepoints``) and, for arrays, ``array_index``. A row without text gets ``[]``.
Cost: analysis of the returned rows' values only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lagoon.errors import InternalError
from lagoon.index.sources.protocol import DocSource
from lagoon.index.text.analyze import Analyzer
from lagoon.index.text.bm25 import build_postings
from lagoon.index.text.highlight import fragment_spans, offset_in, token_spans
from lagoon.index.text.textindex import TextIndex
from lagoon.schema import FtsConfig
from lagoon.wire.query import BM25Clause, HighlightExpr, MaxClause, ProductClause, ScoreClause, SumClause


def highlight_rows(src: DocSource, expr: HighlightExpr, positions: np.ndarray) -> list[list[dict[str, Any]]]:
    a = src.schema.get(expr.attr)
    config = (
        FtsConfig.from_json(a.full_text_search, attribute=expr.attr) if a and a.full_text_search else None
    )
    if a is None or config is None:
        raise InternalError(f"Highlight: {expr.attr!r} has no full-text index")
    analyzer = Analyzer(config)
    is_array = a.type.array
    terms, prefixes = _query_terms(expr.clause, analyzer)
    values = src.fetch_rows(positions, [expr.attr]).column(expr.attr).to_pylist()
    return [_highlight(v, expr, config, analyzer, terms, prefixes, is_array=is_array) for v in values]


def _highlight(
    value: Any,
    expr: HighlightExpr,
    config: FtsConfig,
    analyzer: Analyzer,
    terms: frozenset[str],
    prefixes: tuple[str, ...],
    *,
    is_array: bool,
) -> list[dict[str, Any]]:
    inputs: list[str] = [value] if isinstance(value, str) else [x for x in value or [] if isinstance(x, str)]
    frags: list[tuple[int, int, int]] = []  # (input index, start, end)
    tokens = [token_spans(text, analyzer) for text in inputs]
    for i, text in enumerate(inputs):
        frags.extend((i, s, e) for s, e in fragment_spans(text, expr.fragment_by, tokens[i]))
    if not frags:
        return []
    texts = [inputs[i][s:e] for i, s, e in frags]
    index = TextIndex(
        "$fragment", config, build_postings(analyzer.analyze_many(texts), with_positions=False), analyzer
    )
    scores = _score(expr.clause, index)
    order = sorted(
        (k for k in range(len(frags)) if scores[k] > 0),
        key=lambda k: (-scores[k], frags[k][0], frags[k][1]),
    )[: expr.fragment_limit]
    out: list[dict[str, Any]] = []
    for k in order:
        i, s, e = frags[k]
        item: dict[str, Any] = {"text": texts[k]}
        unit = expr.include_offsets
        if unit is not None:
            text = inputs[i]
            item["fragment_range"] = [offset_in(text, s, unit), offset_in(text, e, unit)]
            item["match_ranges"] = [
                [offset_in(text, ts, unit), offset_in(text, te, unit)]
                for ts, te, term in tokens[i]
                if s <= ts and te <= e and (term in terms or any(term.startswith(p) for p in prefixes))
            ]
            if is_array:
                item["array_index"] = i
        out.append(item)
    return out


def _score(c: ScoreClause, index: TextIndex) -> np.ndarray:
    """float64[fragments]: a $fragment rank expression (BM25 combined by Sum, Max, Product)."""
    if isinstance(c, BM25Clause):
        return index.bm25(c.query, last_as_prefix=c.last_as_prefix)
    if isinstance(c, ProductClause):
        return _score(c.clause, index) * c.weight
    if isinstance(c, SumClause):
        return np.sum([_score(x, index) for x in c.clauses], axis=0)  # type: ignore[no-any-return]
    if isinstance(c, MaxClause):
        return np.max([_score(x, index) for x in c.clauses], axis=0)  # type: ignore[no-any-return]
    raise InternalError(f"Highlight: unsupported fragment clause {type(c).__name__}")  # parser refuses


def _query_terms(c: ScoreClause, analyzer: Analyzer) -> tuple[frozenset[str], tuple[str, ...]]:
    terms: set[str] = set()
    prefixes: list[str] = []
    stack = [c]
    while stack:
        x = stack.pop()
        if isinstance(x, BM25Clause):
            q = analyzer.query(x.query, last_as_prefix=x.last_as_prefix)
            terms.update(q.terms)
            prefixes.extend(q.prefixes)
        elif isinstance(x, SumClause | MaxClause):
            stack.extend(x.clauses)
        elif isinstance(x, ProductClause):
            stack.append(x.clause)
    return frozenset(terms), tuple(prefixes)
