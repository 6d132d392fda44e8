"""Exact query execution over a snapshot: filters, ranking, paging, rows, multi-query fusion.

``execute_query(req, live)`` returns the wire response body of ``POST /v2/namespaces/{ns}/query``
minus the fields the caller owns (``performance.cache_hit_ratio``, ``cache_temperature``,
``server_total_ms``). It reads the snapshot only through the ``DocSource`` protocol, so the same
executor can run over an index-backed source.

Semantics (docs/query.md has the user-facing version):
- filters are applied first; every ranking only sees matching documents;
- vector rank: exact nearest neighbours for both ANN and kNN; ``$dist`` is cosine distance
  (1 − cos) or squared euclidean; documents without a vector are excluded;
- sparse rank (SparseKNN): dot product, highest first, ``$dist`` = the dot product; only
  documents sharing a dimension with the query;
- score rank (BM25, Sum, Max, Product, filters-as-scores): highest first, ``$dist`` = score,
  documents scoring 0 are excluded; BM25 statistics cover all live documents, not just the filtered;
- order by attributes: nulls first ascending and last descending, no ``$dist``;
- every tie is broken by ascending id, so results are deterministic; offset applies after ranking.
Nothing here loops over documents in Python: per-row Python work happens only while building the
returned rows (at most offset + limit of them).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from lagoon.errors import InternalError, InvalidRequest
from lagoon.index.fusion import rrf_fuse
from lagoon.index.sources.protocol import DocSource, dense_scores
from lagoon.index.vector.kernels import exact_dist, topk_smallest
from lagoon.index.vector.late import late_interaction_distances
from lagoon.query.aggregate import group_codes, run_aggregation
from lagoon.query.highlight import highlight_rows
from lagoon.schema import AttrType
from lagoon.values import arrow_value_to_json, id_to_json
from lagoon.wire.query import (
    AttributeClause,
    BM25Clause,
    ConstClause,
    DistClause,
    EmbedExpr,
    FilterClause,
    HighlightExpr,
    LateInteractionRank,
    MaxClause,
    MultiQueryRequest,
    OrderBy,
    PerLimit,
    ProductClause,
    QueryRequest,
    SaturateClause,
    ScoreClause,
    ScoreExpr,
    ScoreRank,
    SparseRank,
    SumClause,
    VectorDistExpr,
    VectorRank,
)

_DIST_BYTES = 8
# rows are fetched in slices of this many when the rows a query returns are estimated above
# _SLICED_FETCH_BYTES, so one query's rows stop at the budget, not after they are all in memory
_FETCH_SLICE_ROWS = 1024
_SLICED_FETCH_BYTES = 32 << 20


@dataclass(frozen=True, slots=True)
class Ranked:
    """A ranked result before rows are built: positions in rank order, ``$dist`` or None."""

    positions: np.ndarray  # int64
    dists: np.ndarray | None  # float64, aligned with positions; None for order-by


@dataclass(slots=True)
class _Stats:
    bytes_queried: int = 0
    bytes_returned: int = 0
    exhaustive: int = 0
    max_returned: int = 0  # limits.max_returned_bytes over the whole request; 0 = no limit

    def charge(self, nbytes: int, *, count: bool = True, about: bool = False) -> None:
        """Count ``nbytes`` of returned rows, or refuse the request when they take it past the
        budget (``count=False``: only check, e.g. an estimate before the rows are fetched)."""
        total = self.bytes_returned + nbytes
        if self.max_returned and total > self.max_returned:
            raise InvalidRequest(
                f"the query would return {'about' if about else 'at least'} {total:,} bytes of rows, more "
                f"than the server's limit of {self.max_returned:,} (limits.max_returned_bytes); ask for fewer "
                "rows (top_k, limit; a multi-query counts all its queries) or fewer attributes "
                "(include_attributes, exclude_attributes)"
            )
        if count:
            self.bytes_returned = total


def execute_query(
    req: QueryRequest | MultiQueryRequest, live: DocSource, max_returned_bytes: int = 0
) -> dict[str, Any]:
    """Run a query or multi-query against one snapshot; returns the response body.
    ``max_returned_bytes``: the most logical bytes of rows (``billable_logical_bytes_returned``)
    the request may return (0: no limit); past it the request is a 400."""
    start = time.perf_counter()
    stats = _Stats(max_returned=max_returned_bytes)
    body: dict[str, Any]
    if isinstance(req, MultiQueryRequest):
        body = _execute_multi(req, live, stats)
    else:
        body = _execute_one(req, live, stats)
    elapsed_ms = (time.perf_counter() - start) * 1000.0
    body["billing"] = {
        "billable_logical_bytes_queried": stats.bytes_queried,
        "billable_logical_bytes_returned": stats.bytes_returned,
    }
    body["performance"] = {
        "approx_namespace_size": live.num_docs,
        "exhaustive_search_count": stats.exhaustive,
        "query_execution_ms": round(elapsed_ms),
    }
    return body


# --------------------------------------------------------------------------------------------- single


def _execute_one(req: QueryRequest, src: DocSource, stats: _Stats) -> dict[str, Any]:
    _account_scan(req, src, stats)
    if req.is_aggregation:
        mask = src.filter_mask(req.filters)
        out = run_aggregation(req, src, mask)
        stats.bytes_returned += (
            _DIST_BYTES * len(req.aggregations) * max(1, len(out.get("aggregation_groups", [])))
        )
        return out
    ranked = rank(req, src)
    rows = build_rows(src, ranked, req.include, req.vector_encoding, stats)
    if req.computed:
        add_computed(rows, req, src, ranked.positions)
    return {"rows": rows}


def add_computed(
    rows: list[dict[str, Any]], req: QueryRequest, src: DocSource, positions: np.ndarray
) -> None:
    """Set each of ``req.computed`` on ``rows`` (the documents at ``positions``)."""
    if not rows:
        return
    pos = np.asarray(positions, dtype=np.int64)
    for name, expr in req.computed:
        values: list[Any]
        if isinstance(expr, VectorDistExpr):
            values = _vector_dists(src, expr, pos)
        elif isinstance(expr, ScoreExpr):
            scores = _scores_at(expr.clause, src, pos)
            values = [None if np.isnan(x) else float(x) for x in scores.tolist()]
        elif isinstance(expr, HighlightExpr):
            values = highlight_rows(src, expr, pos)
        elif isinstance(expr, EmbedExpr):
            values = [expr.vector.tolist()] * len(rows)
        else:  # pragma: no cover - the parser produces no other expression
            raise InternalError(f"compute_attributes: unsupported expression {type(expr).__name__}")
        for row, v in zip(rows, values, strict=True):
            row[name] = v


def _scores_at(c: ScoreClause, src: DocSource, pos: np.ndarray) -> np.ndarray:
    """The clause's scores at ``pos``: from the documents a text clause scores (sparse) when it
    is made of BM25 clauses only, else from the dense scores."""
    sparse = sparse_clause(c, src)
    if sparse is None:
        dense: np.ndarray = score_clause(c, src)[pos]
        return dense
    cand, sc = sparse
    out = np.zeros(pos.shape[0], dtype=np.float64)
    if cand.size:
        i = np.minimum(np.searchsorted(cand, pos), cand.size - 1)
        hit = cand[i] == pos
        out[hit] = sc[i[hit]]
    return out


def _vector_dists(src: DocSource, expr: VectorDistExpr, pos: np.ndarray) -> list[Any]:
    col = src.fetch_rows(pos, [expr.attr]).column(expr.attr)
    out: list[Any] = []
    for v in col.to_pylist():
        if v is None:
            out.append(None)
            continue
        m = np.asarray(v, dtype=np.float32).reshape(1, -1)
        out.append(float(exact_dist(m, expr.vector, expr.metric)[0]))
    return out


def _account_scan(req: QueryRequest, src: DocSource, stats: _Stats) -> None:
    attrs = set(req.filters.attributes()) if req.filters is not None else set()
    attrs |= ranking_attributes(req)
    attrs |= {a.attr for a in req.aggregations if a.attr is not None}
    attrs |= set(req.group_by)
    stats.bytes_queried += src.logical_bytes(sorted(attrs))
    stats.exhaustive += src.num_docs


def ranking_attributes(req: QueryRequest) -> set[str]:
    r = req.rank_by
    if isinstance(r, VectorRank | SparseRank | LateInteractionRank):
        return {r.attr}
    if isinstance(r, OrderBy):
        return {k.attr for k in r.keys} | (set(req.per.attributes) if req.per else set())
    if isinstance(r, ScoreRank):
        return _clause_attributes(r.clause)
    return set()


def _clause_attributes(c: ScoreClause) -> set[str]:
    if isinstance(c, BM25Clause | AttributeClause | DistClause):
        return {c.attr}
    if isinstance(c, ConstClause):
        return set()
    if isinstance(c, SaturateClause):
        return _clause_attributes(c.clause)
    if isinstance(c, FilterClause):
        return set(c.filter.attributes())
    if isinstance(c, ProductClause):
        return _clause_attributes(c.clause)
    out: set[str] = set()
    for sub in c.clauses:
        out |= _clause_attributes(sub)
    return out


def rank(req: QueryRequest, src: DocSource) -> Ranked:
    """Filter, rank and page one (non-aggregation) query: rank positions offset..offset+limit."""
    r = req.rank_by
    want = req.offset + req.limit
    if isinstance(r, VectorRank):
        bits = src.filter_bits(req.filters) if req.filters is not None else None  # packed: the probe's input
        pos, dist = src.vector_topk(r.attr, r.vector, r.metric, want, bits, approximate=r.mode == "ANN")
        return Ranked(pos[req.offset :], r.dist(dist)[req.offset :])
    if isinstance(r, LateInteractionRank):  # exact scan: every document with a value
        dist = late_interaction_distances(src.column(r.attr), r.queries, r.metric, r.dims)
        keep = np.isfinite(dist)
        if req.filters is not None:
            keep &= src.filter_mask(req.filters)
        cand = np.flatnonzero(keep)
        top = topk_smallest(dist[cand], src.id_rank()[cand], want)
        return Ranked(cand[top][req.offset :], dist[cand][top][req.offset :])
    if isinstance(r, SparseRank):  # dot product, highest first; only documents sharing a dimension
        mask = src.filter_mask(req.filters) if req.filters is not None else None
        cand, sc = src.sparse(r.attr, r.dims, r.weights, k=want, mask=mask)
        top = topk_smallest(-sc, src.id_rank()[cand], want)
        return Ranked(cand[top][req.offset :], sc[top][req.offset :])
    if isinstance(r, ScoreRank):
        mask = src.filter_mask(req.filters) if req.filters is not None else None
        single = _single_bm25(r.clause)
        if single is not None:  # one BM25 clause (scaled): only its top-k candidates are scored
            clause, weights = single
            cand, sc = src.bm25(clause.attr, clause.query, clause.last_as_prefix, k=want, mask=mask)
            for w in weights:  # as score_clause applies them: innermost first
                sc = sc * w
            keep = sc > 0
        elif (sparse := sparse_clause(r.clause, src)) is not None:  # only documents that score
            cand, sc = sparse
            keep = sc > 0
            if mask is not None:
                keep &= mask[cand]
        else:  # filters or attributes as scores: every document may score
            scores = score_clause(r.clause, src)
            selected = returned_rows(r.clause, scores, src)
            if mask is not None:
                selected &= mask
            cand = np.flatnonzero(selected)
            sc, keep = scores[cand], np.ones(cand.shape[0], dtype=bool)
        cand, sc = cand[keep], sc[keep]
        top = topk_smallest(-sc, src.id_rank()[cand], want)
        return Ranked(cand[top][req.offset :], sc[top][req.offset :])
    if isinstance(r, OrderBy):
        mask = src.filter_mask(req.filters)
        pos = order_positions(src, r, np.flatnonzero(mask), want, req.per)
        return Ranked(pos[req.offset :], None)
    raise InternalError(f"rank: unsupported ranking {type(r).__name__}")


def _single_bm25(c: ScoreClause) -> tuple[BM25Clause, list[float]] | None:
    """A BM25 clause, possibly inside Products (their weights, innermost first), or None."""
    weights: list[float] = []
    while isinstance(c, ProductClause):
        weights.insert(0, c.weight)
        c = c.clause
    return (c, weights) if isinstance(c, BM25Clause) else None


def sparse_clause(c: ScoreClause, src: DocSource) -> tuple[np.ndarray, np.ndarray] | None:
    """The clause's scores as (positions ascending and distinct, float64 scores) of the documents
    any BM25 term matches: the same numbers as ``score_clause`` there (sums add in the same order),
    with every other document scoring 0. None when the clause uses a filter as a score (that
    scores documents no term matches: the dense path)."""
    if isinstance(c, BM25Clause):
        return src.bm25(c.attr, c.query, c.last_as_prefix)
    if isinstance(c, ProductClause):
        inner = sparse_clause(c.clause, src)
        return None if inner is None else (inner[0], inner[1] * c.weight)
    if isinstance(c, SumClause | MaxClause):
        parts = [sparse_clause(sub, src) for sub in c.clauses]
        if any(p is None for p in parts):
            return None
        pos = np.concatenate([p[0] for p in parts if p is not None])
        sc = np.concatenate([p[1] for p in parts if p is not None])
        uniq, inverse = np.unique(pos, return_inverse=True)
        if isinstance(c, SumClause):
            return uniq, np.bincount(inverse, weights=sc, minlength=uniq.shape[0])
        out = np.full(uniq.shape[0], -np.inf)
        np.maximum.at(out, inverse, sc)
        # a document missing from some part scores 0 there (as in the dense maximum)
        partial = np.bincount(inverse, minlength=uniq.shape[0]) < len(parts)
        out[partial] = np.maximum(out[partial], 0.0)
        return uniq, out
    return None


def uses_attributes(c: ScoreClause) -> bool:
    """Whether an Attribute or Dist appears in ``c`` (such scores rank every document)."""
    if isinstance(c, AttributeClause | DistClause):
        return True
    if isinstance(c, SumClause | MaxClause):
        return any(uses_attributes(x) for x in c.clauses)
    if isinstance(c, ProductClause | SaturateClause):
        return uses_attributes(c.clause)
    return False


def matches(c: ScoreClause, src: DocSource) -> np.ndarray:
    """bool[num_docs]: documents some text or filter clause of ``c`` matches (number floors and
    Saturate/Decay do not make a document match)."""
    if isinstance(c, SumClause | MaxClause):
        out = np.zeros(src.num_docs, dtype=bool)
        for x in c.clauses:
            if not isinstance(x, ConstClause):
                out |= matches(x, src)
        return out
    if isinstance(c, ProductClause | SaturateClause):
        return matches(c.clause, src)
    if isinstance(c, FilterClause):
        return src.filter_mask(c.filter)
    return score_clause(c, src) > 0


def returned_rows(c: ScoreClause, scores: np.ndarray, src: DocSource) -> np.ndarray:
    """Which documents a score ranking returns: with Attribute/Dist every document that has a
    score (Dist excludes documents without a value: NaN); otherwise the documents a clause
    matches (the number in ``["Max", [0, …]]`` lifts every score but matches nothing), which for
    plain BM25 and filter scores means the documents scoring above 0."""
    out: np.ndarray
    if uses_attributes(c):
        out = ~np.isnan(scores)
    elif _has_floor(c):
        out = matches(c, src) & (scores > 0)
    else:
        out = scores > 0
    return out


def _has_floor(c: ScoreClause) -> bool:
    if isinstance(c, MaxClause):
        return any(isinstance(x, ConstClause) or _has_floor(x) for x in c.clauses)
    if isinstance(c, SumClause):
        return any(_has_floor(x) for x in c.clauses)
    if isinstance(c, ProductClause | SaturateClause):
        return _has_floor(c.clause)
    return False


def _numeric_column(src: DocSource, attr: str) -> np.ndarray:
    """float64[num_docs] of a numeric or datetime (ms) column; NaN where null."""
    col = src.column(attr)
    arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if pa.types.is_timestamp(arr.type):
        arr = arr.cast(pa.int64())
    if pa.types.is_null(arr.type):
        return np.full(len(arr), np.nan)
    out = arr.cast(pa.float64()).to_numpy(zero_copy_only=False)
    return np.array(out, dtype=np.float64)  # nulls come back as NaN


def score_clause(c: ScoreClause, src: DocSource) -> np.ndarray:
    """float64[num_docs]: the clause's score for every document (a fresh, writable array); NaN
    marks a document a Dist excludes."""
    if isinstance(c, ConstClause):
        return np.full(src.num_docs, c.value, dtype=np.float64)
    if isinstance(c, AttributeClause):
        values = _numeric_column(src, c.attr)
        values[np.isnan(values)] = 0.0
        return values
    if isinstance(c, DistClause):
        return np.abs(_numeric_column(src, c.attr) - c.origin)
    if isinstance(c, SaturateClause):
        x = np.maximum(score_clause(c.clause, src), 0.0)
        with np.errstate(over="ignore", invalid="ignore"):
            xe = np.power(x, c.exponent)
            me = c.midpoint**c.exponent
            out = (me if c.decay else xe) / (xe + me)
        result: np.ndarray = np.asarray(out, dtype=np.float64)
        result[np.isinf(xe)] = 0.0 if c.decay else 1.0
        return result
    if isinstance(c, BM25Clause):
        return dense_scores(src.num_docs, *src.bm25(c.attr, c.query, c.last_as_prefix))
    if isinstance(c, FilterClause):
        return src.filter_mask(c.filter).astype(np.float64)
    if isinstance(c, ProductClause):
        out = score_clause(c.clause, src)
        out *= c.weight
        return out
    if isinstance(c, SumClause):
        out = score_clause(c.clauses[0], src)
        for sub in c.clauses[1:]:
            out += score_clause(sub, src)
        return out
    if isinstance(c, MaxClause):
        out = score_clause(c.clauses[0], src)
        for sub in c.clauses[1:]:
            np.maximum(out, score_clause(sub, src), out=out)
        return out
    raise InternalError(f"score_clause: unsupported clause {type(c).__name__}")


def order_positions(
    src: DocSource, order: OrderBy, cand: np.ndarray, want: int, per: PerLimit | None
) -> np.ndarray:
    """The first ``want`` of ``cand`` ordered by ``order`` (nulls lowest, ties by id), diversified
    by ``per`` when given."""
    if cand.size == 0:
        return cand.astype(np.int64)
    id_rank = src.id_rank()[cand]
    keys = [_directed_rank(src, k.attr, k.descending)[cand] for k in order.keys]
    if per is None and len(keys) == 1:
        n = src.num_docs + 1
        composite = keys[0] * n + id_rank  # ranks and id ranks are < n: unique, fits int64
        top = topk_smallest(composite, id_rank, want)
        return np.asarray(cand[top], dtype=np.int64)
    full = np.lexsort((id_rank, *reversed(keys)))
    ordered = cand[full]
    if per is not None:
        ordered = ordered[_within_group_rank(src, per.attributes, ordered) < per.limit]
    return ordered[:want]


def _directed_rank(src: DocSource, attr: str, descending: bool) -> np.ndarray:
    """Ascending sort key: the value rank (nulls lowest) or its mirror for descending (nulls highest)."""
    r = src.sort_rank(attr)
    if not descending:
        return r
    return int(r.max(initial=0)) - r


def _within_group_rank(src: DocSource, attrs: Sequence[str], ordered: np.ndarray) -> np.ndarray:
    """For positions in final order, each one's 0-based index among earlier rows with the same key."""
    codes = group_codes(src, attrs, ordered)
    by_code = np.argsort(codes, kind="stable")
    sc = codes[by_code]
    starts = np.flatnonzero(np.r_[True, sc[1:] != sc[:-1]])
    lengths = np.diff(np.r_[starts, sc.size])
    within_sorted = np.arange(sc.size) - np.repeat(starts, lengths)
    within = np.empty_like(within_sorted)
    within[by_code] = within_sorted
    return within


# --------------------------------------------------------------------------------------------- rows


def build_rows(
    src: DocSource, ranked: Ranked, include: Sequence[str], vector_encoding: str, stats: _Stats | None = None
) -> list[dict[str, Any]]:
    """The response rows: ``id``, ``$dist`` (ranked queries) and the included attributes."""
    pos = ranked.positions
    if pos.size == 0:
        return []
    attrs = [(name, a) for name in include if (a := src.schema.get(name)) is not None]
    columns: list[tuple[str, list[Any]]] = []
    ids: list[Any]
    dist_bytes = _DIST_BYTES * pos.size if ranked.dists is not None else 0
    if attrs:
        table = _fetch_returned(src, pos, include, stats)
        returned = int(table.nbytes)
        ids = [id_to_json(v) for v in table.column("id").to_pylist()]
        for name, a in attrs:
            columns.append((name, column_json(table.column(name), a.type, vector_encoding)))
    else:  # ids only (the common top-k answer): no table is built
        values = src.id_values(pos)
        returned = int(values.nbytes)
        ids = (
            values.tolist() if isinstance(values, np.ndarray) else [id_to_json(v) for v in values.to_pylist()]
        )
    if stats is not None:
        stats.charge(returned + dist_bytes)
    rows: list[dict[str, Any]] = []
    dists = ranked.dists.tolist() if ranked.dists is not None else None
    for i, doc_id in enumerate(ids):
        row: dict[str, Any] = {"id": doc_id}
        if dists is not None:
            row["$dist"] = dists[i]
        for name, values in columns:
            row[name] = values[i]
        rows.append(row)
    return rows


def _fetch_returned(
    src: DocSource, pos: np.ndarray, include: Sequence[str], stats: _Stats | None
) -> pa.Table:
    """The returned rows' columns. Under a byte budget the rows' size is estimated from the
    snapshot's average document, and rows estimated large are fetched a slice at a time, each
    slice counted against the budget as read. The estimate only chooses how to read, it never
    refuses: the average of a namespace with a few huge documents says nothing of the rows one
    query returns (9,000 rows of 1 KB are 9 MB whatever the average)."""
    if stats is None or not stats.max_returned:
        return src.fetch_rows(pos, include)
    estimate = src.logical_bytes(include) * pos.size // max(1, src.num_docs)
    if estimate <= _SLICED_FETCH_BYTES or pos.size <= _FETCH_SLICE_ROWS:
        return src.fetch_rows(pos, include)
    parts: list[pa.Table] = []
    fetched = 0
    for lo in range(0, pos.size, _FETCH_SLICE_ROWS):
        part = src.fetch_rows(pos[lo : lo + _FETCH_SLICE_ROWS], include)
        fetched += int(part.nbytes)
        stats.charge(fetched, count=False)  # refused at the slice that passes the budget
        parts.append(part)
    return pa.concat_tables(parts)


def column_json(col: pa.ChunkedArray, atype: AttrType, vector_encoding: str) -> list[Any]:
    """A column's values in JSON wire form (null -> None)."""
    if atype.is_vector:
        return _vectors_json(col, atype.dims, vector_encoding)
    if atype.kind in ("string", "int", "uint", "float", "bool"):
        return list(col.to_pylist())
    return [arrow_value_to_json(v, atype, vector_encoding) for v in col.to_pylist()]


def _vectors_json(col: pa.ChunkedArray, dims: int, vector_encoding: str) -> list[Any]:
    """Vectors as float lists or base64 little-endian f32 strings, converted as one matrix."""
    arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    n = len(arr)
    if n == 0 or pa.types.is_null(arr.type):
        return [None] * n
    flat = arr.values.slice(arr.offset * dims, n * dims).to_numpy(zero_copy_only=False)
    matrix = np.asarray(flat, dtype="<f4").reshape(n, dims)
    valid = np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    if vector_encoding == "base64":
        out: list[Any] = [base64.b64encode(row.tobytes()).decode() for row in matrix]
    elif pa.types.is_int8(arr.type.value_type):
        out = matrix.astype(np.int64).tolist()  # [N]i8: integers, as written
    else:
        out = matrix.tolist()
    if not valid.all():
        for i in np.flatnonzero(~valid).tolist():
            out[i] = None
    return out


# --------------------------------------------------------------------------------------------- multi


def _execute_multi(req: MultiQueryRequest, src: DocSource, stats: _Stats) -> dict[str, Any]:
    if req.rerank is None:
        return {"results": [_execute_one(q, src, stats) for q in req.queries]}
    rankings: list[Ranked] = []
    include: list[str] = []
    for q in req.queries:
        _account_scan(q, src, stats)
        rankings.append(rank(q, src))
        include.extend(a for a in q.include if a not in include)
    positions, scores = rrf_fuse(
        [r.positions for r in rankings],
        src.id_rank(),
        rank_constant=req.rerank.rank_constant,
        weights=req.rerank.weights,
    )
    lo, hi = req.offset, req.offset + req.fused_limit
    page = Ranked(positions[lo:hi], scores[lo:hi])
    rows = build_rows(src, page, include, req.vector_encoding, stats)
    for q in req.queries:  # each sub-query's computed attributes, in its own rank_by's context
        if q.computed:
            add_computed(rows, q, src, page.positions)
    return {"results": [{"rows": rows}]}
