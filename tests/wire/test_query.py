"""Query body parsing: every accepted form, and precise 400 messages for bad input."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import pytest

from lagoon.errors import InvalidRequest
from lagoon.schema import AttributeSchema, AttrType, Schema
from lagoon.wire.query import (
    BM25Clause,
    Consistency,
    FilterClause,
    MaxClause,
    MultiQueryRequest,
    OrderBy,
    OrderKey,
    ProductClause,
    QueryRequest,
    ScoreRank,
    SumClause,
    VectorRank,
    parse_request,
)

FTS = {"tokenizer": "word_v3", "language": "english", "stemming": False, "remove_stopwords": False,
       "case_sensitive": False, "ascii_folding": False, "k1": 1.2, "b": 0.75}  # fmt: skip

SCHEMA = Schema(
    id_type="uint",
    attributes={
        "vector": AttributeSchema(AttrType("vector", dims=3, dtype="f32"), filterable=False, ann={}),
        "emb16": AttributeSchema(AttrType("vector", dims=2, dtype="f16"), filterable=False, ann={}),
        "title": AttributeSchema(AttrType("string"), filterable=True, full_text_search=dict(FTS)),
        "body": AttributeSchema(AttrType("string"), filterable=False, full_text_search=dict(FTS)),
        "cat": AttributeSchema(AttrType("string")),
        "n": AttributeSchema(AttrType("int")),
        "price": AttributeSchema(AttrType("float")),
        "tags": AttributeSchema(AttrType("string", array=True)),
        "ts": AttributeSchema(AttrType("datetime")),
    },
    distance_metric="cosine_distance",
)


def parse(body: dict[str, Any]) -> QueryRequest:
    req = parse_request(body, SCHEMA)
    assert isinstance(req, QueryRequest)
    return req


def bad(body: Any, *fragments: str) -> str:
    with pytest.raises(InvalidRequest) as ei:
        parse_request(body, SCHEMA)
    msg = str(ei.value)
    assert ei.value.status == 400
    for f in fragments:
        assert f in msg, f"{f!r} not in {msg!r}"
    return msg


# ------------------------------------------------------------------------------------- accepted


def test_vector_rank_number_list_and_base64() -> None:
    r = parse({"rank_by": ["vector", "ANN", [1, 0.5, -2]], "top_k": 5})
    assert isinstance(r.rank_by, VectorRank)
    assert r.rank_by.mode == "ANN" and r.rank_by.metric == "cosine_distance"
    assert r.rank_by.vector.dtype == np.float32
    assert r.rank_by.vector.tolist() == [1.0, 0.5, -2.0]
    assert r.limit == 5 and r.offset == 0 and r.include == ()
    b64 = base64.b64encode(np.array([1, 0.5, -2], dtype="<f4").tobytes()).decode()
    r2 = parse({"rank_by": ["vector", "kNN", b64]})
    assert isinstance(r2.rank_by, VectorRank)
    assert r2.rank_by.mode == "kNN" and r2.rank_by.vector.tolist() == [1.0, 0.5, -2.0]
    assert r2.limit == 10  # default


def test_distance_metric_override_and_f16_attribute() -> None:
    r = parse({"rank_by": ["emb16", "kNN", [1, 2]], "distance_metric": "euclidean_squared"})
    assert isinstance(r.rank_by, VectorRank)
    assert r.rank_by.metric == "euclidean_squared" and r.distance_metric == "euclidean_squared"


def test_bm25_and_combinators() -> None:
    r = parse({"rank_by": ["title", "BM25", "hello world", {"last_as_prefix": True}]})
    assert r.rank_by == ScoreRank(BM25Clause("title", "hello world", True))
    body = {
        "rank_by": [
            "Sum",
            [
                ["title", "BM25", "hello world"],
                ["Product", 2.0, ["title", "BM25", "hi"]],
                ["Product", ["body", "BM25", "x"], 0.5],
                ["Max", [["body", "BM25", "y"], ["cat", "Eq", "a"]]],
                ["Product", [3, ["cat", "Eq", "b"]]],
            ],
        ],
        "top_k": 5,
        "consistency": {"level": "eventual"},
        "include_attributes": True,
    }
    r = parse(body)
    assert isinstance(r.rank_by, ScoreRank)
    s = r.rank_by.clause
    assert isinstance(s, SumClause) and len(s.clauses) == 5
    assert s.clauses[1] == ProductClause(2.0, BM25Clause("title", "hi"))
    assert s.clauses[2] == ProductClause(0.5, BM25Clause("body", "x"))
    m = s.clauses[3]
    assert isinstance(m, MaxClause) and isinstance(m.clauses[1], FilterClause)
    p = s.clauses[4]
    assert isinstance(p, ProductClause) and p.weight == 3.0 and isinstance(p.clause, FilterClause)
    assert r.consistency == Consistency("eventual")
    assert r.include == tuple(SCHEMA.attributes)


def test_filter_as_top_level_rank() -> None:
    r = parse({"rank_by": ["cat", "Eq", "a"]})
    assert isinstance(r.rank_by, ScoreRank) and isinstance(r.rank_by.clause, FilterClause)


def test_order_by_forms() -> None:
    assert parse({"rank_by": ["id", "asc"]}).rank_by == OrderBy((OrderKey("id", False),))
    assert parse({"rank_by": ["ts", "desc"]}).rank_by == OrderBy((OrderKey("ts", True),))
    r = parse(
        {
            "rank_by": [["cat", "asc"], ["n", "desc"]],
            "limit": {"total": 10, "per": {"attributes": ["cat"], "limit": 2}},
            "offset": 10,
            "vector_encoding": "base64",
            "exclude_attributes": ["body", "nope"],
        }
    )
    assert r.rank_by == OrderBy((OrderKey("cat", False), OrderKey("n", True)))
    assert r.limit == 10 and r.offset == 10 and r.per is not None
    assert r.per.attributes == ("cat",) and r.per.limit == 2
    assert r.vector_encoding == "base64"
    assert "body" not in r.include and "vector" in r.include and "title" in r.include


def test_include_list_keeps_order_and_drops_id() -> None:
    r = parse({"rank_by": ["id", "asc"], "include_attributes": ["n", "id", "title", "n"]})
    assert r.include == ("n", "title")
    assert parse({"rank_by": ["id", "asc"], "include_attributes": False}).include == ()


def test_aggregations() -> None:
    r = parse({"aggregate_by": {"c": ["Count"], "s": ["Sum", "price"]}, "group_by": ["cat"], "top_k": 3})
    assert r.is_aggregation and r.rank_by is None and r.group_by == ("cat",) and r.limit == 3
    assert [(a.label, a.func, a.attr) for a in r.aggregations] == [
        ("c", "Count", None),
        ("s", "Sum", "price"),
    ]
    r = parse({"aggregate_by": {"n": ["Count"]}, "filters": ["title", "NotEq", None]})
    assert r.filters is not None and r.group_by == ()


def test_multi_query() -> None:
    body = {
        "queries": [
            {"rank_by": ["vector", "ANN", [0.1, 0.2, 0.3]], "top_k": 3},
            {"rank_by": ["title", "BM25", "hello"], "top_k": 3},
        ],
        "limit": 3,
        "rerank_by": ["RRF"],
        "vector_encoding": "base64",
        "consistency": {"level": "eventual", "max_staleness_seconds": 5},
    }
    m = parse_request(body, SCHEMA)
    assert isinstance(m, MultiQueryRequest)
    assert m.rerank is not None and m.rerank.rank_constant == 60 and m.rerank.weights == (1.0, 1.0)
    assert m.limit == 3 and m.fused_limit == 3
    assert all(q.vector_encoding == "base64" and q.consistency.level == "eventual" for q in m.queries)
    body2 = {
        "queries": [{"rank_by": ["id", "asc"], "top_k": 7}, {"aggregate_by": {"c": ["Count"]}}],
    }
    m2 = parse_request(body2, SCHEMA)
    assert isinstance(m2, MultiQueryRequest) and m2.rerank is None
    m3 = parse_request(
        {
            "queries": [{"rank_by": ["id", "asc"], "top_k": 7}, {"rank_by": ["n", "asc"], "top_k": 4}],
            "rerank_by": ["RRF", {"rank_constant": 10, "weights": [2, 0.5]}],
            "limit": {"total": 5},
            "offset": 2,
        },
        SCHEMA,
    )
    assert isinstance(m3, MultiQueryRequest) and m3.rerank is not None
    assert m3.rerank.rank_constant == 10 and m3.rerank.weights == (2.0, 0.5)
    assert m3.limit == 5 and m3.offset == 2


# ------------------------------------------------------------------------------------- rejected


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        ([1], ("query: expected a JSON object",)),
        ({"rank_by": ["id", "asc"], "bogus": 1, "other": 2}, ("unknown field(s)", "'bogus'", "'other'")),
        ({"rank_by": ["id", "asc"], "compute_attributes": {}}, ("compute_attributes", "expected an object")),
        ({"rank_by": ["id", "asc"], "rerank_by": ["RRF"]}, ("rerank_by", "multi-query")),
        ({}, ("rank_by: required unless aggregate_by",)),
        ({"rank_by": []}, ("rank_by: expected a non-empty array",)),
        ({"rank_by": "vector"}, ("rank_by: expected a non-empty array",)),
        ({"rank_by": ["vector", "ANN", [1, 2]]}, ("rank_by[2]", "2 dimensions", "has 3")),
        ({"rank_by": ["vector", "ANN", "AAAAPwAAgD4="]}, ("rank_by[2]", "2 dimensions")),
        ({"rank_by": ["vector", "ANN", "!!notbase64"]}, ("rank_by[2]", "base64")),
        ({"rank_by": ["vector", "ANN", [[1, 2, 3], [1, 2]]]}, ("rank_by[2][1]", "dimensions")),
        (
            {"rank_by": ["vector", "ANN", ["Embed", "hi"]]},
            ("Embed needs a model", "no attribute embeds into 'vector'"),
        ),
        ({"rank_by": ["nope", "ANN", [1, 2, 3]]}, ("unknown vector attribute 'nope'", "vector, emb16")),
        ({"rank_by": ["cat", "kNN", [1, 2, 3]]}, ("'cat' has type string, not a vector",)),
        ({"rank_by": ["vector", "ANN", [1, 2, 3], {}]}, ("3 elements",)),
        ({"rank_by": ["vector", "ANN", [1, 2, 3]], "distance_metric": "dot"}, ("distance_metric", "dot")),
        ({"rank_by": ["cat", "BM25", "x"]}, ("rank_by[0]", "'cat' is not full-text indexed")),
        ({"rank_by": ["zzz", "BM25", "x"]}, ("unknown attribute 'zzz'",)),
        ({"rank_by": ["title", "BM25", 5]}, ("rank_by[2]", "string")),
        ({"rank_by": ["title", "BM25", ["a", 1]]}, ("expected the query text",)),
        ({"rank_by": ["title", "BM25", "x" * 8193]}, ("8193 characters", "8192")),
        ({"rank_by": ["title", "BM25", "x", {"prefix": True}]}, ("unknown BM25 parameter", "'prefix'")),
        (
            {"rank_by": ["title", "BM25", "x", {"last_as_prefix": 1}]},
            ("last_as_prefix: expected true or false",),
        ),
        ({"rank_by": ["Sum", []]}, ("Sum needs at least one clause",)),
        ({"rank_by": ["Sum", "x"]}, ("malformed Sum",)),
        ({"rank_by": ["Product", -1, ["title", "BM25", "x"]]}, ("rank_by[1]", "weight", ">= 0")),
        ({"rank_by": ["Product", ["title", "BM25", "x"]]}, ("malformed Product",)),
        ({"rank_by": ["Product", "w", ["title", "BM25", "x"]]}, ("malformed Product",)),
        ({"rank_by": ["Sum", [["vector", "ANN", [1, 2, 3]]]]}, ("rank_by[1][0]", "multi-query", "RRF")),
        ({"rank_by": ["Sum", [["n", "asc"]]]}, ("ordering by an attribute cannot be combined",)),
        ({"rank_by": ["Sum", [["title", "Bogus", 1]]]}, ("rank_by[1][0]", "unknown filter operator 'Bogus'")),
        ({"rank_by": ["Saturate", ["title", "BM25", "x"], {"midpoint": -1}]}, ("midpoint", "> 0")),
        ({"rank_by": ["sparse", "SparseKNN", {"1": 0.5}]}, ("unknown sparse vector attribute 'sparse'",)),
        ({"rank_by": ["title", "SparseKNN", {"1": 0.5}]}, ("SparseKNN needs a sparse vector attribute",)),
        ({"rank_by": ["n", "up"]}, ("rank_by: order must be 'asc' or 'desc', got 'up'",)),
        ({"rank_by": [["n", "up"]]}, ("rank_by[0]: order must be 'asc' or 'desc'",)),
        ({"rank_by": [["n", "asc"], ["n", "desc"]]}, ("more than once",)),
        ({"rank_by": ["tags", "asc"]}, ("cannot order by 'tags' of type []string",)),
        ({"rank_by": ["vector", "asc"]}, ("cannot order by 'vector'",)),
        ({"rank_by": ["missing", "asc"]}, ("unknown attribute 'missing'",)),
        ({"rank_by": ["id", "asc"], "top_k": 0}, ("top_k: must be between 1 and 10000, got 0",)),
        ({"rank_by": ["id", "asc"], "top_k": 10_001}, ("top_k: must be between 1 and 10000",)),
        ({"rank_by": ["id", "asc"], "top_k": True}, ("top_k: expected an integer",)),
        ({"rank_by": ["id", "asc"], "top_k": 5, "limit": 5}, ("top_k and limit are aliases",)),
        ({"rank_by": ["id", "asc"], "limit": {"per": {}}}, ("limit: 'total' is required",)),
        ({"rank_by": ["id", "asc"], "limit": {"total": 1, "x": 1}}, ("limit: unknown field(s) 'x'",)),
        (
            {
                "rank_by": ["vector", "ANN", [1, 2, 3]],
                "limit": {"total": 10, "per": {"attributes": ["cat"], "limit": 1}},
            },
            ("limit.per", "only supported when ranking by attributes"),
        ),
        (
            {"rank_by": ["id", "asc"], "limit": {"total": 10, "per": {"attributes": ["tags"], "limit": 1}}},
            ("limit.per.attributes", "'tags'"),
        ),
        (
            {"rank_by": ["id", "asc"], "limit": {"total": 10, "per": {"attributes": ["cat"]}}},
            ("limit.per.limit: required",),
        ),
        ({"rank_by": ["id", "asc"], "offset": -1}, ("offset: expected a non-negative integer",)),
        (
            {"rank_by": ["id", "asc"], "include_attributes": ["title", "nope"]},
            ("include_attributes", "'nope'"),
        ),
        (
            {"rank_by": ["id", "asc"], "include_attributes": "title"},
            ("include_attributes: expected true, false",),
        ),
        (
            {"rank_by": ["id", "asc"], "include_attributes": ["n"], "exclude_attributes": ["n"]},
            ("cannot be combined with exclude_attributes",),
        ),
        ({"rank_by": ["id", "asc"], "vector_encoding": "hex"}, ("vector_encoding", "'hex'")),
        ({"rank_by": ["id", "asc"], "consistency": {"level": "weak"}}, ("consistency.level", "'weak'")),
        (
            {"rank_by": ["id", "asc"], "consistency": {"level": "strong", "max_staleness_seconds": 3}},
            ("eventual",),
        ),
        ({"rank_by": ["id", "asc"], "filters": ["cat", "Eq", 5]}, ("filters:", "'cat'")),
        ({"rank_by": ["id", "asc"], "aggregate_by": {"c": ["Count"]}}, ("cannot be combined with rank_by",)),
        (
            {"aggregate_by": {"c": ["Count"]}, "include_attributes": True},
            ("include_attributes", "aggregate_by"),
        ),
        ({"aggregate_by": {"c": ["Avg", "n"]}}, ("aggregate_by.c", '["Sum", attribute]')),
        ({"aggregate_by": {"c": ["Sum", "cat"]}}, ("Sum needs a numeric attribute", "'cat' is string")),
        ({"aggregate_by": {"c": ["Sum"]}}, ("aggregate_by.c",)),
        ({"aggregate_by": {}}, ("aggregate_by: expected an object",)),
        ({"aggregate_by": {"cat": ["Count"]}, "group_by": ["cat"]}, ("clash with group_by",)),
        ({"aggregate_by": {"c": ["Count"]}, "group_by": ["tags"]}, ("cannot group by 'tags'",)),
        (
            {"aggregate_by": {"c": ["Count"]}, "group_by": [{"t": ["ForEachUnique", "cat"]}]},
            ("ForEachUnique needs an array attribute",),
        ),
        ({"rank_by": ["id", "asc"], "group_by": ["cat"]}, ("group_by: requires aggregate_by",)),
        ({"aggregate_by": {"c": ["Count"]}, "offset": 3}, ("offset: requires rank_by",)),
    ],
)
def test_rejected(body: Any, fragments: tuple[str, ...]) -> None:
    bad(body, *fragments)


def test_multi_query_rejections() -> None:
    q = {"rank_by": ["id", "asc"]}
    bad({"queries": []}, "queries: expected a non-empty array")
    bad({"queries": [q] * 17}, "at most 16 queries", "got 17")
    bad({"queries": [q], "top_k": 3}, "multi-query: unknown field(s) 'top_k'")
    bad({"queries": [{**q, "vector_encoding": "float"}]}, "queries[0].vector_encoding", "top level")
    bad({"queries": [{**q, "consistency": {"level": "strong"}}]}, "queries[0].consistency")
    bad({"queries": [q, {"rank_by": ["nope", "asc"]}]}, "queries[1].rank_by", "unknown attribute 'nope'")
    bad({"queries": [q], "limit": 3}, "limit: a top-level limit requires rerank_by")
    bad({"queries": [q], "rerank_by": ["RRF"], "offset": 3}, "offset", "requires rerank_by and limit")
    bad({"queries": [q], "rerank_by": ["RRF", {"weights": [1, 2]}]}, "2 weights for 1 queries")
    bad({"queries": [q], "rerank_by": ["RRF", {"rank_constant": 0}]}, "rank_constant: expected a number > 0")
    bad({"queries": [q], "rerank_by": ["RRF", {"weights": [-1]}]}, "weights must be finite numbers >= 0")
    bad({"queries": [q], "rerank_by": ["RRF", {"k": 1}]}, "unknown field(s) 'k'")
    bad({"queries": [q], "rerank_by": ["Borda"]}, 'expected ["RRF"]')
    bad({"queries": [q], "rerank_by": {"model": "x"}}, "model reranking is not supported")
    bad(
        {"queries": [q, {"aggregate_by": {"c": ["Count"]}}], "rerank_by": ["RRF"]},
        "queries[1]",
        "aggregation sub-queries cannot be fused",
    )
