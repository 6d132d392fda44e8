"""Exact query execution: hand-checked results for every query form."""

from __future__ import annotations

import base64
import math
import uuid
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from lagoon.index.sources.table import LiveDocs
from lagoon.query.execute import execute_query
from lagoon.query.explain import explain_query
from lagoon.schema import AttributeSchema, AttrType, FtsConfig, Schema
from lagoon.values import coerce_id, coerce_value, column_to_arrow, ids_to_arrow
from lagoon.wire.query import parse_request


def attr(type_: str, **kw: Any) -> AttributeSchema:
    t = AttrType.parse(type_)
    if t.is_vector:
        return AttributeSchema(t, filterable=False, ann={})
    return AttributeSchema(t, **kw)


def fts(**opts: Any) -> dict[str, Any]:
    return FtsConfig(**opts).to_json()


def make_live(
    attrs: dict[str, AttributeSchema],
    rows: list[dict[str, Any]],
    *,
    id_type: str = "uint",
    metric: str | None = "cosine_distance",
    chunks: int = 1,
) -> LiveDocs:
    schema = Schema(id_type, dict(attrs), metric)
    cols = {"id": ids_to_arrow([coerce_id(r["id"], id_type)[0] for r in rows], id_type)}
    for name, a in attrs.items():
        cols[name] = column_to_arrow([coerce_value(r.get(name), a.type, where=name) for r in rows], a.type)
    table = pa.table(cols)
    if chunks > 1:
        step = max(1, math.ceil(len(rows) / chunks))
        table = pa.concat_tables([table.slice(i, step) for i in range(0, len(rows), step)])
    return LiveDocs(schema, table)


def run(live: LiveDocs, body: dict[str, Any]) -> dict[str, Any]:
    return execute_query(parse_request(body, live.schema), live)


def ids(resp: dict[str, Any]) -> list[Any]:
    return [r["id"] for r in resp["rows"]]


def dists(resp: dict[str, Any]) -> list[float]:
    return [r["$dist"] for r in resp["rows"]]


# ----------------------------------------------------------------------------------------- vectors

VEC_ROWS = [
    {"id": 1, "vector": [1, 0], "cat": "a"},
    {"id": 2, "vector": [0, 2], "cat": "b"},
    {"id": 3, "vector": [3, 4], "cat": "a"},
    {"id": 4, "vector": None, "cat": "a"},
    {"id": 5, "vector": [-1, 0], "cat": "b"},
    {"id": 6, "vector": [1, 1], "cat": "a"},
    {"id": 7, "vector": [0, 5], "cat": "b"},
]
VEC_ATTRS = {"vector": attr("[2]f32"), "cat": attr("string")}


@pytest.mark.parametrize("mode", ["ANN", "kNN"])
@pytest.mark.parametrize("chunks", [1, 3])
def test_vector_cosine(mode: str, chunks: int) -> None:
    live = make_live(VEC_ATTRS, VEC_ROWS, chunks=chunks)
    resp = run(live, {"rank_by": ["vector", mode, [1, 0]], "top_k": 10})
    # 1 - cos: id1 0, id6 1-1/√2, id3 1-3/5, id2 and id7 1 (tie -> id order), id5 2; id4 has no vector
    assert ids(resp) == [1, 6, 3, 2, 7, 5]
    assert dists(resp) == pytest.approx([0.0, 1 - 1 / math.sqrt(2), 0.4, 1.0, 1.0, 2.0], abs=1e-12)
    assert set(resp["rows"][0]) == {"id", "$dist"}
    assert resp["performance"]["approx_namespace_size"] == 7
    assert resp["performance"]["exhaustive_search_count"] == 7
    assert isinstance(resp["performance"]["query_execution_ms"], int)
    assert resp["billing"]["billable_logical_bytes_queried"] > 0
    assert resp["billing"]["billable_logical_bytes_returned"] > 0


def test_vector_euclidean_top_k_offset_and_filter() -> None:
    live = make_live(VEC_ATTRS, VEC_ROWS, metric="euclidean_squared")
    resp = run(live, {"rank_by": ["vector", "kNN", [1, 0]], "top_k": 3})
    # ‖q - v‖²: id1 0, id6 1, id5 4, id2 5, id3 20, id7 26
    assert ids(resp) == [1, 6, 5]
    assert dists(resp) == [0.0, 1.0, 4.0]
    resp = run(live, {"rank_by": ["vector", "kNN", [1, 0]], "top_k": 3, "offset": 2})
    assert ids(resp) == [5, 2, 3] and dists(resp) == [4.0, 5.0, 20.0]
    resp = run(live, {"rank_by": ["vector", "kNN", [1, 0]], "filters": ["cat", "Eq", "b"]})
    assert ids(resp) == [5, 2, 7] and dists(resp) == [4.0, 5.0, 26.0]
    # the query's distance_metric overrides the namespace's
    resp = run(live, {"rank_by": ["vector", "kNN", [1, 0]], "top_k": 2, "distance_metric": "cosine_distance"})
    assert ids(resp) == [1, 6]


def test_vector_base64_query_and_zero_vector() -> None:
    live = make_live(VEC_ATTRS, [*VEC_ROWS, {"id": 8, "vector": [0, 0]}])
    b64 = base64.b64encode(np.array([0, 3], dtype="<f4").tobytes()).decode()
    resp = run(live, {"rank_by": ["vector", "ANN", b64], "top_k": 3})
    assert ids(resp) == [2, 7, 3] and dists(resp) == pytest.approx([0.0, 0.0, 0.2])
    resp = run(live, {"rank_by": ["vector", "ANN", [1, 0]], "filters": ["id", "Eq", 8]})
    assert resp["rows"] == [{"id": 8, "$dist": 1.0}]  # a zero vector has cosine distance 1


def test_vector_f16_column() -> None:
    attrs = {"emb": attr("[2]f16")}
    rows = [{"id": 1, "emb": [1, 0]}, {"id": 2, "emb": [0.5, 0.5]}, {"id": 3, "emb": [0.1, 0.2]}]
    live = make_live(attrs, rows, metric="euclidean_squared")
    resp = run(live, {"rank_by": ["emb", "kNN", [1, 0]], "include_attributes": ["emb"]})
    x, y = float(np.float16(0.1)), float(np.float16(0.2))  # f16 storage rounds 0.1, 0.2
    assert ids(resp) == [1, 2, 3]
    assert dists(resp) == pytest.approx([0.0, 0.5, (1 - x) ** 2 + y**2], rel=1e-12)
    assert resp["rows"][2]["emb"] == [pytest.approx(x), pytest.approx(y)]
    resp = run(live, {"rank_by": ["emb", "kNN", [1, 0]], "distance_metric": "cosine_distance", "top_k": 2})
    assert ids(resp) == [1, 2] and dists(resp) == pytest.approx([0.0, 1 - math.sqrt(0.5)])


def test_vector_encoding_base64_and_include() -> None:
    live = make_live(VEC_ATTRS, VEC_ROWS)
    resp = run(
        live,
        {
            "rank_by": ["vector", "ANN", [1, 0]],
            "top_k": 2,
            "include_attributes": True,
            "vector_encoding": "base64",
        },
    )
    expect = base64.b64encode(np.array([1, 1], dtype="<f4").tobytes()).decode()
    assert resp["rows"][1] == {
        "id": 6,
        "$dist": pytest.approx(1 - 1 / math.sqrt(2)),
        "vector": expect,
        "cat": "a",
    }
    resp = run(live, {"rank_by": ["vector", "ANN", [1, 0]], "top_k": 1, "include_attributes": ["vector"]})
    assert resp["rows"] == [{"id": 1, "$dist": 0.0, "vector": [1.0, 0.0]}]
    resp = run(live, {"rank_by": ["vector", "ANN", [1, 0]], "top_k": 1, "exclude_attributes": ["vector"]})
    assert resp["rows"] == [{"id": 1, "$dist": 0.0, "cat": "a"}]


def test_vector_no_candidates() -> None:
    live = make_live(VEC_ATTRS, VEC_ROWS)
    assert run(live, {"rank_by": ["vector", "ANN", [1, 0]], "filters": ["id", "Eq", 4]})["rows"] == []
    empty = make_live(VEC_ATTRS, [])
    resp = run(empty, {"rank_by": ["vector", "ANN", [1, 0]]})
    assert resp["rows"] == [] and resp["performance"]["approx_namespace_size"] == 0


# ----------------------------------------------------------------------------------------- BM25

TEXT_ATTRS = {
    "title": attr("string", filterable=True, full_text_search=fts()),
    "cat": attr("string"),
    "tags": attr("[]string", filterable=False, full_text_search=fts(stemming=True)),
}
TEXT_ROWS = [
    {"id": 1, "title": "The quick brown fox", "cat": "a", "tags": ["running", "dogs"]},
    {"id": 2, "title": "quick quick dog", "cat": "b"},
    {"id": 3, "title": "lazy dog", "cat": "a", "tags": ["runs"]},
    {"id": 4, "title": None, "cat": "a"},
    {"id": 5, "title": "Brown bread", "cat": "b", "tags": ["bread"]},
]


def bm25_direct(
    docs: list[list[str]], query: list[str], k1: float = 1.2, b: float = 0.75
) -> dict[int, float]:
    """Textbook BM25 (Lucene idf) over token lists; position i -> score, only positive scores."""
    n = sum(1 for d in docs if d)
    avgdl = sum(len(d) for d in docs) / n
    out: dict[int, float] = {}
    for t in dict.fromkeys(query):
        df = sum(1 for d in docs if t in d)
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        for i, d in enumerate(docs):
            tf = d.count(t)
            if tf:
                out[i] = out.get(i, 0.0) + idf * tf / (tf + k1 * (1 - b + b * len(d) / avgdl))
    return out


TOKENS = [
    ["the", "quick", "brown", "fox"],
    ["quick", "quick", "dog"],
    ["lazy", "dog"],
    [],
    ["brown", "bread"],
]


def test_bm25_single_term_hand_checked() -> None:
    live = make_live(TEXT_ATTRS, TEXT_ROWS)
    resp = run(live, {"rank_by": ["title", "BM25", "QUICK"], "include_attributes": ["title"]})
    # N=4, avgdl=11/4, df=2, idf=ln 2; doc2 tf=2 dl=3, doc1 tf=1 dl=4
    idf = math.log(2)
    s2 = idf * 2 / (2 + 1.2 * (0.25 + 0.75 * 3 / 2.75))
    s1 = idf * 1 / (1 + 1.2 * (0.25 + 0.75 * 4 / 2.75))
    assert ids(resp) == [2, 1]
    assert dists(resp) == pytest.approx([s2, s1], rel=1e-12)
    assert dists(resp) == pytest.approx([0.42241, 0.26567], abs=1e-5)
    assert resp["rows"][0]["title"] == "quick quick dog"


def test_bm25_multi_term_matches_direct_formula() -> None:
    live = make_live(TEXT_ATTRS, TEXT_ROWS)
    resp = run(live, {"rank_by": ["title", "BM25", "brown dog fox"]})
    expect = bm25_direct(TOKENS, ["brown", "dog", "fox"])
    ranked = sorted(expect.items(), key=lambda kv: (-kv[1], kv[0]))
    assert ids(resp) == [i + 1 for i, _ in ranked]
    assert dists(resp) == pytest.approx([s for _, s in ranked], rel=1e-12)
    assert run(live, {"rank_by": ["title", "BM25", "zebra"]})["rows"] == []
    assert run(live, {"rank_by": ["title", "BM25", ""]})["rows"] == []


def test_bm25_filters_do_not_change_scores() -> None:
    live = make_live(TEXT_ATTRS, TEXT_ROWS)
    full = {r["id"]: r["$dist"] for r in run(live, {"rank_by": ["title", "BM25", "quick dog"]})["rows"]}
    resp = run(live, {"rank_by": ["title", "BM25", "quick dog"], "filters": ["cat", "Eq", "a"]})
    assert ids(resp) == [3, 1]
    assert dists(resp) == [full[3], full[1]]


def test_bm25_array_attribute_with_stemming() -> None:
    live = make_live(TEXT_ATTRS, TEXT_ROWS)
    resp = run(live, {"rank_by": ["tags", "BM25", "run"]})
    assert sorted(ids(resp)) == [1, 3]  # running, runs -> run


def test_bm25_last_as_prefix() -> None:
    live = make_live(TEXT_ATTRS, TEXT_ROWS)
    resp = run(live, {"rank_by": ["title", "BM25", "bro", {"last_as_prefix": True}]})
    assert ids(resp) == [1, 5] and dists(resp) == [1.0, 1.0]  # a prefix match scores 1.0
    resp = run(live, {"rank_by": ["title", "BM25", "lazy bre", {"last_as_prefix": True}]})
    lazy = bm25_direct(TOKENS, ["lazy"])[2]
    assert lazy < 1.0
    assert ids(resp) == [5, 3] and dists(resp) == pytest.approx([1.0, lazy])


def test_sum_max_product_and_filters_as_scores() -> None:
    live = make_live(TEXT_ATTRS, TEXT_ROWS)
    quick = bm25_direct(TOKENS, ["quick"])
    dog = bm25_direct(TOKENS, ["dog"])

    resp = run(live, {"rank_by": ["Sum", [["title", "BM25", "quick"], ["title", "BM25", "dog"]]]})
    expect = {i + 1: quick.get(i, 0) + dog.get(i, 0) for i in set(quick) | set(dog)}
    assert dict(zip(ids(resp), dists(resp), strict=True)) == pytest.approx(expect)
    assert ids(resp) == sorted(expect, key=lambda i: (-expect[i], i))

    resp = run(live, {"rank_by": ["Max", [["title", "BM25", "quick"], ["title", "BM25", "dog"]]]})
    expect = {i + 1: max(quick.get(i, 0), dog.get(i, 0)) for i in set(quick) | set(dog)}
    assert dict(zip(ids(resp), dists(resp), strict=True)) == pytest.approx(expect)

    for body in (["Product", 3, ["title", "BM25", "quick"]], ["Product", ["title", "BM25", "quick"], 3]):
        resp = run(live, {"rank_by": body})
        assert ids(resp) == [2, 1] and dists(resp) == pytest.approx([3 * quick[1], 3 * quick[0]])
    assert run(live, {"rank_by": ["Product", 0, ["title", "BM25", "quick"]]})["rows"] == []

    # a filter scores 1 or 0: boosts cat "b", and brings in doc 5, which has no BM25 match
    resp = run(live, {"rank_by": ["Sum", [["title", "BM25", "dog"], ["Product", 0.5, ["cat", "Eq", "b"]]]]})
    expect = {2: dog[1] + 0.5, 3: dog[2], 5: 0.5}
    assert dict(zip(ids(resp), dists(resp), strict=True)) == pytest.approx(expect)
    assert ids(resp) == sorted(expect, key=lambda i: (-expect[i], i))

    # a bare filter as the rank: every match scores 1, ties by id
    resp = run(live, {"rank_by": ["cat", "Eq", "a"], "top_k": 2})
    assert ids(resp) == [1, 3] and dists(resp) == [1.0, 1.0]


def test_token_filters() -> None:
    live = make_live(TEXT_ATTRS, TEXT_ROWS)
    q = {"rank_by": ["id", "asc"]}
    assert ids(run(live, {**q, "filters": ["title", "ContainsAllTokens", "fox QUICK"]})) == [1]
    assert ids(run(live, {**q, "filters": ["title", "ContainsAnyToken", "fox bread"]})) == [1, 5]
    assert ids(run(live, {**q, "filters": ["title", "ContainsTokenSequence", "quick brown"]})) == [1]
    assert ids(run(live, {**q, "filters": ["title", "ContainsTokenSequence", "brown quick"]})) == []
    assert ids(
        run(live, {**q, "filters": ["title", "ContainsAllTokens", "la", {"last_as_prefix": True}]})
    ) == [3]
    assert ids(run(live, {**q, "filters": ["Not", ["title", "ContainsAnyToken", "dog"]]})) == [1, 4, 5]


# ----------------------------------------------------------------------------------------- order by

ORDER_ATTRS = {
    "n": attr("int"),
    "cat": attr("string"),
    "price": attr("float"),
    "flag": attr("bool"),
    "ts": attr("datetime"),
}
ORDER_ROWS = [
    {"id": 1, "n": 3, "cat": "a", "price": 1.5, "flag": True, "ts": "2024-01-03T00:00:00Z"},
    {"id": 2, "n": None, "cat": "b", "price": 2.0, "flag": False},
    {"id": 3, "n": 1, "cat": "a", "price": None, "flag": True, "ts": "2024-01-01T00:00:00.250Z"},
    {"id": 4, "n": 3, "cat": None, "price": 0.25, "flag": None, "ts": "2024-01-02T00:00:00Z"},
    {"id": 5, "n": None, "cat": "b", "price": 1.0, "flag": False},
    {"id": 6, "n": 2, "cat": "a", "price": None, "flag": False, "ts": "2023-12-31T00:00:00Z"},
]


@pytest.mark.parametrize("chunks", [1, 4])
def test_order_by_nulls_ties_and_offset(chunks: int) -> None:
    live = make_live(ORDER_ATTRS, ORDER_ROWS, chunks=chunks)
    assert ids(run(live, {"rank_by": ["n", "asc"]})) == [2, 5, 3, 6, 1, 4]  # nulls first
    assert ids(run(live, {"rank_by": ["n", "desc"]})) == [1, 4, 6, 3, 2, 5]  # nulls last, ties by id
    assert ids(run(live, {"rank_by": ["n", "asc"], "top_k": 2, "offset": 2})) == [3, 6]
    assert ids(run(live, {"rank_by": ["n", "asc"], "top_k": 2, "offset": 5})) == [4]
    assert ids(run(live, {"rank_by": ["n", "asc"], "offset": 6})) == []
    resp = run(live, {"rank_by": ["n", "asc"], "top_k": 1, "include_attributes": ["n", "ts"]})
    assert resp["rows"] == [{"id": 2, "n": None, "ts": None}]  # no $dist for order-by
    assert ids(run(live, {"rank_by": ["ts", "asc"]})) == [2, 5, 6, 3, 4, 1]
    row = run(live, {"rank_by": ["ts", "asc"], "filters": ["id", "Eq", 3], "include_attributes": ["ts"]})[
        "rows"
    ]
    assert row == [{"id": 3, "ts": "2024-01-01T00:00:00.250Z"}]
    assert ids(run(live, {"rank_by": ["flag", "desc"]})) == [1, 3, 2, 5, 6, 4]
    assert ids(run(live, {"rank_by": ["price", "desc"], "filters": ["cat", "Eq", "a"]})) == [1, 3, 6]


def test_order_by_id_paging() -> None:
    live = make_live(ORDER_ATTRS, ORDER_ROWS)
    assert ids(run(live, {"rank_by": ["id", "asc"]})) == [1, 2, 3, 4, 5, 6]
    assert ids(run(live, {"rank_by": ["id", "desc"], "top_k": 2})) == [6, 5]
    seen: list[int] = []
    last = None
    while True:
        body: dict[str, Any] = {"rank_by": ["id", "asc"], "top_k": 4}
        if last is not None:
            body["filters"] = ["id", "Gt", last]
        page = ids(run(live, body))
        if not page:
            break
        seen += page
        last = page[-1]
    assert seen == [1, 2, 3, 4, 5, 6]


def test_order_by_multiple_keys_and_per_diversification() -> None:
    live = make_live(ORDER_ATTRS, ORDER_ROWS)
    assert ids(run(live, {"rank_by": [["cat", "asc"], ["n", "desc"]]})) == [4, 1, 6, 3, 2, 5]
    assert ids(run(live, {"rank_by": [["n", "desc"]]})) == [1, 4, 6, 3, 2, 5]
    per = {"total": 10, "per": {"attributes": ["cat"], "limit": 1}}
    assert ids(run(live, {"rank_by": ["n", "asc"], "limit": per})) == [2, 3, 4]
    per2 = {"total": 3, "per": {"attributes": ["cat"], "limit": 2}}
    assert ids(run(live, {"rank_by": ["n", "asc"], "limit": per2})) == [2, 5, 3]
    assert ids(run(live, {"rank_by": ["n", "asc"], "limit": per2, "offset": 1})) == [5, 3, 6]
    per3 = {"total": 10, "per": {"attributes": ["cat", "flag"], "limit": 1}}
    assert ids(run(live, {"rank_by": ["id", "asc"], "limit": per3})) == [1, 2, 4, 6]


def test_string_and_uuid_ids() -> None:
    rows = [{"id": s, "n": i} for i, s in enumerate(["b", "a", "c", "ab"])]
    live = make_live({"n": attr("int")}, rows, id_type="string")
    assert ids(run(live, {"rank_by": ["id", "asc"]})) == ["a", "ab", "b", "c"]
    assert ids(run(live, {"rank_by": ["n", "asc"], "top_k": 2})) == ["b", "a"]
    us = [str(uuid.UUID(int=x)) for x in (5, 2**127, 7)]
    live = make_live({"n": attr("int")}, [{"id": u, "n": 1} for u in us], id_type="uuid")
    assert ids(run(live, {"rank_by": ["n", "asc"]})) == sorted(us)  # tie on n -> id (bytes) order


def test_missing_columns_are_null() -> None:
    schema = Schema("uint", {"n": attr("int"), "cat": attr("string")}, None)
    live = LiveDocs(
        schema, pa.table({"id": pa.array([2, 1], pa.uint64()), "n": pa.array([5, None], pa.int64())})
    )
    resp = run(live, {"rank_by": ["cat", "asc"], "include_attributes": True})
    assert resp["rows"] == [{"id": 1, "n": None, "cat": None}, {"id": 2, "n": 5, "cat": None}]


# ----------------------------------------------------------------------------------------- aggregations


def test_aggregations_without_group_by() -> None:
    live = make_live(ORDER_ATTRS, ORDER_ROWS)
    resp = run(live, {"aggregate_by": {"count": ["Count"], "n": ["Sum", "n"], "p": ["Sum", "price"]}})
    assert resp["aggregations"] == {"count": 6, "n": 9, "p": 4.75}
    assert isinstance(resp["aggregations"]["n"], int) and isinstance(resp["aggregations"]["p"], float)
    assert "rows" not in resp
    resp = run(live, {"aggregate_by": {"c": ["Count"], "s": ["Sum", "n"]}, "filters": ["n", "Gte", 2]})
    assert resp["aggregations"] == {"c": 3, "s": 8}
    resp = run(live, {"aggregate_by": {"c": ["Count"], "s": ["Sum", "price"]}, "filters": ["id", "Gt", 99]})
    assert resp["aggregations"] == {"c": 0, "s": 0.0}
    assert run(live, {"aggregate_by": {"c": ["Count", "n"]}})["aggregations"] == {"c": 4}


def test_aggregations_group_by() -> None:
    live = make_live(ORDER_ATTRS, ORDER_ROWS, chunks=2)
    resp = run(
        live,
        {"aggregate_by": {"c": ["Count"], "s": ["Sum", "n"], "p": ["Sum", "price"]}, "group_by": ["cat"]},
    )
    assert resp["aggregation_groups"] == [
        {"cat": None, "c": 1, "s": 3, "p": 0.25},
        {"cat": "a", "c": 3, "s": 6, "p": 1.5},
        {"cat": "b", "c": 2, "s": 0, "p": 3.0},
    ]
    resp = run(live, {"aggregate_by": {"c": ["Count"]}, "group_by": ["cat"], "top_k": 2})
    assert resp["aggregation_groups"] == [{"cat": None, "c": 1}, {"cat": "a", "c": 3}]
    resp = run(live, {"aggregate_by": {"c": ["Count"]}, "group_by": ["cat", "flag"]})
    assert resp["aggregation_groups"] == [
        {"cat": None, "flag": None, "c": 1},
        {"cat": "a", "flag": False, "c": 1},
        {"cat": "a", "flag": True, "c": 2},
        {"cat": "b", "flag": False, "c": 2},
    ]
    resp = run(live, {"aggregate_by": {"c": ["Count"]}, "group_by": ["ts"], "filters": ["id", "Lte", 3]})
    assert resp["aggregation_groups"] == [
        {"ts": None, "c": 1},
        {"ts": "2024-01-01T00:00:00.250Z", "c": 1},
        {"ts": "2024-01-03T00:00:00Z", "c": 1},
    ]
    resp = run(live, {"aggregate_by": {"c": ["Count"]}, "group_by": ["cat"], "filters": ["id", "Gt", 99]})
    assert resp["aggregation_groups"] == []


def test_sum_is_exact_for_large_integers() -> None:
    big = 2**62
    live = make_live(
        {"n": attr("int"), "u": attr("uint")}, [{"id": i, "n": big, "u": 2**63} for i in range(4)]
    )
    resp = run(live, {"aggregate_by": {"n": ["Sum", "n"], "u": ["Sum", "u"]}})
    assert resp["aggregations"] == {"n": 4 * big, "u": 4 * 2**63}


# ----------------------------------------------------------------------------------------- multi-query


HYBRID_ATTRS = {"vector": attr("[2]f32"), **TEXT_ATTRS}
HYBRID_ROWS = [
    {**t, "vector": v} for t, v in zip(TEXT_ROWS, [[1, 0], [0.6, 0.8], [0, 1], [1, 1], [-1, 0]], strict=True)
]


def rrf_direct(results: list[list[Any]], k: float, weights: list[float]) -> list[tuple[Any, float]]:
    scores: dict[Any, float] = {}
    for w, rows in zip(weights, results, strict=True):
        for rank, doc_id in enumerate(rows, start=1):
            scores[doc_id] = scores.get(doc_id, 0.0) + w / (k + rank)
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


def test_multi_query_results_in_order() -> None:
    live = make_live(HYBRID_ATTRS, HYBRID_ROWS)
    q1 = {"rank_by": ["vector", "ANN", [1, 0]], "top_k": 2}
    q2 = {"aggregate_by": {"c": ["Count"]}, "filters": ["cat", "Eq", "a"]}
    q3 = {"rank_by": ["id", "desc"], "top_k": 1, "include_attributes": ["vector"]}
    resp = run(live, {"queries": [q1, q2, q3], "vector_encoding": "base64"})
    assert [ids({"rows": resp["results"][0]["rows"]})] == [ids(run(live, q1))]
    assert resp["results"][1] == {"aggregations": {"c": 3}}
    v5 = base64.b64encode(np.array([-1, 0], dtype="<f4").tobytes()).decode()
    assert resp["results"][2] == {"rows": [{"id": 5, "vector": v5}]}
    assert resp["performance"]["exhaustive_search_count"] == 15
    assert resp["performance"]["approx_namespace_size"] == 5


@pytest.mark.parametrize(
    ("params", "limit", "offset"),
    [(None, None, 0), ({"rank_constant": 1, "weights": [2.0, 0.5]}, 3, 0), ({"weights": [1, 1]}, 2, 1)],
)
def test_multi_query_rrf_matches_direct_fusion(
    params: dict[str, Any] | None, limit: int | None, offset: int
) -> None:
    live = make_live(HYBRID_ATTRS, HYBRID_ROWS)
    q1 = {"rank_by": ["vector", "ANN", [1, 0.2]], "top_k": 4, "include_attributes": ["cat"]}
    q2 = {"rank_by": ["title", "BM25", "quick dog bread"], "top_k": 4}
    body: dict[str, Any] = {"queries": [q1, q2], "rerank_by": ["RRF"] if params is None else ["RRF", params]}
    if limit is not None:
        body["limit"] = limit
    if offset:
        body["offset"] = offset
    resp = run(live, body)
    assert list(resp) == ["results", "billing", "performance"]
    (fused,) = resp["results"]
    k = (params or {}).get("rank_constant", 60)
    weights = (params or {}).get("weights", [1.0, 1.0])
    expect = rrf_direct([ids(run(live, q1)), ids(run(live, q2))], k, weights)
    page = expect[offset : offset + (limit or 4)]
    assert [r["id"] for r in fused["rows"]] == [i for i, _ in page]
    assert [r["$dist"] for r in fused["rows"]] == pytest.approx([s for _, s in page], rel=1e-12)
    cats = {
        r["id"]: r["cat"]
        for r in run(live, {"rank_by": ["id", "asc"], "include_attributes": ["cat"]})["rows"]
    }
    assert all(r["cat"] == cats[r["id"]] for r in fused["rows"])  # union of included attributes


def test_rrf_first_rank_is_one() -> None:
    live = make_live(HYBRID_ATTRS, HYBRID_ROWS)
    q = {"rank_by": ["id", "asc"], "top_k": 1}
    resp = run(live, {"queries": [q], "rerank_by": ["RRF"]})
    assert resp["results"][0]["rows"] == [{"id": 1, "$dist": pytest.approx(1 / 61)}]


# ----------------------------------------------------------------------------------------- explain


def test_explain_mentions_every_step() -> None:
    live = make_live(HYBRID_ATTRS, HYBRID_ROWS)
    body = {
        "rank_by": ["Sum", [["title", "BM25", "quick"], ["Product", 2, ["cat", "Eq", "a"]]]],
        "filters": ["cat", "NotEq", None],
        "top_k": 3,
        "include_attributes": ["title"],
    }
    text = explain_query(parse_request(body, live.schema), live)
    for fragment in ("5 live documents", 'cat NotEq null', "BM25 'title' 'quick'", "4 documents with text",
                     "Product x 2", "filter as score", "offset 0, limit 3", "attributes: title"):  # fmt: skip
        assert fragment in text, (fragment, text)
    text = explain_query(parse_request({"rank_by": ["vector", "kNN", [1, 0]]}, live.schema), live)
    assert "5 vectors x 2 dims" in text and "cosine_distance" in text
    multi = {
        "queries": [
            {"rank_by": ["vector", "ANN", [1, 0]]},
            {"aggregate_by": {"c": ["Count"]}, "group_by": ["cat"]},
        ],
    }
    text = explain_query(parse_request(multi, live.schema), live)
    assert "query 0:" in text and "query 1:" in text and "group by: cat" in text
    fused = {"queries": [{"rank_by": ["id", "asc"]}], "rerank_by": ["RRF", {"rank_constant": 5}], "limit": 2}
    text = explain_query(parse_request(fused, live.schema), live)
    assert "RRF" in text and "5 + rank_i" in text and "limit 2" in text


def test_null_vectors_in_rows() -> None:
    live = make_live(VEC_ATTRS, VEC_ROWS)
    for enc in ("float", "base64"):
        body = {
            "rank_by": ["id", "asc"],
            "include_attributes": ["vector"],
            "vector_encoding": enc,
            "top_k": 4,
        }
        rows = run(live, body)["rows"]
        assert rows[3] == {"id": 4, "vector": None}
        assert rows[0]["vector"] == ([1.0, 0.0] if enc == "float" else "AACAPwAAAAA=")


def test_live_docs_shared_by_concurrent_queries() -> None:
    from concurrent.futures import ThreadPoolExecutor

    live = make_live(HYBRID_ATTRS, HYBRID_ROWS)
    bodies = [
        {"rank_by": ["vector", "ANN", [1, 0]], "top_k": 3},
        {"rank_by": ["title", "BM25", "quick dog"]},
        {"rank_by": ["cat", "desc"]},
    ] * 8
    fresh = [run(make_live(HYBRID_ATTRS, HYBRID_ROWS), b)["rows"] for b in bodies]
    with ThreadPoolExecutor(8) as pool:
        shared = list(pool.map(lambda b: run(live, b)["rows"], bodies))
    assert shared == fresh


def test_rows_fetched_in_slices_are_the_rows_fetched_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under limits.max_returned_bytes, rows estimated large are read a slice at a time (so a
    request past the budget stops at the slice that crosses it): the answer is the same rows."""
    import lagoon.query.execute as ex

    live = make_live(
        {"s": attr("string"), "n": attr("int")},
        [{"id": i, "s": "v" * (i // 10), "n": i * 3} for i in range(3000)],
    )
    body = {"rank_by": ["n", "desc"], "top_k": 2500, "include_attributes": True}
    whole = execute_query(parse_request(body, live.schema), live)
    monkeypatch.setattr(ex, "_SLICED_FETCH_BYTES", 0)
    monkeypatch.setattr(ex, "_FETCH_SLICE_ROWS", 7)
    sliced = execute_query(parse_request(body, live.schema), live, max_returned_bytes=10**9)
    assert sliced["rows"] == whole["rows"] and len(sliced["rows"]) == 2500
    # (each slice's string offsets buffer counts once more in the billed bytes)
    returned = whole["billing"]["billable_logical_bytes_returned"]
    assert returned <= sliced["billing"]["billable_logical_bytes_returned"] <= returned * 1.01
    # a budget the average document's estimate fits and the rows as read (the top n hold the
    # longest strings) do not: refused at the slice that crosses it
    estimate = live.logical_bytes(["id", "s", "n"]) * 2500 // live.num_docs
    budget = (estimate + returned) // 2
    assert estimate < budget < returned
    seen: list[int] = []
    fetch = live.fetch_rows
    monkeypatch.setattr(live, "fetch_rows", lambda pos, inc: seen.append(len(pos)) or fetch(pos, inc))
    with pytest.raises(ex.InvalidRequest, match=r"limits\.max_returned_bytes"):
        execute_query(parse_request(body, live.schema), live, max_returned_bytes=budget)
    assert 0 < sum(seen) < 2500  # it stopped before reading every row


def test_small_rows_are_not_refused_for_a_large_average_document() -> None:
    """The average document only chooses how rows are read: a few huge documents make the
    average of this namespace ~10 KB, yet the 2,000 small rows a query returns (~40 KB) are
    answered under a 1 MB budget, and rows that do pass it are still refused."""
    import lagoon.query.execute as ex

    rows = [{"id": i, "s": "v" * 10, "n": i} for i in range(3000)]
    rows += [{"id": 3000 + i, "s": "w" * 1_000_000, "n": 10_000 + i} for i in range(30)]
    live = make_live({"s": attr("string"), "n": attr("int")}, rows)
    body = {"rank_by": ["n", "asc"], "top_k": 2000, "include_attributes": True}
    estimate = live.logical_bytes(["id", "s", "n"]) * 2000 // live.num_docs
    budget = 1 << 20
    assert estimate > budget  # the estimate alone would refuse it
    out = execute_query(parse_request(body, live.schema), live, max_returned_bytes=budget)
    assert [r["id"] for r in out["rows"]] == list(range(2000))
    heavy = {"rank_by": ["n", "desc"], "top_k": 5, "include_attributes": True}
    with pytest.raises(ex.InvalidRequest, match=r"limits\.max_returned_bytes"):
        execute_query(parse_request(heavy, live.schema), live, max_returned_bytes=budget)
