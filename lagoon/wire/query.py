"""Query bodies: parse and validate a JSON query (or multi-query) into a typed request.

Everything that can be checked without data is checked here, before execution: shapes, attribute
names and types against the namespace schema, vector dimensions, limits (top_k ≤ 10,000, ≤ 16
sub-queries, BM25 text ≤ 8,192 characters), and combinations the executor does not support. Errors
are ``InvalidRequest`` (HTTP 400) whose message names the offending field, e.g. ``rank_by[2]: …``.

Accepted grammar (turbopuffer v2, see docs/query.md):
- ``rank_by``: ``[attr, "ANN"|"kNN", vector]``; ``[attr, "BM25", text, {"last_as_prefix": b}?]``;
  ``["Sum", [clauses]]``, ``["Max", [clauses]]`` (or flat: ``["Max", 0, clause]``),
  ``["Product", w, clause]`` / ``["Product", clause, w]``
  where a clause is BM25, a combinator or a filter (a filter scores 1 or 0); ``[attr, "asc"|"desc"]``
  and ``[[attr, dir], …]`` order by attributes.
- ``top_k`` or ``limit`` (int or ``{"total", "per": {"attributes", "limit"}}``), ``offset``, ``filters``,
  ``include_attributes``, ``exclude_attributes``, ``aggregate_by`` + ``group_by``, ``consistency``,
  ``vector_encoding``, ``distance_metric``, ``disable_cache``.
- multi-query: ``{"queries": […], "rerank_by": ["RRF", {…}]?, "limit"?, "offset"?, "consistency"?,
  "vector_encoding"?}``.

This module is pure: it never looks at documents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from lagoon.errors import InvalidRequest
from lagoon.index import embed
from lagoon.index.filters.parse import parse_filter
from lagoon.index.filters.tree import Filter
from lagoon.schema import DISTANCE_METRICS, AttributeSchema, AttrType, Schema, unstored_message
from lagoon.values import coerce_sparse, coerce_vector, parse_datetime

MAX_TOP_K = 10_000
MAX_QUERIES = 16
MAX_BM25_QUERY_CHARS = 8_192
MAX_RANK_DEPTH = 32
MAX_AGGREGATIONS = 64
DEFAULT_LIMIT = 10
DEFAULT_RRF_RANK_CONSTANT = 60.0

VECTOR_ENCODINGS = ("float", "base64")
CONSISTENCY_LEVELS = ("strong", "eventual")
_COMBINATORS = ("Sum", "Max", "Product")
MAX_COMPUTED = 256
MAX_HIGHLIGHT_FRAGMENTS = 1024
FRAGMENT_ATTR = "$fragment"
FRAGMENT_BY = ("none", "sentence", "paragraph", "word")
OFFSET_UNITS = ("utf-8", "utf-16", "codepoints")
_DURATION_MS = {
    "ms": 1.0,
    "s": 1_000.0,
    "m": 60_000.0,
    "h": 3_600_000.0,
    "d": 86_400_000.0,
    "w": 604_800_000.0,
}
_SIGNED_KINDS = ("int", "float")
_NUMERIC_KINDS = ("int", "uint", "float")

_QUERY_FIELDS = (
    "rank_by",
    "top_k",
    "limit",
    "offset",
    "filters",
    "include_attributes",
    "exclude_attributes",
    "aggregate_by",
    "group_by",
    "consistency",
    "vector_encoding",
    "distance_metric",
    "disable_cache",
    "compute_attributes",
)
_UNSUPPORTED_FIELDS = {
    "rerank_by": "rerank_by is only supported at the top level of a multi-query (body with 'queries')",
}
_MULTI_FIELDS = ("queries", "rerank_by", "limit", "offset", "consistency", "vector_encoding")
_ROOT_ONLY = ("consistency", "vector_encoding")


# --------------------------------------------------------------------------------------------- types


@dataclass(frozen=True, slots=True)
class Consistency:
    level: str = "strong"
    max_staleness_seconds: int | None = None


@dataclass(frozen=True, slots=True, eq=False)
class VectorRank:
    """Nearest neighbours of ``vector`` (float32, dims checked) in vector attribute ``attr``."""

    attr: str
    mode: str  # "ANN" or "kNN"; both are exact in the exhaustive executor
    vector: np.ndarray
    metric: str  # "cosine_distance" | "euclidean_squared"
    # A multi-vector query (``n_vectors`` > 1) is searched as the one ``vector`` that ranks
    # documents the same way; ``$dist`` = ``scale`` × distance(vector, doc) + ``offset`` is the
    # sum of the query vectors' distances (see ``multi_vector_query``).
    n_vectors: int = 1
    scale: float = 1.0
    offset: float = 0.0

    def dist(self, d: np.ndarray) -> np.ndarray:
        """``$dist`` from the distances of ``vector`` (the identity for one query vector)."""
        if self.n_vectors == 1:
            return d
        return np.asarray(self.scale * np.asarray(d, np.float64) + self.offset, dtype=np.float64)


@dataclass(frozen=True, slots=True, eq=False)
class SparseRank:
    """``[attr, "SparseKNN", {dim: weight}]``: the documents of sparse attribute ``attr`` sharing a
    dimension with the query, by dot product, highest first (``$dist`` = the dot product)."""

    attr: str
    dims: np.ndarray  # uint32, ascending
    weights: np.ndarray  # float64, aligned with dims


@dataclass(frozen=True, slots=True)
class BM25Clause:
    """BM25 score of ``query`` (text, or tokens for a pre-tokenized attribute) against ``attr``."""

    attr: str
    query: str | tuple[str, ...]
    last_as_prefix: bool = False


@dataclass(frozen=True, slots=True)
class SumClause:
    clauses: tuple[ScoreClause, ...]


@dataclass(frozen=True, slots=True)
class MaxClause:
    clauses: tuple[ScoreClause, ...]


@dataclass(frozen=True, slots=True)
class ProductClause:
    weight: float
    clause: ScoreClause


@dataclass(frozen=True, slots=True)
class FilterClause:
    """A filter used as a score: 1 where it matches, 0 elsewhere."""

    filter: Filter


@dataclass(frozen=True, slots=True)
class ConstClause:
    """A number inside Max (a floor: ``["Max", [0, clause]]``)."""

    value: float


@dataclass(frozen=True, slots=True)
class AttributeClause:
    """``["Attribute", attr]``: the numeric attribute's value (0 where it is null)."""

    attr: str


@dataclass(frozen=True, slots=True)
class DistClause:
    """``["Dist", ["Attribute", attr], origin]``: ``|value − origin|`` (milliseconds for datetimes);
    a document without a value is excluded from the results."""

    attr: str
    origin: float


@dataclass(frozen=True, slots=True)
class SaturateClause:
    """``Saturate`` = x^e / (x^e + m^e), ``Decay`` (``decay``) = m^e / (x^e + m^e), x = max(clause, 0)."""

    clause: ScoreClause
    midpoint: float
    exponent: float
    decay: bool


ScoreClause = (
    BM25Clause
    | SumClause
    | MaxClause
    | ProductClause
    | FilterClause
    | ConstClause
    | AttributeClause
    | DistClause
    | SaturateClause
)


@dataclass(frozen=True, slots=True)
class ScoreRank:
    """Rank by a score expression, highest first; documents scoring 0 are excluded."""

    clause: ScoreClause


@dataclass(frozen=True, slots=True)
class OrderKey:
    attr: str  # an attribute name or "id"
    descending: bool


@dataclass(frozen=True, slots=True)
class OrderBy:
    """Order by attribute values; nulls sort first ascending and last descending; ties by id."""

    keys: tuple[OrderKey, ...]


@dataclass(frozen=True, slots=True, eq=False)
class LateInteractionRank:
    """``[attr, "ANN"|"kNN", [[...], ...]]`` on a ``[][N]f32`` attribute with
    ``ann.late_interaction``: documents by ``Σᵢ minⱼ dist(qᵢ, dⱼ)`` (index/vector/late.py)."""

    attr: str
    mode: str
    queries: np.ndarray  # float32 (n, dims)
    metric: str
    dims: int


Ranking = VectorRank | ScoreRank | OrderBy | SparseRank | LateInteractionRank


@dataclass(frozen=True, slots=True)
class PerLimit:
    """Diversification: at most ``limit`` rows per distinct value of ``attributes``."""

    attributes: tuple[str, ...]
    limit: int


@dataclass(frozen=True, slots=True)
class Aggregation:
    label: str
    func: str  # "Count" | "Sum"
    attr: str | None  # Sum: the summed attribute; Count: None, or the attribute counted when non-null


@dataclass(frozen=True, slots=True)
class GroupKey:
    """A ``group_by`` entry: attribute ``attr`` under the output name ``name``; ``each`` (an
    ``{name: ["ForEachUnique", attr]}`` entry over an array attribute) groups every document under
    each distinct element of the array."""

    name: str
    attr: str
    each: bool = False


@dataclass(frozen=True, slots=True)
class VectorDistExpr:
    """``[attr, "VectorDist", vector]``: the distance of each returned row's vector (None without one)."""

    attr: str
    vector: np.ndarray
    metric: str


@dataclass(frozen=True, slots=True, eq=False)
class EmbedExpr:
    """``["Embed", text, {"model"?}]`` in compute_attributes: the text's embedding on every row."""

    vector: np.ndarray


@dataclass(frozen=True, slots=True)
class ScoreExpr:
    """A rank expression evaluated for each returned row (BM25, Saturate, a filter, …)."""

    clause: ScoreClause


@dataclass(frozen=True, slots=True)
class HighlightExpr:
    """``["Highlight", attr, options]``: the attribute's best fragments for ``clause`` (a rank
    expression over ``$fragment``, the fragment text)."""

    attr: str
    clause: ScoreClause
    fragment_by: str = "sentence"
    fragment_limit: int = 3
    include_offsets: str | None = None


ComputedExpr = VectorDistExpr | ScoreExpr | HighlightExpr | EmbedExpr


@dataclass(frozen=True, slots=True)
class QueryRequest:
    rank_by: Ranking | None
    filters: Filter | None
    limit: int
    offset: int = 0
    per: PerLimit | None = None
    include: tuple[str, ...] = ()  # attributes returned besides id (and $dist)
    aggregations: tuple[Aggregation, ...] = ()
    group_by: tuple[str, ...] = ()
    consistency: Consistency = Consistency()
    vector_encoding: str = "float"
    distance_metric: str | None = None  # the request's override, as given
    disable_cache: bool = False
    computed: tuple[tuple[str, ComputedExpr], ...] = ()  # compute_attributes, in request order
    group_keys: tuple[GroupKey, ...] = ()  # group_by entries (group_by holds their names)

    @property
    def is_aggregation(self) -> bool:
        return bool(self.aggregations)


@dataclass(frozen=True, slots=True)
class RrfRerank:
    """Reciprocal rank fusion: score(d) = Σ_i w_i / (rank_constant + rank_i(d)), ranks from 1."""

    rank_constant: float
    weights: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class MultiQueryRequest:
    queries: tuple[QueryRequest, ...]
    rerank: RrfRerank | None = None
    limit: int | None = None  # fused result size (only with rerank)
    offset: int = 0
    consistency: Consistency = Consistency()
    vector_encoding: str = "float"

    @property
    def fused_limit(self) -> int:
        """The fused list's length: ``limit``, else the largest sub-query limit."""
        if self.limit is not None:
            return self.limit
        return max(q.limit for q in self.queries)


# --------------------------------------------------------------------------------------------- entry


def parse_request(body: Any, schema: Schema) -> QueryRequest | MultiQueryRequest:
    """A query body (decoded JSON) -> a validated request; multi-query when it has ``queries``."""
    if not isinstance(body, dict):
        raise InvalidRequest(f"query: expected a JSON object, got {_kind(body)}")
    if "queries" in body:
        return parse_multi_query(body, schema)
    return parse_query(body, schema)


def parse_query(
    body: Any,
    schema: Schema,
    *,
    where: str = "query",
    vector_encoding: str | None = None,
    consistency: Consistency | None = None,
) -> QueryRequest:
    """Parse one query. ``vector_encoding``/``consistency`` given = a sub-query of a multi-query,
    which inherits them from the root and may not set them itself."""
    if not isinstance(body, dict):
        raise InvalidRequest(f"{where}: expected a JSON object, got {_kind(body)}")
    p = "" if where == "query" else f"{where}."
    _check_query_fields(body, where, p, sub=vector_encoding is not None)
    metric = body.get("distance_metric")
    if metric is not None and metric not in DISTANCE_METRICS:
        raise InvalidRequest(
            f"{p}distance_metric: expected one of {', '.join(DISTANCE_METRICS)}, got {metric!r}"
        )
    rank_by: Ranking | None = None
    if body.get("rank_by") is not None:
        rank_by = _parse_rank_by(body["rank_by"], schema, metric, where=f"{p}rank_by")
        if isinstance(rank_by, ScoreRank):
            _check_nonnegative(rank_by.clause, schema, clamped=False, where=f"{p}rank_by")
    filters = None
    if body.get("filters") is not None:
        filters = parse_filter(body["filters"], schema, where=f"{p}filters")
    aggregations, group_keys = _parse_aggregation(body, schema, rank_by, p)
    limit, per, offset = _parse_paging(body, schema, rank_by, bool(aggregations), p)
    include = _parse_include(body, schema, p)
    computed: tuple[tuple[str, ComputedExpr], ...] = ()
    if body.get("compute_attributes") is not None:
        if aggregations:
            raise InvalidRequest(f"{p}compute_attributes: cannot be combined with aggregate_by")
        computed = _parse_computed(
            body["compute_attributes"], schema, rank_by, metric, where=f"{p}compute_attributes"
        )
    enc = vector_encoding or _parse_vector_encoding(body.get("vector_encoding"), where=f"{p}vector_encoding")
    cons = consistency or _parse_consistency(body.get("consistency"), where=f"{p}consistency")
    disable_cache = body.get("disable_cache", False)
    if not isinstance(disable_cache, bool):
        raise InvalidRequest(f"{p}disable_cache: expected true or false")
    return QueryRequest(
        rank_by=rank_by,
        filters=filters,
        limit=limit,
        offset=offset,
        per=per,
        include=include,
        aggregations=aggregations,
        group_by=tuple(k.name for k in group_keys),
        consistency=cons,
        vector_encoding=enc,
        distance_metric=metric,
        disable_cache=disable_cache,
        computed=computed,
        group_keys=group_keys,
    )


def _check_query_fields(body: dict[str, Any], where: str, p: str, *, sub: bool) -> None:
    """Unsupported, root-only (in a sub-query) and unknown fields are 400s naming them."""
    for key in body:
        if key in _UNSUPPORTED_FIELDS:
            raise InvalidRequest(f"{p}{key}: {_UNSUPPORTED_FIELDS[key]}")
        if sub and key in _ROOT_ONLY:
            raise InvalidRequest(f"{p}{key}: set it at the top level of the multi-query, not per sub-query")
    unknown = [k for k in body if k not in _QUERY_FIELDS]
    if unknown:
        raise InvalidRequest(
            f"{where}: unknown field(s) {', '.join(repr(k) for k in unknown)}; "
            f"expected some of {', '.join(_QUERY_FIELDS)}"
        )


def _parse_aggregation(
    body: dict[str, Any], schema: Schema, rank_by: Ranking | None, p: str
) -> tuple[tuple[Aggregation, ...], tuple[GroupKey, ...]]:
    """``aggregate_by`` and ``group_by``, and the query's mode: an aggregation or a ranking."""
    aggregations: tuple[Aggregation, ...] = ()
    if body.get("aggregate_by") is not None:
        aggregations = _parse_aggregate_by(body["aggregate_by"], schema, where=f"{p}aggregate_by")
    group_keys: tuple[GroupKey, ...] = ()
    if body.get("group_by") is not None:
        if not aggregations:
            raise InvalidRequest(f"{p}group_by: requires aggregate_by")
        group_keys = _parse_group_by(body["group_by"], schema, where=f"{p}group_by")
        clash = sorted({a.label for a in aggregations} & {k.name for k in group_keys})
        if clash:
            raise InvalidRequest(
                f"{p}aggregate_by: label(s) {', '.join(map(repr, clash))} clash with group_by attributes"
            )
    if aggregations:
        if rank_by is not None:
            raise InvalidRequest(f"{p}aggregate_by: cannot be combined with rank_by")
        for key in ("include_attributes", "exclude_attributes"):
            if body.get(key) not in (None, False):
                raise InvalidRequest(f"{p}{key}: cannot be combined with aggregate_by")
    elif rank_by is None:
        raise InvalidRequest(
            f"{p}rank_by: required unless aggregate_by is given "
            '(e.g. ["vector", "ANN", [...]], ["text", "BM25", "query"] or ["id", "asc"])'
        )
    return aggregations, group_keys


def _parse_paging(
    body: dict[str, Any], schema: Schema, rank_by: Ranking | None, aggregating: bool, p: str
) -> tuple[int, PerLimit | None, int]:
    """``limit`` / ``top_k`` (with ``limit.per``) and ``offset``."""
    limit, per = _parse_limits(body, schema, p)
    if per is not None and not isinstance(rank_by, OrderBy):
        raise InvalidRequest(
            f"{p}limit.per: diversification is only supported when ranking by attributes "
            '(rank_by [attr, "asc"|"desc"]), not for vector, BM25 or aggregation queries'
        )
    offset = _parse_offset(body.get("offset"), where=f"{p}offset")
    if offset and aggregating:
        raise InvalidRequest(f"{p}offset: requires rank_by; it cannot be used with aggregate_by")
    return limit, per, offset


def parse_multi_query(body: dict[str, Any], schema: Schema) -> MultiQueryRequest:
    unknown = [k for k in body if k not in _MULTI_FIELDS]
    if unknown:
        raise InvalidRequest(
            f"multi-query: unknown field(s) {', '.join(repr(k) for k in unknown)}; "
            f"expected some of {', '.join(_MULTI_FIELDS)}"
        )
    queries = body["queries"]
    if not isinstance(queries, list) or not queries:
        raise InvalidRequest("queries: expected a non-empty array of query objects")
    if len(queries) > MAX_QUERIES:
        raise InvalidRequest(f"queries: at most {MAX_QUERIES} queries per multi-query, got {len(queries)}")
    enc = _parse_vector_encoding(body.get("vector_encoding"), where="vector_encoding")
    cons = _parse_consistency(body.get("consistency"), where="consistency")
    parsed = tuple(
        parse_query(q, schema, where=f"queries[{i}]", vector_encoding=enc, consistency=cons)
        for i, q in enumerate(queries)
    )

    rerank = None
    if body.get("rerank_by") is not None:
        rerank = _parse_rerank(body["rerank_by"], len(parsed))
        for i, q in enumerate(parsed):
            if q.is_aggregation:
                raise InvalidRequest(
                    f"queries[{i}]: rerank_by fuses ranked rows; aggregation sub-queries cannot be fused"
                )
    limit = None
    if body.get("limit") is not None:
        if rerank is None:
            raise InvalidRequest("limit: a top-level limit requires rerank_by (it limits the fused rows)")
        raw = body["limit"]
        if isinstance(raw, dict):
            extra = sorted(set(raw) - {"total"})
            if extra:
                raise InvalidRequest(
                    f"limit: unknown field(s) {', '.join(map(repr, extra))}; expected 'total'"
                )
            if "total" not in raw:
                raise InvalidRequest("limit: 'total' is required")
            raw = raw["total"]
            limit = _parse_count(raw, where="limit.total")
        else:
            limit = _parse_count(raw, where="limit")
    offset = _parse_offset(body.get("offset"), where="offset")
    if offset and (rerank is None or limit is None):
        raise InvalidRequest("offset: at the top level of a multi-query it requires rerank_by and limit")
    return MultiQueryRequest(parsed, rerank, limit, offset, cons, enc)


# --------------------------------------------------------------------------------------------- rank_by


def _parse_rank_by(v: Any, schema: Schema, metric: str | None, *, where: str) -> Ranking:
    if not isinstance(v, list) or not v:
        raise InvalidRequest(
            f'{where}: expected a non-empty array such as ["vector", "ANN", [...]], '
            f'["text", "BM25", "query"] or ["timestamp", "desc"], got {_short(v)}'
        )
    if isinstance(v[0], list):
        keys = tuple(_parse_order_key(k, schema, where=f"{where}[{i}]") for i, k in enumerate(v))
        attrs = [k.attr for k in keys]
        if len(set(attrs)) != len(attrs):
            raise InvalidRequest(f"{where}: an attribute appears more than once")
        return OrderBy(keys)
    if len(v) == 2 and isinstance(v[1], str) and v[1] in ("asc", "desc"):
        return OrderBy((_parse_order_key(v, schema, where=where),))
    if len(v) >= 2 and isinstance(v[1], str) and v[1] in ("ANN", "kNN"):
        target = schema.get(v[0]) if isinstance(v[0], str) else None
        if target is not None and target.type.is_multivector:
            return _parse_late_rank(v, schema, metric, where=where)
        return _parse_vector_rank(v, schema, metric, where=where)
    if len(v) >= 2 and v[1] == "SparseKNN":
        return _parse_sparse_rank(v, schema, where=where)
    return ScoreRank(_parse_clause(v, schema, where=where, depth=0))


def _parse_sparse_rank(v: list[Any], schema: Schema, *, where: str) -> SparseRank:
    if len(v) != 3:
        raise InvalidRequest(
            f'{where}: expected [attribute, "SparseKNN", {{dimension: weight}}], got {len(v)} elements'
        )
    attr, _, value = v
    if not isinstance(attr, str):
        raise InvalidRequest(f"{where}[0]: expected a sparse vector attribute name, got {_short(attr)}")
    a = schema.get(attr)
    if a is None:
        have = schema.sparse_columns()
        hint = (
            f"sparse attributes: {', '.join(have)}"
            if have
            else "the namespace has no sparse vector attribute"
        )
        raise InvalidRequest(f"{where}[0]: unknown sparse vector attribute {attr!r} ({hint})")
    if not a.type.is_sparse:
        raise InvalidRequest(
            f"{where}[0]: SparseKNN needs a sparse vector attribute ({{}}f16); {attr!r} has type {a.type}"
        )
    pairs = coerce_sparse(value, where=f"{where}[2]", query=True)
    dims = np.asarray([d for d, _ in pairs], dtype=np.uint32)
    weights = np.asarray([w for _, w in pairs], dtype=np.float64)
    return SparseRank(attr, dims, weights)


def _parse_order_key(v: Any, schema: Schema, *, where: str) -> OrderKey:
    if not isinstance(v, list) or len(v) != 2 or not isinstance(v[0], str):
        raise InvalidRequest(f'{where}: expected [attribute, "asc"|"desc"], got {_short(v)}')
    attr, direction = v
    if direction not in ("asc", "desc"):
        raise InvalidRequest(f"{where}: order must be 'asc' or 'desc', got {_short(direction)}")
    if attr != "id":
        a = _attribute(schema, attr, where=where)
        if a.type.is_vector or a.type.is_sparse or a.type.array:
            raise InvalidRequest(
                f"{where}: cannot order by {attr!r} of type {a.type}; only scalar attributes can be ordered"
            )
    return OrderKey(attr, direction == "desc")


def _parse_vector_rank(v: list[Any], schema: Schema, metric: str | None, *, where: str) -> VectorRank:
    if len(v) != 3:
        raise InvalidRequest(f'{where}: expected [attribute, "{v[1]}", vector] (3 elements), got {len(v)}')
    attr, mode, value = v
    if not isinstance(attr, str):
        raise InvalidRequest(f"{where}[0]: expected a vector attribute name, got {_short(attr)}")
    a = schema.get(attr)
    if a is None:
        have = schema.vector_columns()
        hint = f"vector attributes: {', '.join(have)}" if have else "the namespace has no vector attribute"
        raise InvalidRequest(f"{where}[0]: unknown vector attribute {attr!r} ({hint})")
    if not a.type.is_vector:
        raise InvalidRequest(f"{where}[0]: attribute {attr!r} has type {a.type}, not a vector type")
    if isinstance(value, list) and value and value[0] == "Embed":
        value = _embed_expr(value, schema, attr, where=f"{where}[2]")
    elif isinstance(value, list) and value and isinstance(value[0], str) and len(value) > 1:
        raise InvalidRequest(
            f'{where}[2]: unknown query expression {value[0]!r:.40}; send a vector or ["Embed", text]'
        )
    if metric is None:
        ann_metric = (a.ann or {}).get("distance_metric")
        metric = ann_metric or schema.distance_metric or "cosine_distance"
    if isinstance(value, list) and value and isinstance(value[0], list | str):
        if len(value) > MAX_QUERY_VECTORS:
            raise InvalidRequest(
                f"{where}[2]: a multi-vector query has at most {MAX_QUERY_VECTORS} vectors, got {len(value)}"
            )
        vectors = [
            coerce_vector(v, a.type, where=f"{where}[2][{i}]", query=True) for i, v in enumerate(value)
        ]
        if len(vectors) > 1:
            vec, scale, offset = multi_vector_query(np.stack(vectors), metric)
            return VectorRank(attr, mode, vec, metric, len(vectors), scale, offset)
        return VectorRank(attr, mode, vectors[0], metric)
    vec = coerce_vector(value, a.type, where=f"{where}[2]", query=True)
    return VectorRank(attr, mode, vec, metric)


def _parse_late_rank(v: list[Any], schema: Schema, metric: str | None, *, where: str) -> LateInteractionRank:
    if len(v) != 3:
        raise InvalidRequest(f'{where}: expected [attribute, "{v[1]}", vectors] (3 elements), got {len(v)}')
    attr, mode, value = v
    a = schema.attributes[attr]
    if not (a.ann or {}).get("late_interaction"):
        raise InvalidRequest(
            f"{where}[0]: {attr!r} ({a.type}) is not indexed for late interaction; declare it with "
            '{"ann": {"late_interaction": true}} to rank by it'
        )
    if (
        isinstance(value, list)
        and value
        and isinstance(value[0], int | float)
        and not isinstance(value[0], bool)
    ):
        value = [value]  # one query vector
    if not isinstance(value, list) or not value:
        raise InvalidRequest(
            f"{where}[2]: expected a non-empty array of {a.type.dims}-dimension query vectors"
        )
    if len(value) > MAX_QUERY_VECTORS:
        raise InvalidRequest(
            f"{where}[2]: a multi-vector query has at most {MAX_QUERY_VECTORS} vectors, got {len(value)}"
        )
    vt = AttrType("vector", dims=a.type.dims, dtype="f32")
    queries = np.stack(
        [coerce_vector(q, vt, where=f"{where}[2][{i}]", query=True) for i, q in enumerate(value)]
    )
    if metric is None:
        metric = (a.ann or {}).get("distance_metric") or schema.distance_metric or "cosine_distance"
    return LateInteractionRank(attr, mode, queries, metric, a.type.dims)


def _embed_expr(v: list[Any], schema: Schema, attr: str | None, *, where: str) -> np.ndarray:
    """``["Embed", text, {"model"?}]`` -> the text's embedding (lagoon/index/embed.py). The model is
    the given one, else the one of the string attribute whose ``embed`` writes into ``attr``."""
    if len(v) not in (2, 3) or not isinstance(v[1], str):
        raise InvalidRequest(f'{where}: expected ["Embed", text] or ["Embed", text, {{"model": ...}}]')
    params = v[2] if len(v) == 3 else {}
    if not isinstance(params, dict) or set(params) - {"model"}:
        raise InvalidRequest(f'{where}[2]: expected {{"model": name}}, got {_short(params)}')
    model = params.get("model")
    if model is None and attr is not None:
        model = next(
            (
                a.embed["model"]
                for a in schema.attributes.values()
                if a.embed and a.embed.get("attribute") == attr
            ),
            None,
        )
    if model is None:
        why = f"no attribute embeds into {attr!r}" if attr is not None else "name it in compute_attributes"
        raise InvalidRequest(f'{where}: Embed needs a model ({{"model": {embed.MODEL!r}}}): {why}')
    if len(v[1]) > MAX_EMBED_CHARS:
        raise InvalidRequest(f"{where}[1]: text to embed is longer than {MAX_EMBED_CHARS} characters")
    embed.check_model(model, where=where)
    vector: np.ndarray = embed.embed(str(model), [v[1]], where=where)[0]
    return vector


MAX_EMBED_CHARS = 8_192
MAX_QUERY_VECTORS = 256
"""Most vectors one multi-vector ANN/kNN query may hold."""


def multi_vector_query(q: np.ndarray, metric: str) -> tuple[np.ndarray, float, float]:
    """A multi-vector query (float32 (n, dims)) as one vector ``v`` and ``scale``, ``offset`` with
    ``Σᵢ dist(qᵢ, d) = scale · dist(v, d) + offset`` for every document vector ``d``: the sum of
    the query vectors' distances (late interaction, MaxSim, with one vector per document: each
    query vector's best match is the document's vector). So the sum ranks documents exactly as
    one search for ``v``, which the vector index answers.

    - euclidean_squared: ``Σ‖qᵢ − d‖² = n‖d − m‖² + Σ‖qᵢ‖² − n‖m‖²`` with ``m`` the mean;
    - cosine_distance: ``Σ(1 − q̂ᵢ·d̂) = n − |s| + |s|·(1 − ŝ·d̂)`` with ``s = Σ q̂ᵢ`` (a zero query
      vector has distance 1 from everything and adds 0 to ``s``; a zero document vector has
      distance 1 from everything, which the formula keeps)."""
    n = q.shape[0]
    q64 = q.astype(np.float64)
    if metric == "euclidean_squared":
        m = q64.mean(axis=0)
        offset = float((q64 * q64).sum() - n * float(m @ m))
        return m.astype(np.float32), float(n), max(offset, 0.0)
    norms = np.linalg.norm(q64, axis=1)
    units = np.divide(q64, norms[:, None], out=np.zeros_like(q64), where=norms[:, None] > 0)
    s = units.sum(axis=0)
    length = float(np.linalg.norm(s))
    return s.astype(np.float32), length, float(n) - length


def _parse_clause(v: Any, schema: Schema, *, where: str, depth: int) -> ScoreClause:
    if depth > MAX_RANK_DEPTH:
        raise InvalidRequest(f"{where}: rank_by is nested more than {MAX_RANK_DEPTH} levels deep")
    if not isinstance(v, list) or not v:
        raise InvalidRequest(
            f"{where}: expected a rank clause (BM25, Sum, Max, Product or a filter), got {_short(v)}"
        )
    head = v[0]
    n = len(v)
    items: list[Any] | None = None
    if head in ("Sum", "Max") and n == 2 and isinstance(v[1], list):
        items, first, at = v[1], 0, f"{where}[1]"
    elif (
        head in ("Sum", "Max")
        and n >= 3
        and schema.get(head) is None
        and all(isinstance(c, list) or _is_number(c) for c in v[1:])
    ):  # the flat form of turbopuffer's docs, ["Max", 0, ["Attribute", "clicks"]]
        items, first, at = v[1:], 1, where
    if items is not None:
        if not items:
            raise InvalidRequest(f"{where}: {head} needs at least one clause")
        subs: list[ScoreClause] = []
        for i, c in enumerate(items, first):
            if _is_number(c):
                if head == "Sum":
                    raise InvalidRequest(
                        f"{at}[{i}]: Sum takes rank clauses, not numbers (a floor goes in Max: "
                        '["Max", [0, clause]])'
                    )
                if not math.isfinite(c) or c < 0:
                    raise InvalidRequest(f"{at}[{i}]: a number in Max must be finite and >= 0, got {c!r}")
                subs.append(ConstClause(float(c)))
                continue
            subs.append(_parse_clause(c, schema, where=f"{at}[{i}]", depth=depth + 1))
        if all(isinstance(c, ConstClause) for c in subs):
            raise InvalidRequest(f"{where}: Max needs at least one rank clause besides numbers")
        return SumClause(tuple(subs)) if head == "Sum" else MaxClause(tuple(subs))
    if head == "Attribute" and schema.get("Attribute") is None:
        return _parse_attribute_clause(v, schema, where=where)
    if head == "Dist" and schema.get("Dist") is None:
        return _parse_dist(v, schema, where=where)
    if head in ("Saturate", "Decay") and schema.get(head) is None:
        return _parse_saturate(v, schema, where=where, depth=depth)
    if head == "Product":
        if n == 3 and _is_number(v[1]) and isinstance(v[2], list):
            return _product(v[1], v[2], schema, where=where, wi=1, ci=2, depth=depth)
        if n == 3 and _is_number(v[2]) and isinstance(v[1], list):
            return _product(v[2], v[1], schema, where=where, wi=2, ci=1, depth=depth)
        if n == 2 and isinstance(v[1], list) and len(v[1]) == 2 and _is_number(v[1][0]):  # pre-2025 form
            return _product(v[1][0], v[1][1], schema, where=f"{where}[1]", wi=0, ci=1, depth=depth)
    if head in _COMBINATORS and schema.get(head) is None:
        shapes = {
            "Sum": '["Sum", [clause, ...]]',
            "Max": '["Max", [clause, ...]]',
            "Product": '["Product", weight, clause] or ["Product", clause, weight]',
        }
        raise InvalidRequest(f"{where}: malformed {head}; expected {shapes[head]}, got {_short(v)}")
    if n >= 2 and v[1] == "BM25":
        return _parse_bm25(v, schema, where=where)
    if n >= 2 and v[1] in ("ANN", "kNN"):
        raise InvalidRequest(
            f"{where}: vector search cannot be combined inside Sum/Max/Product; for hybrid search send a "
            'multi-query with rerank_by ["RRF"]'
        )
    if n == 2 and v[1] in ("asc", "desc") and depth > 0:
        raise InvalidRequest(f"{where}: ordering by an attribute cannot be combined inside Sum/Max/Product")
    if n == 2 and isinstance(head, str) and isinstance(v[1], str):
        raise InvalidRequest(f"{where}: order must be 'asc' or 'desc', got {_short(v[1])}")
    return FilterClause(parse_filter(v, schema, where=where))


def _parse_attribute_clause(v: list[Any], schema: Schema, *, where: str) -> AttributeClause:
    if len(v) != 2 or not isinstance(v[1], str):
        raise InvalidRequest(f'{where}: expected ["Attribute", attribute], got {_short(v)}')
    a = _attribute(schema, v[1], where=f"{where}[1]")
    if a.type.kind not in _NUMERIC_KINDS or a.type.array or a.type.is_vector:
        raise InvalidRequest(
            f"{where}[1]: Attribute needs a numeric attribute (int, uint, float); {v[1]!r} is {a.type}"
        )
    return AttributeClause(v[1])


def _parse_dist(v: list[Any], schema: Schema, *, where: str) -> DistClause:
    shape = '["Dist", ["Attribute", attribute], origin]'
    if len(v) != 3 or not (isinstance(v[1], list) and len(v[1]) == 2 and v[1][0] == "Attribute"):
        raise InvalidRequest(f"{where}: expected {shape}, got {_short(v)}")
    attr = v[1][1]
    a = _attribute(schema, attr, where=f"{where}[1][1]")
    t = a.type
    if t.array or t.is_vector or t.kind not in (*_NUMERIC_KINDS, "datetime"):
        raise InvalidRequest(f"{where}[1][1]: Dist needs a numeric or datetime attribute; {attr!r} is {t}")
    origin = v[2]
    if t.kind == "datetime":
        if isinstance(origin, str):
            origin_ms = float(parse_datetime(origin, where=f"{where}[2]"))
        elif _is_int(origin):
            origin_ms = float(origin)
        else:
            raise InvalidRequest(
                f"{where}[2]: the origin of Dist on datetime {attr!r} must be an ISO 8601 datetime, "
                f"got {_short(origin)}"
            )
        return DistClause(attr, origin_ms)
    if not _is_number(origin) or not math.isfinite(origin):
        raise InvalidRequest(
            f"{where}[2]: the origin of Dist on {attr!r} ({t}) must be a number, got {_short(origin)}"
        )
    return DistClause(attr, float(origin))


def _parse_saturate(v: list[Any], schema: Schema, *, where: str, depth: int) -> SaturateClause:
    head = v[0]
    if len(v) != 3 or not isinstance(v[2], dict):
        raise InvalidRequest(
            f'{where}: expected ["{head}", clause, {{"midpoint": m, "exponent": e}}], got {_short(v)}'
        )
    inner = _parse_clause(v[1], schema, where=f"{where}[1]", depth=depth + 1)
    params = v[2]
    extra = sorted(set(params) - {"midpoint", "exponent"})
    if extra:
        raise InvalidRequest(f"{where}[2]: unknown {head} parameter(s) {', '.join(map(repr, extra))}")
    if "midpoint" not in params:
        raise InvalidRequest(f"{where}[2].midpoint: required")
    m = params["midpoint"]
    if isinstance(m, str):
        datetime_dist = isinstance(inner, DistClause) and _attr_kind(schema, inner.attr) == "datetime"
        if not datetime_dist:
            raise InvalidRequest(
                f'{where}[2].midpoint: a duration such as "6h" is only valid around a Dist on a datetime '
                f"attribute; give a number, got {m!r}"
            )
        midpoint = _parse_duration(m, where=f"{where}[2].midpoint")
    elif _is_number(m) and math.isfinite(m) and m > 0:
        midpoint = float(m)
    else:
        raise InvalidRequest(f"{where}[2].midpoint: must be a number > 0, got {_short(m)}")
    e = params.get("exponent", 1.0)
    if not _is_number(e) or not math.isfinite(e) or e <= 0:
        raise InvalidRequest(f"{where}[2].exponent: must be a number > 0, got {_short(e)}")
    return SaturateClause(inner, midpoint, float(e), head == "Decay")


def _parse_duration(text: str, *, where: str) -> float:
    """``"6h"``, ``"30m"``, ``"1.5d"``, ``"250ms"`` -> milliseconds (units ms, s, m, h, d, w)."""
    t = text.strip()
    unit = next((u for u in ("ms", "s", "m", "h", "d", "w") if t.endswith(u)), None)
    number = t[: -len(unit)] if unit else ""
    try:
        value = float(number)
    except ValueError:
        value = math.nan
    if unit is None or not math.isfinite(value) or value <= 0:
        raise InvalidRequest(
            f'{where}: expected a positive duration such as "6h" (units ms, s, m, h, d, w), got {text!r}'
        )
    return value * _DURATION_MS[unit]


def _attr_kind(schema: Schema, attr: str) -> str:
    a = schema.get(attr)
    return a.type.kind if a is not None else ""


def _check_nonnegative(c: ScoreClause, schema: Schema, *, clamped: bool, where: str) -> None:
    """Ranking scores are never negative: a signed attribute (int, float) must sit under a Max with
    a number floor, or inside Saturate/Decay (which clamp at 0)."""
    if isinstance(c, AttributeClause):
        if not clamped and _attr_kind(schema, c.attr) in _SIGNED_KINDS:
            raise InvalidRequest(
                f"{where}: rank_by clauses must produce non-negative scores, but ['Attribute', {c.attr!r}] "
                f"reads a signed numeric attribute ({schema.attributes[c.attr].type}); wrap it as "
                f'["Max", [0, ["Attribute", "{c.attr}"]]]'
            )
    elif isinstance(c, MaxClause):
        floor = clamped or any(isinstance(x, ConstClause) for x in c.clauses)
        for x in c.clauses:
            _check_nonnegative(x, schema, clamped=floor, where=where)
    elif isinstance(c, SumClause):
        for x in c.clauses:
            _check_nonnegative(x, schema, clamped=clamped, where=where)
    elif isinstance(c, ProductClause):
        _check_nonnegative(c.clause, schema, clamped=clamped, where=where)
    elif isinstance(c, SaturateClause):
        _check_nonnegative(c.clause, schema, clamped=True, where=where)


# --------------------------------------------------------------------------------------------- computed


def _parse_computed(
    v: Any, schema: Schema, rank_by: Ranking | None, metric: str | None, *, where: str
) -> tuple[tuple[str, ComputedExpr], ...]:
    if not isinstance(v, dict) or not v:
        raise InvalidRequest(
            f'{where}: expected an object mapping names to expressions, e.g. {{"d": ["vector", "VectorDist", [...]]}}'
        )
    if len(v) > MAX_COMPUTED:
        raise InvalidRequest(f"{where}: at most {MAX_COMPUTED} computed attributes per query, got {len(v)}")
    out: list[tuple[str, ComputedExpr]] = []
    for name, expr in v.items():
        w = f"{where}.{name}"
        if not name or name.startswith("$") or name == "id":
            raise InvalidRequest(
                f"{where}: names must be non-empty, not 'id' and not start with '$', got {name!r}"
            )
        if schema.get(name) is not None:
            raise InvalidRequest(f"{w}: {name!r} is already an attribute of the namespace; pick another name")
        if not isinstance(expr, list) or not expr:
            raise InvalidRequest(f"{w}: expected an expression array, got {_short(expr)}")
        if expr[0] == "Highlight":
            out.append((name, _parse_highlight(expr, schema, rank_by, where=w)))
        elif expr[0] == "Embed":
            out.append((name, EmbedExpr(_embed_expr(expr, schema, None, where=w))))
        elif len(expr) == 3 and expr[1] == "VectorDist":
            rank = _parse_vector_rank([expr[0], "kNN", expr[2]], schema, metric, where=w)
            out.append((name, VectorDistExpr(rank.attr, rank.vector, rank.metric)))
        else:
            out.append((name, ScoreExpr(_parse_clause(expr, schema, where=w, depth=0))))
    return tuple(out)


def _parse_highlight(v: list[Any], schema: Schema, rank_by: Ranking | None, *, where: str) -> HighlightExpr:
    if len(v) not in (2, 3) or not isinstance(v[1], str):
        raise InvalidRequest(
            f'{where}: expected ["Highlight", attribute] or ["Highlight", attribute, options]'
        )
    attr = v[1]
    a = _attribute(schema, attr, where=f"{where}[1]")
    if a.full_text_search is None:
        raise InvalidRequest(f"{where}[1]: Highlight needs full_text_search enabled on {attr!r}")
    if a.full_text_search.get("tokenizer") == "pre_tokenized_array":
        raise InvalidRequest(
            f"{where}[1]: {attr!r} uses the pre_tokenized_array tokenizer, which has no text to highlight"
        )
    opts = v[2] if len(v) == 3 else {}
    if not isinstance(opts, dict):
        raise InvalidRequest(f"{where}[2]: expected an options object, got {_short(opts)}")
    extra = sorted(set(opts) - {"fragment_by", "fragment_limit", "include_offsets", "rank_fragments_by"})
    if extra:
        raise InvalidRequest(
            f"{where}[2]: unknown option(s) {', '.join(map(repr, extra))}; expected fragment_by, "
            "fragment_limit, include_offsets, rank_fragments_by"
        )
    fragment_by = opts.get("fragment_by", "sentence")
    if fragment_by not in FRAGMENT_BY:
        raise InvalidRequest(
            f"{where}[2].fragment_by: expected one of {', '.join(FRAGMENT_BY)}, got {_short(fragment_by)}"
        )
    limit = opts.get("fragment_limit", 3)
    if not _is_int(limit) or not 1 <= limit <= MAX_HIGHLIGHT_FRAGMENTS:
        raise InvalidRequest(
            f"{where}[2].fragment_limit: must be an integer from 1 to {MAX_HIGHLIGHT_FRAGMENTS}, got {_short(limit)}"
        )
    offsets = opts.get("include_offsets")
    if offsets is not None and offsets not in OFFSET_UNITS:
        raise InvalidRequest(
            f"{where}[2].include_offsets: expected one of {', '.join(OFFSET_UNITS)}, got {_short(offsets)}"
        )
    fragment_schema = Schema(schema.id_type, {**schema.attributes, FRAGMENT_ATTR: a}, schema.distance_metric)
    if opts.get("rank_fragments_by") is not None:
        clause = _parse_clause(
            opts["rank_fragments_by"], fragment_schema, where=f"{where}[2].rank_fragments_by", depth=0
        )
    else:
        found = _fragment_bm25(rank_by.clause, attr) if isinstance(rank_by, ScoreRank) else []
        if not found:
            raise InvalidRequest(
                f"{where}: cannot infer rank_fragments_by: the query's rank_by has no BM25 clause on {attr!r}; "
                f'give rank_fragments_by, e.g. ["$fragment", "BM25", "words"]'
            )
        clause = found[0] if len(found) == 1 else SumClause(tuple(found))
    bad = _non_fragment(clause)
    if bad:
        raise InvalidRequest(
            f"{where}: rank_fragments_by may combine only BM25 clauses on $fragment (with Sum, Max, Product); got {bad}"
        )
    return HighlightExpr(attr, clause, fragment_by, int(limit), offsets)


def _fragment_bm25(c: ScoreClause, attr: str) -> list[ScoreClause]:
    """The BM25 clauses on ``attr`` in ``c``, rewritten to score the fragment text."""
    if isinstance(c, BM25Clause):
        return [BM25Clause(FRAGMENT_ATTR, c.query, c.last_as_prefix)] if c.attr == attr else []
    if isinstance(c, SumClause | MaxClause):
        return [x for sub in c.clauses for x in _fragment_bm25(sub, attr)]
    if isinstance(c, ProductClause | SaturateClause):
        return _fragment_bm25(c.clause, attr)
    return []


def _non_fragment(c: ScoreClause) -> str:
    """'' when ``c`` only combines BM25 on $fragment, else a description of the first other part."""
    if isinstance(c, BM25Clause):
        return "" if c.attr == FRAGMENT_ATTR else f"BM25 on {c.attr!r}"
    if isinstance(c, SumClause | MaxClause):
        return next((d for d in (_non_fragment(x) for x in c.clauses) if d), "")
    if isinstance(c, ProductClause):
        return _non_fragment(c.clause)
    return type(c).__name__.removesuffix("Clause")


def _product(
    w: Any, clause: Any, schema: Schema, *, where: str, wi: int, ci: int, depth: int
) -> ProductClause:
    weight = float(w)
    if not math.isfinite(weight) or weight < 0:
        raise InvalidRequest(f"{where}[{wi}]: Product weight must be a finite number >= 0, got {w!r}")
    return ProductClause(weight, _parse_clause(clause, schema, where=f"{where}[{ci}]", depth=depth + 1))


def _parse_bm25(v: list[Any], schema: Schema, *, where: str) -> BM25Clause:
    if len(v) not in (3, 4):
        raise InvalidRequest(
            f'{where}: expected [attribute, "BM25", query] or [attribute, "BM25", query, params]'
        )
    attr = v[0]
    if not isinstance(attr, str):
        raise InvalidRequest(f"{where}[0]: expected an attribute name, got {_short(attr)}")
    a = _attribute(schema, attr, where=f"{where}[0]", value=False)
    if a.full_text_search is None:
        raise InvalidRequest(
            f"{where}[0]: attribute {attr!r} is not full-text indexed; enable full_text_search in its schema"
        )
    pre_tokenized = a.full_text_search.get("tokenizer") == "pre_tokenized_array"
    q = v[2]
    query: str | tuple[str, ...]
    if isinstance(q, str):
        if pre_tokenized:
            raise InvalidRequest(
                f"{where}[2]: {attr!r} uses the pre_tokenized_array tokenizer; send a token array"
            )
        if len(q) > MAX_BM25_QUERY_CHARS:
            raise InvalidRequest(
                f"{where}[2]: query text is {len(q)} characters; the limit is {MAX_BM25_QUERY_CHARS}"
            )
        query = q
    elif isinstance(q, list) and all(isinstance(t, str) for t in q):
        # Word tokenizers analyse each element as text (so ["Quick", "fox"] = "Quick fox").
        if sum(len(t) for t in q) > MAX_BM25_QUERY_CHARS:
            raise InvalidRequest(f"{where}[2]: query tokens exceed {MAX_BM25_QUERY_CHARS} characters")
        query = tuple(q)
    else:
        raise InvalidRequest(f"{where}[2]: expected the query text as a string, got {_short(q)}")
    last_as_prefix = False
    if len(v) == 4:
        params = v[3]
        if not isinstance(params, dict):
            raise InvalidRequest(f'{where}[3]: expected an object such as {{"last_as_prefix": true}}')
        extra = sorted(set(params) - {"last_as_prefix"})
        if extra:
            raise InvalidRequest(f"{where}[3]: unknown BM25 parameter(s) {', '.join(map(repr, extra))}")
        lap = params.get("last_as_prefix", False)
        if not isinstance(lap, bool):
            raise InvalidRequest(f"{where}[3].last_as_prefix: expected true or false")
        last_as_prefix = lap
    return BM25Clause(attr, query, last_as_prefix)


# --------------------------------------------------------------------------------------------- limits


def _parse_limits(body: dict[str, Any], schema: Schema, p: str) -> tuple[int, PerLimit | None]:
    top_k, raw = body.get("top_k"), body.get("limit")
    if top_k is not None and raw is not None:
        raise InvalidRequest(f"{p}top_k: top_k and limit are aliases; give only one")
    if top_k is not None:
        return _parse_count(top_k, where=f"{p}top_k"), None
    if raw is None:
        return DEFAULT_LIMIT, None
    if not isinstance(raw, dict):
        return _parse_count(raw, where=f"{p}limit"), None
    extra = sorted(set(raw) - {"total", "per"})
    if extra:
        raise InvalidRequest(
            f"{p}limit: unknown field(s) {', '.join(map(repr, extra))}; expected 'total', 'per'"
        )
    if "total" not in raw:
        raise InvalidRequest(f"{p}limit: 'total' is required")
    total = _parse_count(raw["total"], where=f"{p}limit.total")
    per_raw = raw.get("per")
    if per_raw is None:
        return total, None
    w = f"{p}limit.per"
    if not isinstance(per_raw, dict):
        raise InvalidRequest(f'{w}: expected {{"attributes": [...], "limit": N}}')
    extra = sorted(set(per_raw) - {"attributes", "limit"})
    if extra:
        raise InvalidRequest(f"{w}: unknown field(s) {', '.join(map(repr, extra))}")
    attrs = per_raw.get("attributes")
    if not isinstance(attrs, list) or not attrs or not all(isinstance(x, str) for x in attrs):
        raise InvalidRequest(f"{w}.attributes: expected a non-empty array of attribute names")
    if len(set(attrs)) != len(attrs):
        raise InvalidRequest(f"{w}.attributes: an attribute appears more than once")
    for name in attrs:
        if name == "id":
            continue
        a = _attribute(schema, name, where=f"{w}.attributes")
        if a.type.is_vector or a.type.is_sparse or a.type.array:
            raise InvalidRequest(
                f"{w}.attributes: {name!r} has type {a.type}; only scalar attributes can be used"
            )
    if "limit" not in per_raw:
        raise InvalidRequest(f"{w}.limit: required")
    return total, PerLimit(tuple(attrs), _parse_count(per_raw["limit"], where=f"{w}.limit"))


def _parse_count(v: Any, *, where: str) -> int:
    if not _is_int(v):
        raise InvalidRequest(f"{where}: expected an integer, got {_short(v)}")
    if not 1 <= v <= MAX_TOP_K:
        raise InvalidRequest(f"{where}: must be between 1 and {MAX_TOP_K}, got {v}")
    return int(v)


def _parse_offset(v: Any, *, where: str) -> int:
    if v is None:
        return 0
    if not _is_int(v) or v < 0:
        raise InvalidRequest(f"{where}: expected a non-negative integer, got {_short(v)}")
    return int(v)


# --------------------------------------------------------------------------------------------- attributes


def _parse_include(body: dict[str, Any], schema: Schema, p: str) -> tuple[str, ...]:
    inc, exc = body.get("include_attributes"), body.get("exclude_attributes")
    if inc is not None and exc is not None:
        raise InvalidRequest(f"{p}include_attributes: cannot be combined with exclude_attributes")
    if exc is not None:
        if not isinstance(exc, list) or not all(isinstance(x, str) for x in exc):
            raise InvalidRequest(f"{p}exclude_attributes: expected an array of attribute names")
        drop = set(exc)
        return tuple(n for n, a in schema.attributes.items() if n not in drop and a.store)
    if inc is None or inc is False:
        return ()
    if inc is True:
        return tuple(n for n, a in schema.attributes.items() if a.store)
    if not isinstance(inc, list) or not all(isinstance(x, str) for x in inc):
        raise InvalidRequest(f"{p}include_attributes: expected true, false or an array of attribute names")
    unknown = [n for n in inc if n != "id" and schema.get(n) is None]
    if unknown:
        raise InvalidRequest(
            f"{p}include_attributes: unknown attribute(s) {', '.join(map(repr, unknown))}"
            + _known_hint(schema)
        )
    out: list[str] = []
    for n in inc:
        if n != "id" and not schema.attributes[n].store:
            raise InvalidRequest(f"{p}include_attributes: {unstored_message(n)}")
        if n != "id" and n not in out:
            out.append(n)
    return tuple(out)


def _parse_aggregate_by(v: Any, schema: Schema, *, where: str) -> tuple[Aggregation, ...]:
    if not isinstance(v, dict) or not v:
        raise InvalidRequest(
            f'{where}: expected an object mapping labels to aggregates, e.g. {{"n": ["Count"]}}'
        )
    if len(v) > MAX_AGGREGATIONS:
        raise InvalidRequest(f"{where}: at most {MAX_AGGREGATIONS} aggregations per query")
    out = []
    for label, spec in v.items():
        w = f"{where}.{label}"
        if not label or label.startswith("$"):
            raise InvalidRequest(
                f"{where}: labels must be non-empty and may not start with '$', got {label!r}"
            )
        if not isinstance(spec, list) or not spec or spec[0] not in ("Count", "Sum"):
            raise InvalidRequest(f'{w}: expected ["Count"] or ["Sum", attribute], got {_short(spec)}')
        func = spec[0]
        if func == "Count" and len(spec) == 1:
            out.append(Aggregation(label, "Count", None))
            continue
        if len(spec) != 2 or not isinstance(spec[1], str):
            shape = '["Sum", attribute]' if func == "Sum" else '["Count"]'
            raise InvalidRequest(f"{w}: expected {shape}, got {_short(spec)}")
        attr = spec[1]
        if attr == "id" and func == "Count":
            out.append(Aggregation(label, "Count", None))
            continue
        a = _attribute(schema, attr, where=f"{w}[1]")
        if func == "Sum" and (
            a.type.kind not in ("int", "uint", "float") or a.type.array or a.type.is_vector
        ):
            raise InvalidRequest(
                f"{w}[1]: Sum needs a numeric attribute (int, uint, float); {attr!r} is {a.type}"
            )
        out.append(Aggregation(label, func, attr))
    return tuple(out)


def _parse_group_by(v: Any, schema: Schema, *, where: str) -> tuple[GroupKey, ...]:
    """Attribute names, and at most one ``{name: ["ForEachUnique", array_attribute]}``."""
    if not isinstance(v, list) or not v:
        raise InvalidRequest(f"{where}: expected a non-empty array of attribute names")
    out: list[GroupKey] = []
    for i, entry in enumerate(v):
        w = f"{where}[{i}]"
        if isinstance(entry, dict):
            if len(entry) != 1:
                raise InvalidRequest(f'{w}: expected {{"name": ["ForEachUnique", attribute]}} with one name')
            name, fn = next(iter(entry.items()))
            if not (
                isinstance(fn, list) and len(fn) == 2 and fn[0] == "ForEachUnique" and isinstance(fn[1], str)
            ):
                raise InvalidRequest(
                    f'{w}.{name}: expected ["ForEachUnique", array_attribute], got {_short(fn)}'
                )
            if not name or name.startswith("$"):
                raise InvalidRequest(
                    f"{w}: group names must be non-empty and not start with '$', got {name!r}"
                )
            a = _attribute(schema, fn[1], where=f"{w}.{name}[1]")
            if not a.type.array:
                raise InvalidRequest(
                    f"{w}.{name}: ForEachUnique needs an array attribute ([]string, []int, ...); {fn[1]!r} is "
                    f"{a.type} (group by it directly)"
                )
            if any(k.each for k in out):
                raise InvalidRequest(f"{w}: ForEachUnique may appear at most once in group_by")
            key = GroupKey(name, fn[1], each=True)
        elif isinstance(entry, str):
            if entry != "id":
                a = _attribute(schema, entry, where=w)
                if a.type.is_vector or a.type.is_sparse or a.type.array:
                    hint = f' (use {{"{entry}": ["ForEachUnique", "{entry}"]}})' if a.type.array else ""
                    raise InvalidRequest(f"{w}: cannot group by {entry!r} of type {a.type}{hint}")
            key = GroupKey(entry, entry)
        else:
            raise InvalidRequest(f"{w}: expected an attribute name, got {_short(entry)}")
        if any(k.name == key.name for k in out):
            raise InvalidRequest(f"{where}: {key.name!r} appears more than once")
        out.append(key)
    return tuple(out)


# --------------------------------------------------------------------------------------------- misc


def _parse_vector_encoding(v: Any, *, where: str) -> str:
    if v is None:
        return "float"
    if v not in VECTOR_ENCODINGS:
        raise InvalidRequest(f"{where}: expected 'float' or 'base64', got {_short(v)}")
    return str(v)


def _parse_consistency(v: Any, *, where: str) -> Consistency:
    if v is None:
        return Consistency()
    if not isinstance(v, dict):
        raise InvalidRequest(f'{where}: expected {{"level": "strong"}} or {{"level": "eventual"}}')
    extra = sorted(set(v) - {"level", "max_staleness_seconds"})
    if extra:
        raise InvalidRequest(f"{where}: unknown field(s) {', '.join(map(repr, extra))}")
    level = v.get("level", "strong")
    if level not in CONSISTENCY_LEVELS:
        raise InvalidRequest(f"{where}.level: expected 'strong' or 'eventual', got {_short(level)}")
    stale = v.get("max_staleness_seconds")
    if stale is not None:
        if level != "eventual":
            raise InvalidRequest(f"{where}.max_staleness_seconds: only valid with level 'eventual'")
        if not _is_int(stale) or stale < 0:
            raise InvalidRequest(f"{where}.max_staleness_seconds: expected a non-negative integer")
    return Consistency(str(level), stale)


def _parse_rerank(v: Any, n_queries: int) -> RrfRerank:
    if isinstance(v, dict):
        raise InvalidRequest(
            "rerank_by: model reranking is not supported: this server ships no reranking model "
            '(docs/compatibility.md); use ["RRF"]'
        )
    if not isinstance(v, list) or not v or v[0] != "RRF" or len(v) > 2:
        raise InvalidRequest(
            f'rerank_by: expected ["RRF"] or ["RRF", {{"rank_constant": k, "weights": [...]}}], got {_short(v)}'
        )
    params = v[1] if len(v) == 2 else {}
    if not isinstance(params, dict):
        raise InvalidRequest("rerank_by[1]: expected an object with rank_constant and/or weights")
    extra = sorted(set(params) - {"rank_constant", "weights"})
    if extra:
        raise InvalidRequest(f"rerank_by[1]: unknown field(s) {', '.join(map(repr, extra))}")
    k = params.get("rank_constant", DEFAULT_RRF_RANK_CONSTANT)
    if not _is_number(k) or not math.isfinite(k) or k <= 0:
        raise InvalidRequest(f"rerank_by[1].rank_constant: expected a number > 0, got {_short(k)}")
    weights = params.get("weights")
    if weights is None:
        ws = (1.0,) * n_queries
    else:
        if not isinstance(weights, list) or not all(_is_number(x) for x in weights):
            raise InvalidRequest("rerank_by[1].weights: expected an array of numbers")
        if len(weights) != n_queries:
            raise InvalidRequest(
                f"rerank_by[1].weights: {len(weights)} weights for {n_queries} queries; give one per query"
            )
        if not all(math.isfinite(x) and x >= 0 for x in weights):
            raise InvalidRequest("rerank_by[1].weights: weights must be finite numbers >= 0")
        ws = tuple(float(x) for x in weights)
    return RrfRerank(float(k), ws)


def _attribute(schema: Schema, name: Any, *, where: str, value: bool = True) -> AttributeSchema:
    """The schema of attribute ``name``; ``value``: the request reads its values, which an
    attribute with ``store: false`` does not keep (a 400)."""
    if not isinstance(name, str):
        raise InvalidRequest(f"{where}: expected an attribute name, got {_short(name)}")
    a = schema.get(name)
    if a is None:
        raise InvalidRequest(f"{where}: unknown attribute {name!r}" + _known_hint(schema))
    if value and not a.store:
        raise InvalidRequest(f"{where}: {unstored_message(name)}")
    return a


def _known_hint(schema: Schema) -> str:
    names = list(schema.attributes)
    if not names:
        return " (the namespace has no attributes yet)"
    shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
    return f" (known: id, {shown})"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int | float):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "an array"
    return type(v).__name__


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."
