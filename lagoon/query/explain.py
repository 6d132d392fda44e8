"""Explain: the plan of a query as readable text (``POST /v2/namespaces/{ns}/explain_query``).

The plan says what the exhaustive executor will do, step by step, and how much it scans: the
filter (``Filter.describe()``), the ranking (vector metric and matrix size, BM25 clauses and the
documents holding text, order keys), paging, the returned attributes, and multi-query fusion.
It reads only sizes and null counts from the snapshot; it never runs the query.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lagoon.query.execute import uses_attributes
from lagoon.wire.query import (
    AttributeClause,
    BM25Clause,
    ConstClause,
    DistClause,
    FilterClause,
    LateInteractionRank,
    MaxClause,
    MultiQueryRequest,
    OrderBy,
    ProductClause,
    QueryRequest,
    SaturateClause,
    ScoreClause,
    ScoreRank,
    SparseRank,
    SumClause,
    VectorRank,
)

if TYPE_CHECKING:
    from lagoon.index.sources.protocol import DocSource


def explain_query(req: QueryRequest | MultiQueryRequest, live: DocSource) -> str:
    """The plan text; one line per step, indented by nesting."""
    n = live.num_docs
    lines = [f"snapshot: {n} live documents, exhaustive scan (no index segments)"]
    if isinstance(req, MultiQueryRequest):
        lines.append(f"multi-query: {len(req.queries)} sub-queries on the same snapshot")
        for i, q in enumerate(req.queries):
            lines.append(f"  query {i}:")
            lines.extend("    " + line for line in _plan(q, live))
        if req.rerank is not None:
            w = ", ".join(f"{x:g}" for x in req.rerank.weights)
            lines.append(
                f"fuse: RRF score = sum_i w_i / ({req.rerank.rank_constant:g} + rank_i), ranks from 1, "
                f"weights [{w}]; order by score desc, id asc"
            )
            lines.append(f"page: offset {req.offset}, limit {req.fused_limit}")
        lines.append(f"consistency: {req.consistency.level}")
        return "\n".join(lines)
    lines.extend(_plan(req, live))
    lines.append(f"consistency: {req.consistency.level}")
    return "\n".join(lines)


def _plan(q: QueryRequest, live: DocSource) -> list[str]:
    n = live.num_docs
    out: list[str] = []
    if q.filters is not None:
        out.append(f"filter: {q.filters.describe()} (evaluated over {n} documents)")
    else:
        out.append("filter: none")
    r = q.rank_by
    if isinstance(r, LateInteractionRank):
        out.append(
            f"rank: late interaction on {r.attr!r} ([][{r.dims}]f32, {r.metric}), exact: "
            f"{len(r.queries)} query vectors x every stored vector of {live.non_null_count(r.attr)} "
            "documents, sum over query vectors of the closest document vector's distance; "
            "documents without a value excluded; $dist ascending"
        )
    elif isinstance(r, VectorRank):
        a = live.schema.get(r.attr)
        present = live.non_null_count(r.attr)
        typ = str(a.type) if a is not None else "?"
        multi = (
            f"{r.n_vectors} query vectors searched as one, their distances summed; "
            if r.n_vectors > 1
            else ""
        )
        out.append(
            f"rank: {r.mode} on {r.attr!r} ({typ}, {r.metric}), exact: one float32 matmul over "
            f"{present} vectors x {len(r.vector)} dims, argpartition top {q.offset + q.limit}; "
            f"{multi}documents without a vector excluded; $dist ascending"
        )
    elif isinstance(r, SparseRank):
        out.append(
            f"rank: SparseKNN on {r.attr!r} ({{}}f16, dot_product) over the postings of "
            f"{r.dims.shape[0]} query dimensions (segments: spv index, MaxScore top "
            f"{q.offset + q.limit}; WAL tail: in-memory index); $dist = dot product, descending"
        )
    elif isinstance(r, ScoreRank):
        if uses_attributes(r.clause):
            out.append("rank: score descending ($dist = score), every filtered document (attribute scores)")
        else:
            out.append("rank: score descending ($dist = score), documents scoring 0 excluded")
        out.extend("  " + line for line in _clause(r.clause, live))
    elif isinstance(r, OrderBy):
        keys = ", ".join(f"{k.attr} {'desc' if k.descending else 'asc'}" for k in r.keys)
        out.append(f"order: {keys}, then id asc (nulls first asc, last desc); no $dist")
        if q.per is not None:
            out.append(f"diversify: at most {q.per.limit} rows per ({', '.join(q.per.attributes)})")
    if q.is_aggregation:
        aggs = ", ".join(f"{a.label}={a.func}({a.attr or '*'})" for a in q.aggregations)
        out.append(f"aggregate: {aggs} over the filtered documents")
        if q.group_by:
            out.append(
                f"group by: {', '.join(q.group_by)} (key order, nulls first), at most {q.limit} groups"
            )
        return out
    out.append(f"page: offset {q.offset}, limit {q.limit}")
    for name, expr in q.computed:
        out.append(f"compute {name}: {type(expr).__name__.removesuffix('Expr')} over the returned rows only")
    shown = ", ".join(q.include) if q.include else "(none)"
    out.append(f"return: id{', $dist' if not isinstance(r, OrderBy) else ''}; attributes: {shown}")
    if any(_is_vector(live, a) for a in q.include):
        out.append(f"vector encoding: {q.vector_encoding}")
    return out


def _clause(c: ScoreClause, live: DocSource) -> list[str]:
    if isinstance(c, BM25Clause):
        with_text = live.num_docs - live.column(c.attr).null_count
        query = c.query if isinstance(c.query, str) else " ".join(c.query)
        shown = query if len(query) <= 60 else query[:57] + "..."
        prefix = ", last token as prefix" if c.last_as_prefix else ""
        return [
            f"BM25 {c.attr!r} {shown!r}{prefix}: postings of the query terms ({with_text} documents with text)"
        ]
    if isinstance(c, FilterClause):
        return [f"filter as score (1 or 0): {c.filter.describe()}"]
    if isinstance(c, ProductClause):
        return [f"Product x {c.weight:g}:"] + ["  " + line for line in _clause(c.clause, live)]
    if isinstance(c, ConstClause):
        return [f"floor {c.value:g}"]
    if isinstance(c, AttributeClause):
        return [f"Attribute {c.attr!r}: the column's values (null = 0), every filtered document"]
    if isinstance(c, DistClause):
        return [f"Dist {c.attr!r} from {c.origin:g}: |value - origin| (documents without a value left out)"]
    if isinstance(c, SaturateClause):
        name, shape = ("Decay", "m^e/(x^e+m^e)") if c.decay else ("Saturate", "x^e/(x^e+m^e)")
        head = f"{name} {shape}, midpoint {c.midpoint:g}, exponent {c.exponent:g}:"
        return [head] + ["  " + line for line in _clause(c.clause, live)]
    if not isinstance(c, SumClause | MaxClause):
        return [f"unknown clause {type(c).__name__}"]
    name = "Sum" if isinstance(c, SumClause) else "Max"
    lines = [f"{name} of {len(c.clauses)}:"]
    for sub in c.clauses:
        lines.extend("  " + line for line in _clause(sub, live))
    return lines


def _is_vector(live: DocSource, name: str) -> bool:
    a = live.schema.get(name)
    return a is not None and a.type.is_vector
