"""The conformance steps (``tests/sdk/conformance.py`` runs them through both SDKs).

Expected values are computed here from turbopuffer's documented formulas on tiny corpora whose
analysis is obvious (lowercase words split on spaces): cosine distance ``1 − a·b/(|a||b|)``,
squared euclidean ``Σ(a−b)²``, BM25 with ``idf = ln(1 + (N − df + 0.5)/(df + 0.5))`` and term
weight ``tf/(tf + k1·(1 − b + b·dl/avgdl))`` (k1 = 1.2, b = 0.75), ``Saturate = x^e/(x^e + m^e)``,
``Decay = m^e/(x^e + m^e)``, RRF ``Σ w/(k + rank)`` with k = 60. Nothing here calls Lagoon code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from tests.sdk.conformance import Step, error, fields, ids, predicate, rows, value

DOCS = [
    {"id": 1, "vector": [1.0, 0.0, 0.0], "title": "the quick brown fox", "cat": "a", "n": 5,
     "tags": ["x", "y"], "code": "ab-1", "price": 10.0, "day": "2024-01-01"},
    {"id": 2, "vector": [0.9, 0.1, 0.0], "title": "a lazy dog sleeps", "cat": "b", "n": 3,
     "tags": ["y"], "code": "ab-2", "price": 20.0, "day": "2024-01-02"},
    {"id": 3, "vector": [0.0, 1.0, 0.0], "title": "quick quick fox jumps", "cat": "a", "n": 8,
     "tags": ["x", "z"], "code": "cd-3", "price": 30.0, "day": "2024-01-03"},
    {"id": 4, "vector": [0.0, 0.0, 1.0], "title": "brown dog and fox", "cat": "b", "n": 1,
     "tags": [], "code": "cd-4", "price": 40.0, "day": "2024-01-04"},
    {"id": 5, "vector": [0.5, 0.5, 0.0], "title": "nothing to see", "cat": "a", "n": 13,
     "tags": ["z"], "code": "ef-5", "price": 50.0, "day": "2024-01-05"},
]  # fmt: skip
SCHEMA = {
    "title": {"type": "string", "full_text_search": True},
    "code": {"type": "string", "regex": True},
    "cat": {"type": "string", "glob": True},
    "day": "datetime",
}
Q = [1.0, 0.2, 0.0]


# --------------------------------------------------------------------------------------------- references


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return 1.0 - dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def euclid(a: Sequence[float], b: Sequence[float]) -> float:
    return sum((x - y) ** 2 for x, y in zip(a, b, strict=True))


def bm25(texts: dict[Any, str], query: str, k1: float = 1.2, b: float = 0.75) -> dict[Any, float]:
    """Scores of every document with a positive score (texts: lowercase words split on spaces)."""
    docs = {i: t.split() for i, t in texts.items() if t.split()}
    n = len(docs)
    avgdl = sum(len(t) for t in docs.values()) / n
    out: dict[Any, float] = {}
    for i, toks in docs.items():
        s = 0.0
        for term in dict.fromkeys(query.split()):
            tf = toks.count(term)
            if not tf:
                continue
            df = sum(term in t for t in docs.values())
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            s += idf * tf / (tf + k1 * (1 - b + b * len(toks) / avgdl))
        if s > 0:
            out[i] = s
    return out


def ranked(
    scores: dict[Any, float], *, descending: bool = True, top: int | None = None
) -> list[dict[str, Any]]:
    """Rows ordered by score (ties by id), with ``$dist``."""
    order = sorted(scores, key=lambda i: (-scores[i] if descending else scores[i], i))
    return [{"id": i, "$dist": scores[i]} for i in order[:top]]


TITLES = {d["id"]: d["title"] for d in DOCS}
VEC = {d["id"]: d["vector"] for d in DOCS}
N = {d["id"]: d["n"] for d in DOCS}
PRICE = {d["id"]: d["price"] for d in DOCS}


def rrf(*lists: Sequence[Any], k: float = 60.0) -> dict[Any, float]:
    out: dict[Any, float] = {}
    for lst in lists:
        for rank, i in enumerate(lst, start=1):
            out[i] = out.get(i, 0.0) + 1.0 / (k + rank)
    return out


def _s(area: str, name: str, method: str, params: dict[str, Any] | None, check: Any, **kw: Any) -> Step:
    return Step(area, name, method, params, check, **kw)


# --------------------------------------------------------------------------------------------- steps


def write_steps() -> list[Step]:
    r = {"representative": True}
    return [
        _s("write", "upsert_rows", "write",
           {"upsert_rows": DOCS, "distance_metric": "cosine_distance", "schema": SCHEMA},
           fields(status="OK", rows_affected=5, rows_upserted=5), **r),
        _s("write", "upsert_columns", "write",
           {"upsert_columns": {"id": [10, 11, 12], "vector": [[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]],
                               "kind": ["x", "y", "y"]}, "distance_metric": "euclidean_squared"},
           fields(rows_upserted=3), namespace="w", **r),
        _s("write", "columns_ann_euclidean", "query", {"rank_by": ["vector", "ANN", [0.0, 1.0]], "top_k": 3},
           rows([{"id": 11, "$dist": 0.0}, {"id": 12, "$dist": euclid([0.6, 0.8], [0, 1])},
                 {"id": 10, "$dist": 2.0}]), namespace="w", **r),
        _s("write", "patch_rows", "write", {"patch_rows": [{"id": 11, "kind": "z"}]},
           fields(rows_patched=1), namespace="w"),
        _s("write", "patched_value", "query",
           {"rank_by": ["id", "asc"], "filters": ["id", "Eq", 11], "include_attributes": ["kind"]},
           rows([{"id": 11, "kind": "z"}]), namespace="w"),
        _s("write", "deletes_affected_ids", "write", {"deletes": [12], "return_affected_ids": True},
           fields(rows_deleted=1, deleted_ids=[12]), namespace="w"),
        _s("write", "upsert_condition_false", "write",
           {"upsert_rows": [{"id": 10, "vector": [1.0, 1.0], "kind": "q"}],
            "upsert_condition": ["kind", "Eq", "nope"]},
           fields(rows_affected=0), namespace="w"),
        _s("write", "upsert_condition_ref_new", "write",
           {"upsert_rows": [{"id": 10, "vector": [1.0, 1.0], "kind": "x2"}],
            "upsert_condition": ["kind", "Lt", {"$ref_new": "kind"}]},
           fields(rows_upserted=1), namespace="w"),
        _s("write", "delete_by_filter", "write", {"delete_by_filter": ["kind", "Eq", "z"]},
           fields(rows_deleted=1), namespace="w"),
        _s("write", "patch_by_filter", "write",
           {"patch_by_filter": {"filters": ["id", "Eq", 10], "patch": {"kind": "p"}}},
           fields(rows_patched=1), namespace="w"),
        _s("write", "final_state", "query", {"rank_by": ["id", "asc"], "include_attributes": ["kind"]},
           rows([{"id": 10, "kind": "p"}]), namespace="w"),
        _s("write", "duplicate_id_400", "write", {"upsert_rows": [{"id": 1, "a": 1}, {"id": 1, "a": 2}]},
           error(400, "more than once"), namespace="w"),
        _s("write", "vector_without_metric_400", "write", {"upsert_rows": [{"id": 1, "vector": [1.0]}]},
           error(400, "distance_metric"), namespace="nometric"),
    ]  # fmt: skip


def query_steps() -> list[Step]:
    r = {"representative": True}
    ann = ranked({i: cosine(v, Q) for i, v in VEC.items()}, descending=False)
    fox = ranked(bm25(TITLES, "fox"))
    quick_fox = ranked(bm25(TITLES, "quick fox"))
    return [
        _s("vector", "ann_cosine", "query", {"rank_by": ["vector", "ANN", Q], "top_k": 5}, rows(ann), **r),
        _s("vector", "knn_filtered", "query",
           {"rank_by": ["vector", "kNN", Q], "top_k": 5, "filters": ["cat", "Eq", "a"]},
           rows([r_ for r_ in ann if r_["id"] in (1, 3, 5)])),
        _s("vector", "ann_top_k_2_include", "query",
           {"rank_by": ["vector", "ANN", Q], "top_k": 2, "include_attributes": ["cat"]},
           rows([{**ann[0], "cat": "b"}, {**ann[1], "cat": "a"}])),
        _s("vector", "base64_encoding", "query",
           {"rank_by": ["id", "asc"], "top_k": 1, "include_attributes": ["vector"], "vector_encoding": "base64"},
           rows([{"id": 1, "vector": "AACAPwAAAAAAAAAA"}])),
        _s("vector", "wrong_dims_400", "query", {"rank_by": ["vector", "ANN", [1.0, 0.0]]}, error(400, "dimensions")),
        _s("fts", "bm25_one_term", "query", {"rank_by": ["title", "BM25", "fox"], "top_k": 10}, rows(fox), **r),
        _s("fts", "bm25_two_terms", "query", {"rank_by": ["title", "BM25", "quick fox"]}, rows(quick_fox)),
        _s("fts", "bm25_sum_product", "query",
           {"rank_by": ["Sum", [["title", "BM25", "fox"], ["Product", 2.0, ["title", "BM25", "dog"]]]]},
           rows(ranked({i: bm25(TITLES, "fox").get(i, 0) + 2 * bm25(TITLES, "dog").get(i, 0)
                        for i in TITLES if i in bm25(TITLES, "fox") or i in bm25(TITLES, "dog")}))),
        _s("fts", "bm25_max", "query",
           {"rank_by": ["Max", [["title", "BM25", "fox"], ["title", "BM25", "dog"]]]},
           rows(ranked({i: max(bm25(TITLES, "fox").get(i, 0), bm25(TITLES, "dog").get(i, 0))
                        for i in (1, 2, 3, 4)}))),
        _s("fts", "bm25_last_as_prefix", "query",
           {"rank_by": ["title", "BM25", "jum", {"last_as_prefix": True}]}, ids([3])),
        _s("fts", "bm25_token_array", "query", {"rank_by": ["title", "BM25", ["quick", "fox"]]},
           rows(quick_fox), representative=True),
        _s("fts", "filter_as_score", "query",
           {"rank_by": ["Sum", [["title", "BM25", "fox"], ["cat", "Eq", "b"]]]},
           rows(ranked({1: fox[0]["$dist"], 3: fox[1]["$dist"], 4: fox[2]["$dist"] + 1, 2: 1.0}))),
        _s("filters", "eq", "query", {"rank_by": ["id", "asc"], "filters": ["cat", "Eq", "a"]}, ids([1, 3, 5]), **r),
        _s("filters", "gt", "query", {"rank_by": ["id", "asc"], "filters": ["n", "Gt", 4]}, ids([1, 3, 5])),
        _s("filters", "and_lt", "query",
           {"rank_by": ["id", "asc"], "filters": ["And", [["cat", "Eq", "b"], ["n", "Lt", 3]]]}, ids([4])),
        _s("filters", "or_not_in", "query",
           {"rank_by": ["id", "asc"],
            "filters": ["Or", [["n", "Gte", 13], ["Not", ["id", "NotIn", [2]]]]]}, ids([2, 5])),
        _s("filters", "in", "query", {"rank_by": ["id", "asc"], "filters": ["id", "In", [2, 4, 9]]}, ids([2, 4])),
        _s("filters", "contains", "query", {"rank_by": ["id", "asc"], "filters": ["tags", "Contains", "x"]},
           ids([1, 3])),
        _s("filters", "contains_any", "query",
           {"rank_by": ["id", "asc"], "filters": ["tags", "ContainsAny", ["y", "z"]]}, ids([1, 2, 3, 5])),
        _s("filters", "glob", "query", {"rank_by": ["id", "asc"], "filters": ["cat", "Glob", "[b]*"]},
           ids([2, 4])),
        _s("filters", "regex", "query", {"rank_by": ["id", "asc"], "filters": ["code", "Regex", "^cd-"]},
           ids([3, 4])),
        _s("filters", "datetime_gte", "query",
           {"rank_by": ["id", "asc"], "filters": ["day", "Gte", "2024-01-04T00:00:00Z"]}, ids([4, 5])),
        _s("filters", "contains_all_tokens", "query",
           {"rank_by": ["id", "asc"], "filters": ["title", "ContainsAllTokens", "quick fox"]}, ids([1, 3])),
        _s("filters", "contains_token_sequence", "query",
           {"rank_by": ["id", "asc"], "filters": ["title", "ContainsTokenSequence", "quick fox"]}, ids([3])),
        _s("filters", "unknown_op_400", "query", {"rank_by": ["id", "asc"], "filters": ["n", "Near", 4]},
           error(400)),
        _s("order", "desc", "query", {"rank_by": ["n", "desc"]}, ids([5, 3, 1, 2, 4]), **r),
        _s("order", "offset", "query", {"rank_by": ["n", "desc"], "top_k": 2, "offset": 1}, ids([3, 1])),
        _s("order", "multi_attribute", "query", {"rank_by": [["cat", "asc"], ["n", "desc"]]},
           ids([5, 3, 1, 2, 4])),
        _s("order", "limit_per", "query",
           {"rank_by": ["n", "desc"], "limit": {"total": 10, "per": {"attributes": ["cat"], "limit": 1}}},
           ids([5, 2])),
        _s("order", "include_true", "query", {"rank_by": ["id", "asc"], "top_k": 1, "include_attributes": True},
           rows([{"id": 1, "title": "the quick brown fox", "cat": "a", "n": 5, "tags": ["x", "y"]}])),
        _s("order", "exclude", "query",
           {"rank_by": ["id", "asc"], "top_k": 1, "exclude_attributes": ["vector", "title", "tags", "code", "price", "day"]},
           rows([{"id": 1, "cat": "a", "n": 5}], exact_keys=True)),
        _s("aggregate", "count_sum", "query", {"aggregate_by": {"c": ["Count"], "s": ["Sum", "n"]}},
           fields(aggregations__c=5, aggregations__s=30), **r),
        _s("aggregate", "group_by", "query",
           {"aggregate_by": {"c": ["Count"], "s": ["Sum", "n"]}, "group_by": ["cat"]},
           rows([{"cat": "a", "c": 3, "s": 26}, {"cat": "b", "c": 2, "s": 4}], key="aggregation_groups")),
        _s("aggregate", "filtered_count", "query", {"aggregate_by": {"c": ["Count"]}, "filters": ["n", "Gt", 3]},
           fields(aggregations__c=3)),
        _s("aggregate", "for_each_unique", "query",
           {"aggregate_by": {"c": ["Count"], "s": ["Sum", "n"]}, "group_by": [{"tag": ["ForEachUnique", "tags"]}]},
           rows([{"tag": "x", "c": 2, "s": 13}, {"tag": "y", "c": 2, "s": 8}, {"tag": "z", "c": 2, "s": 21}],
                key="aggregation_groups"), representative=True),
        _s("aggregate", "for_each_unique_with_attr", "query",
           {"aggregate_by": {"c": ["Count"]}, "group_by": ["cat", {"tag": ["ForEachUnique", "tags"]}]},
           rows([{"cat": "a", "tag": "x", "c": 2}, {"cat": "a", "tag": "y", "c": 1},
                 {"cat": "a", "tag": "z", "c": 2}, {"cat": "b", "tag": "y", "c": 1}], key="aggregation_groups")),
        _s("aggregate", "for_each_unique_scalar_400", "query",
           {"aggregate_by": {"c": ["Count"]}, "group_by": [{"k": ["ForEachUnique", "cat"]}]}, error(400, "array")),
    ]  # fmt: skip


def multi_steps() -> list[Step]:
    ann3 = [r["id"] for r in ranked({i: cosine(v, Q) for i, v in VEC.items()}, descending=False, top=3)]
    fox3 = [r["id"] for r in ranked(bm25(TITLES, "fox"), top=3)]
    return [
        _s("multi", "two_queries", "multi_query",
           {"queries": [{"rank_by": ["vector", "ANN", Q], "top_k": 3}, {"rank_by": ["title", "BM25", "fox"], "top_k": 3}]},
           predicate(lambda r: [x["id"] for x in r["results"][0]["rows"]] == ann3
                     and [x["id"] for x in r["results"][1]["rows"]] == fox3, f"results ids {ann3} and {fox3}"),
           representative=True),
        _s("multi", "rrf", "multi_query",
           {"queries": [{"rank_by": ["vector", "ANN", Q], "top_k": 3}, {"rank_by": ["title", "BM25", "fox"], "top_k": 3}],
            "rerank_by": ["RRF"], "limit": 5},
           rows(ranked(rrf(ann3, fox3)), key="results.0.rows"), representative=True),
        _s("multi", "aggregate_and_rank", "multi_query",
           {"queries": [{"aggregate_by": {"c": ["Count"]}}, {"rank_by": ["n", "asc"], "top_k": 1}]},
           predicate(lambda r: r["results"][0]["aggregations"]["c"] == 5 and r["results"][1]["rows"][0]["id"] == 4,
                     "count 5 and first id 4")),
    ]  # fmt: skip


def namespace_steps() -> list[Step]:
    r = {"representative": True}
    return [
        _s("namespace", "metadata", "metadata", None,
           predicate(lambda m: m["approx_row_count"] == 5 and m["encryption"] == {"mode": "default"}
                     and (m["index"] == {"status": "up-to-date"}
                          or (m["index"]["status"] == "updating" and isinstance(m["index"]["unindexed_rows"], int)
                              and isinstance(m["index"]["unindexed_bytes"], int))),
                     "5 rows, default encryption, index status with unindexed rows and bytes"), **r),
        _s("namespace", "schema", "schema", None,
           predicate(lambda s: s["title"]["type"] == "string" and bool(s["title"]["full_text_search"])
                     and s["vector"]["type"] == "[3]f32"
                     and s["vector"]["ann"]["distance_metric"] == "cosine_distance"
                     and s["day"]["type"] == "datetime", "title FTS, [3]f32 cosine vector, datetime day"), **r),
        _s("namespace", "update_schema", "update_schema", {"schema": {"cat": {"type": "string", "filterable": True, "glob": True}, "extra": "string"}},
           predicate(lambda s: s["extra"]["type"] == "string" and s["cat"]["filterable"] is True, "extra added")),
        _s("namespace", "update_metadata_pinning", "update_metadata", {"pinning": {"replicas": 2}},
           fields(pinning__replicas=2)),
        _s("namespace", "hint_cache_warm", "hint_cache_warm", None, fields(status="ACCEPTED")),
        _s("namespace", "explain_query", "explain_query", {"rank_by": ["vector", "ANN", Q], "top_k": 2},
           predicate(lambda r: isinstance(r["plan_text"], str) and len(r["plan_text"]) > 0, "plan_text")),
        _s("namespace", "recall", "recall", {"num": 3, "top_k": 2}, fields(avg_recall=1.0), **r),
        _s("namespace", "exists", "exists", None, value(True), **r),
        _s("namespace", "not_exists", "exists", None, value(False), namespace="never-written"),
        _s("namespace", "branch_from", "branch_from", {"source_namespace": "@ns:main"}, fields(status="OK"),
           namespace="br", **r),
        _s("namespace", "branch_count", "query", {"aggregate_by": {"c": ["Count"]}}, fields(aggregations__c=5),
           namespace="br"),
        _s("namespace", "namespaces_prefix", "namespaces", {"prefix": "@ns:"},
           predicate(lambda r: r == sorted(r) and {"main", "w", "br"} <= {x.rsplit("-", 1)[-1] for x in r}
                     and "never-written" not in {x.rsplit("-", 1)[-1] for x in r},
                     "sorted, with main, w and br"), **r),
        _s("namespace", "copy_from", "copy_from", {"source_namespace": "@ns:main"}, fields(status="OK"),
           namespace="cp", **r),
        _s("namespace", "copy_count", "query", {"aggregate_by": {"c": ["Count"]}}, fields(aggregations__c=5),
           namespace="cp"),
        _s("namespace", "copy_source_region_400", "copy_from",
           {"source_namespace": "@ns:main", "source_region": "aws-us-east-1"}, error(400, "source_region"),
           namespace="cp2"),
        _s("namespace", "start_copy_from", "start_copy_from", {"source_namespace": "@ns:main"},
           predicate(lambda r: isinstance(r["token"], str) and r["token"], "a token"), namespace="acp",
           sdks=("py",), **r),
        _s("namespace", "poll_copy_from_finished", "poll_copy_from",
           {"token": "@token:start_copy_from", "until_finished": True},
           predicate(lambda r: r["status"] == "finished" and r["result"]["success"]["rows_affected"] == 5
                     and r["finish_time"] >= r["start_time"], "finished, 5 rows copied"),
           namespace="acp", sdks=("py",), **r),
        _s("namespace", "async_copy_count", "query", {"aggregate_by": {"c": ["Count"]}},
           fields(aggregations__c=5), namespace="acp", sdks=("py",)),
        _s("namespace", "start_copy_from_nonempty_400", "start_copy_from", {"source_namespace": "@ns:main"},
           error(400, "must be empty"), namespace="main", sdks=("py",)),
        _s("namespace", "poll_copy_from_unknown", "poll_copy_from", {"token": "no-such-operation"},
           error(404), namespace="acp", sdks=("py",)),
        _s("namespace", "sharding_400", "write", {"upsert_rows": [{"id": 1}], "sharding": {"num_shards": 2}},
           error(400, "sharding"), namespace="sh"),
        _s("namespace", "cmek_400", "write",
           {"upsert_rows": [{"id": 1}], "encryption": {"mode": "customer-managed", "key_name": "k"}},
           error(400, "needs the s3 storage backend"), namespace="enc"),
        _s("namespace", "delete_all", "delete_all", None, fields(status="OK"), namespace="cp", **r),
        _s("namespace", "deleted_not_exists", "exists", None, value(False), namespace="cp", **r),
        _s("namespace", "query_missing_404", "query", {"rank_by": ["id", "asc"]}, error(404), namespace="cp"),
    ]  # fmt: skip


def rank_expression_steps() -> list[Step]:
    r = {"representative": True}
    fox = bm25(TITLES, "fox")
    day = {i: abs(i - 3) * 86_400_000 for i in TITLES}  # day i is 2024-01-0i; origin 2024-01-03
    return [
        _s("rank_expr", "saturate_attribute", "query",
           {"rank_by": ["Saturate", ["Attribute", "n"], {"midpoint": 5}]},
           rows(ranked({i: n / (n + 5) for i, n in N.items()})), **r),
        _s("rank_expr", "decay_exponent", "query",
           {"rank_by": ["Decay", ["Attribute", "n"], {"midpoint": 5, "exponent": 2}]},
           rows(ranked({i: 25 / (n**2 + 25) for i, n in N.items()}))),
        _s("rank_expr", "signed_attribute_400", "query", {"rank_by": ["Attribute", "n"]},
           error(400, "non-negative")),
        _s("rank_expr", "max_floor_attribute", "query", {"rank_by": ["Max", [0, ["Attribute", "n"]]]},
           rows(ranked({i: float(n) for i, n in N.items()})), **r),
        _s("rank_expr", "bm25_plus_attribute", "query",
           {"rank_by": ["Sum", [["title", "BM25", "fox"], ["Product", 0.1, ["Max", [0, ["Attribute", "n"]]]]]]},
           rows(ranked({i: fox.get(i, 0.0) + 0.1 * n for i, n in N.items()}))),
        _s("rank_expr", "decay_dist_float", "query",
           {"rank_by": ["Decay", ["Dist", ["Attribute", "price"], 25.0], {"midpoint": 10}]},
           rows(ranked({i: 10 / (abs(p - 25) + 10) for i, p in PRICE.items()})), **r),
        _s("rank_expr", "decay_dist_datetime", "query",
           {"rank_by": ["Decay", ["Dist", ["Attribute", "day"], "2024-01-03T00:00:00Z"], {"midpoint": "1d"}]},
           rows(ranked({i: 86_400_000 / (d + 86_400_000) for i, d in day.items()}))),
        _s("rank_expr", "saturate_dist_hours", "query",
           {"rank_by": ["Saturate", ["Dist", ["Attribute", "day"], "2024-01-03T00:00:00Z"], {"midpoint": "24h"}],
            "top_k": 2},
           rows(ranked({i: d / (d + 86_400_000) for i, d in day.items()}, top=2))),
        _s("rank_expr", "dist_string_attribute_400", "query",
           {"rank_by": ["Decay", ["Dist", ["Attribute", "cat"], "a"], {"midpoint": 1}]}, error(400, "Dist")),
        _s("rank_expr", "bad_midpoint_400", "query",
           {"rank_by": ["Saturate", ["Attribute", "price"], {"midpoint": 0}]}, error(400, "midpoint")),
    ]  # fmt: skip


def compute_steps() -> list[Step]:
    fox = bm25(TITLES, "fox")
    return [
        _s("compute", "vector_dist", "query",
           {"rank_by": ["id", "asc"], "top_k": 2, "compute_attributes": {"d": ["vector", "VectorDist", Q]}},
           rows([{"id": 1, "d": cosine(VEC[1], Q)}, {"id": 2, "d": cosine(VEC[2], Q)}]), representative=True),
        _s("compute", "bm25_score", "query",
           {"rank_by": ["id", "asc"], "top_k": 2, "compute_attributes": {"s": ["title", "BM25", "fox"]}},
           rows([{"id": 1, "s": fox[1]}, {"id": 2, "s": 0.0}])),
        _s("compute", "rank_expression", "query",
           {"rank_by": ["vector", "ANN", Q], "top_k": 1,
            "compute_attributes": {"boost": ["Saturate", ["Attribute", "n"], {"midpoint": 5}]}},
           rows([{"id": 2, "boost": 3 / 8}])),
        _s("compute", "name_clash_400", "query",
           {"rank_by": ["id", "asc"], "compute_attributes": {"cat": ["vector", "VectorDist", Q]}}, error(400, "cat")),
    ]  # fmt: skip


HL_TEXT = "Lagoon keeps data in object storage. Queries read a local cache.\n\nNothing else matters here."
HL_DOCS = [
    {"id": 1, "text": HL_TEXT},
    {"id": 2, "text": "Just a cache."},
    {"id": 3, "text": "unrelated words"},
]
S0, S1 = "Lagoon keeps data in object storage.", "Queries read a local cache."


def highlight_steps() -> list[Step]:
    q = {"rank_by": ["text", "BM25", "object storage cache"]}
    return [
        _s("highlight", "setup", "write",
           {"upsert_rows": HL_DOCS, "schema": {"text": {"type": "string", "full_text_search": True}}},
           fields(rows_upserted=3), namespace="hl", representative=True),
        _s("highlight", "sentences", "query", {**q, "compute_attributes": {"h": ["Highlight", "text"]}},
           rows([{"id": 1, "h": [{"text": S0}, {"text": S1}]}, {"id": 2, "h": [{"text": "Just a cache."}]}]),
           namespace="hl", representative=True),
        _s("highlight", "offsets_utf8", "query",
           {**q, "top_k": 1, "compute_attributes": {"h": ["Highlight", "text", {"include_offsets": "utf-8"}]}},
           rows([{"id": 1, "h": [{"text": S0, "fragment_range": [0, 36], "match_ranges": [[21, 27], [28, 35]]},
                                 {"text": S1, "fragment_range": [37, 64], "match_ranges": [[58, 63]]}]}]),
           namespace="hl"),
        _s("highlight", "words", "query",
           {**q, "top_k": 1, "compute_attributes": {"h": ["Highlight", "text", {"fragment_by": "word"}]}},
           rows([{"id": 1, "h": [{"text": "object"}, {"text": "storage"}, {"text": "cache"}]}]), namespace="hl"),
        _s("highlight", "paragraph_limit_1", "query",
           {**q, "top_k": 1,
            "compute_attributes": {"h": ["Highlight", "text", {"fragment_by": "paragraph", "fragment_limit": 1}]}},
           rows([{"id": 1, "h": [{"text": f"{S0} {S1}"}]}]), namespace="hl"),
        _s("highlight", "rank_fragments_by", "query",
           {"rank_by": ["id", "asc"], "top_k": 3, "compute_attributes": {
               "h": ["Highlight", "text", {"rank_fragments_by": ["$fragment", "BM25", "cache"]}]}},
           rows([{"id": 1, "h": [{"text": S1}]}, {"id": 2, "h": [{"text": "Just a cache."}]}, {"id": 3, "h": []}]),
           namespace="hl"),
        _s("highlight", "no_bm25_400", "query",
           {"rank_by": ["id", "asc"], "compute_attributes": {"h": ["Highlight", "text"]}},
           error(400, "rank_fragments_by"), namespace="hl"),
        _s("highlight", "fragment_limit_0_400", "query",
           {**q, "compute_attributes": {"h": ["Highlight", "text", {"fragment_limit": 0}]}},
           error(400, "fragment_limit"), namespace="hl"),
    ]  # fmt: skip


FUZZY = {"max_edit_distance": [{"min_query_chars": 3, "distance": 0}, {"min_query_chars": 6, "distance": 1}]}


def fuzzy_steps() -> list[Step]:
    docs = [{"id": 1, "name": "turbopuffer"}, {"id": 2, "name": "lagoon"}, {"id": 3, "name": "laguna beach"},
            {"id": 4, "name": "Lagoon"}]  # fmt: skip
    base = {"rank_by": ["id", "asc"]}
    return [
        _s("fuzzy", "setup", "write",
           {"upsert_rows": docs, "schema": {"name": {"type": "string", "fuzzy": True}}},
           fields(rows_upserted=4), namespace="fz", representative=True),
        _s("fuzzy", "one_edit", "query", {**base, "filters": ["name", "Fuzzy", "lagoom", FUZZY]}, ids([2]),
           namespace="fz", representative=True),
        _s("fuzzy", "case_insensitive", "query",
           {**base, "filters": ["name", "Fuzzy", "lagoom", {**FUZZY, "case_sensitive": False}]}, ids([2, 4]),
           namespace="fz"),
        _s("fuzzy", "short_query_exact", "query", {**base, "filters": ["name", "Fuzzy", "turbo", FUZZY]}, ids([1]),
           namespace="fz"),
        _s("fuzzy", "bad_threshold_400", "query",
           {**base, "filters": ["name", "Fuzzy", "x", {"max_edit_distance": [{"min_query_chars": 3, "distance": 1}]}]},
           error(400, "min_query_chars"), namespace="fz"),
        _s("fuzzy", "not_enabled_400", "query", {**base, "filters": ["cat", "Fuzzy", "abc", FUZZY]},
           error(400, "fuzzy")),
    ]  # fmt: skip


def metric_steps() -> list[Step]:
    schema = {"a": {"type": "[2]f32", "ann": {"distance_metric": "euclidean_squared"}},
              "b": {"type": "[2]f32", "ann": {"distance_metric": "cosine_distance"}}}  # fmt: skip
    docs = [{"id": 1, "a": [0.0, 0.0], "b": [1.0, 0.0]}, {"id": 2, "a": [3.0, 4.0], "b": [0.0, 1.0]}]
    return [
        _s("metrics", "own_metrics_write", "write", {"upsert_rows": docs, "schema": schema},
           fields(rows_upserted=2), namespace="pm", representative=True),
        _s("metrics", "own_euclidean", "query", {"rank_by": ["a", "ANN", [0.0, 0.0]]},
           rows([{"id": 1, "$dist": 0.0}, {"id": 2, "$dist": 25.0}]), namespace="pm"),
        _s("metrics", "own_cosine", "query", {"rank_by": ["b", "ANN", [1.0, 0.5]]},
           rows(ranked({1: cosine([1, 0], [1, 0.5]), 2: cosine([0, 1], [1, 0.5])}, descending=False)),
           namespace="pm"),
        _s("metrics", "conflict_400", "write",
           {"upsert_rows": docs, "schema": schema, "distance_metric": "cosine_distance"},
           error(400, "distance_metric"), namespace="pm2"),
    ]  # fmt: skip


def multi_vector_steps() -> list[Step]:
    """Multi-vector queries on the ``pm`` namespace of ``metric_steps``: $dist = Σ of distances."""
    qa, qb = [[0.0, 0.0], [2.0, 0.0]], [[1.0, 0.0], [1.0, 1.0]]
    a = {1: [0.0, 0.0], 2: [3.0, 4.0]}
    b = {1: [1.0, 0.0], 2: [0.0, 1.0]}
    return [
        _s("multivector", "ann_euclidean", "query", {"rank_by": ["a", "ANN", qa]},
           rows(ranked({i: sum(euclid(v, q) for q in qa) for i, v in a.items()}, descending=False)),
           namespace="pm", representative=True),
        _s("multivector", "ann_cosine", "query", {"rank_by": ["b", "ANN", qb], "top_k": 1},
           rows(ranked({i: sum(cosine(v, q) for q in qb) for i, v in b.items()}, descending=False, top=1)),
           namespace="pm"),
        _s("multivector", "knn_filtered", "query",
           {"rank_by": ["a", "kNN", qa], "filters": ["id", "Eq", 2]},
           rows([{"id": 2, "$dist": sum(euclid(a[2], q) for q in qa)}]), namespace="pm"),
        _s("multivector", "mixed_dims_400", "query", {"rank_by": ["a", "ANN", [[0.0, 0.0], [1.0]]]},
           error(400, "dimensions"), namespace="pm"),
    ]  # fmt: skip


def late_interaction_steps() -> list[Step]:
    """``[][N]f32`` multi-vector attributes (``ann.late_interaction``): stored, returned, ranked by
    $dist = Σ over query vectors of the distance to the document's closest vector."""
    emb = {1: [[1.0, 0.0], [0.0, 1.0]], 2: [[2.0, 1.0]], 3: [[-1.0, 0.0], [0.0, -1.0], [1.0, 3.0]]}
    q = [[1.0, 0.0], [1.0, 1.0]]
    docs = [{"id": i, "emb": v} for i, v in emb.items()] + [{"id": 4}]
    schema = {"emb": {"type": "[][2]f32", "ann": {"late_interaction": True}}}

    def maxsim(metric: Any) -> dict[int, float]:
        return {i: sum(min(metric(d, qv) for d in ds) for qv in q) for i, ds in emb.items()}

    return [
        _s("late_interaction", "write", "write",
           {"upsert_rows": docs, "schema": schema, "distance_metric": "cosine_distance"},
           fields(rows_upserted=4), namespace="li", representative=True),
        _s("late_interaction", "schema", "schema", None,
           predicate(lambda r: r["emb"]["type"] == "[][2]f32" and r["emb"]["ann"]["late_interaction"] is True,
                     "[][2]f32 with ann.late_interaction"), namespace="li"),
        _s("late_interaction", "returned", "query",
           {"rank_by": ["id", "asc"], "include_attributes": ["emb"], "top_k": 3},
           rows([{"id": i, "emb": v} for i, v in emb.items()]), namespace="li"),
        _s("late_interaction", "ann_cosine", "query", {"rank_by": ["emb", "ANN", q]},
           rows(ranked(maxsim(cosine), descending=False)), namespace="li", representative=True),
        _s("late_interaction", "knn_filtered", "query",
           {"rank_by": ["emb", "kNN", q], "filters": ["id", "Gte", 2]},
           rows(ranked({i: d for i, d in maxsim(cosine).items() if i >= 2}, descending=False)), namespace="li"),
        _s("late_interaction", "euclidean", "write",
           {"upsert_rows": docs, "schema": schema, "distance_metric": "euclidean_squared"},
           fields(rows_upserted=4), namespace="li2"),
        _s("late_interaction", "ann_euclidean", "query", {"rank_by": ["emb", "ANN", q], "top_k": 2},
           rows(ranked(maxsim(euclid), descending=False, top=2)), namespace="li2"),
        _s("late_interaction", "needs_option_400", "write",
           {"upsert_rows": docs, "schema": {"emb": {"type": "[][2]f32", "ann": True}}},
           error(400, "late_interaction"), namespace="li3"),
        _s("late_interaction", "wrong_dims_400", "write", {"upsert_rows": [{"id": 9, "emb": [[1.0, 2.0, 3.0]]}]},
           error(400, "dimensions"), namespace="li"),
        _s("late_interaction", "filter_400", "query", {"rank_by": ["id", "asc"], "filters": ["emb", "Eq", 1]},
           error(400, "cannot be filtered"), namespace="li"),
    ]  # fmt: skip


def i8_steps() -> list[Step]:
    rows_ = [{"id": i, "v": [i, -i, 127 - i]} for i in range(1, 5)]
    q = [2.5, -2.5, 124.5]
    dist = {r["id"]: euclid(r["v"], q) for r in rows_}
    return [
        _s("i8", "write", "write",
           {"upsert_rows": rows_, "schema": {"v": {"type": "[3]i8", "ann": {"distance_metric": "euclidean_squared"}}}},
           fields(rows_upserted=4), namespace="i8", representative=True),
        _s("i8", "ann", "query", {"rank_by": ["v", "ANN", q], "top_k": 4, "include_attributes": ["v"]},
           rows([{**r, "v": next(x["v"] for x in rows_ if x["id"] == r["id"])}
                 for r in ranked(dist, descending=False)]), namespace="i8", representative=True),
        _s("i8", "out_of_range_400", "write", {"upsert_rows": [{"id": 9, "v": [128, 0, 0]}]},
           error(400, "-128 to 127"), namespace="i8"),
        _s("i8", "schema", "schema", None, predicate(lambda s: s["v"]["type"] == "[3]i8", "[3]i8"), namespace="i8"),
    ]  # fmt: skip


SPARSE_DOCS = [
    {"id": 1, "sv": {"1": 0.5, "7": 2.0}},
    {"id": 2, "sv": {"7": 1.0, "9": 0.25}},
    {"id": 3, "sv": {"3": 4.0}},
    {"id": 4, "sv": {"1": 1.5, "9": 1.0}},
]
SPARSE_Q = {"1": 2.0, "7": 1.0, "9": 4.0}


def dot(a: dict[str, float], b: dict[str, float]) -> float:
    return sum(w * b[d] for d, w in a.items() if d in b)


def sparse_steps() -> list[Step]:
    shared = {d["id"]: dot(d["sv"], SPARSE_Q) for d in SPARSE_DOCS if set(d["sv"]) & set(SPARSE_Q)}
    schema = {"sv": {"type": "{}f16", "sparse_knn": {"distance_metric": "dot_product"}}}
    return [
        _s("sparse", "write", "write", {"upsert_rows": SPARSE_DOCS, "schema": schema},
           fields(rows_upserted=4), namespace="sp", representative=True),
        _s("sparse", "sparse_knn", "query", {"rank_by": ["sv", "SparseKNN", SPARSE_Q], "top_k": 10},
           rows(ranked(shared)), namespace="sp", representative=True),
        _s("sparse", "top_k_include", "query",
           {"rank_by": ["sv", "SparseKNN", SPARSE_Q], "top_k": 1, "include_attributes": ["sv"]},
           rows([{"id": 4, "$dist": dot(SPARSE_DOCS[3]["sv"], SPARSE_Q), "sv": {"1": 1.5, "9": 1.0}}]),
           namespace="sp"),
        _s("sparse", "schema", "schema", None,
           predicate(lambda s: s["sv"]["type"] == "{}f16"
                     and s["sv"]["sparse_knn"]["distance_metric"] == "dot_product", "{}f16 with dot_product"),
           namespace="sp"),
        _s("sparse", "bad_dimension_400", "write", {"upsert_rows": [{"id": 9, "sv": {"x": 1.0}}]},
           error(400, "not an integer"), namespace="sp"),
    ]  # fmt: skip


def embed_steps() -> list[Step]:
    """The answers that do not depend on the optional embed extra (tests/query/test_embed.py has
    the model's own checks)."""
    return [
        _s("embed", "unknown_model_query_400", "query",
           {"rank_by": ["vector", "ANN", ["Embed", "quick fox", {"model": "no-such-model"}]]},
           error(400, "unknown embedding model"), representative=True),
        _s("embed", "unknown_model_schema_400", "write",
           {"upsert_rows": [{"id": 1, "t": "x"}], "schema": {"t": {"type": "string", "embed": "no-such-model"}}},
           error(400, "unknown embedding model"), namespace="emb"),
        _s("embed", "rerank_model_400", "multi_query",
           {"queries": [{"rank_by": ["title", "BM25", "fox"], "top_k": 3}],
            "rerank_by": {"attribute": "title", "model": "some-reranker", "query": "fox"}},
           error(400, "no reranking model")),
    ]  # fmt: skip


def all_steps() -> list[Step]:
    """Every step, in run order (later areas read the namespaces earlier ones wrote)."""
    return [
        *write_steps(),
        *query_steps(),
        *multi_steps(),
        *rank_expression_steps(),
        *compute_steps(),
        *highlight_steps(),
        *fuzzy_steps(),
        *metric_steps(),
        *multi_vector_steps(),
        *late_interaction_steps(),
        *i8_steps(),
        *sparse_steps(),
        *embed_steps(),
        *namespace_steps(),
    ]


def representative_steps() -> list[Step]:
    """The steps the default test suite runs through both SDKs."""
    return [s for s in all_steps() if s.representative]
