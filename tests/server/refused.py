"""The hand catalogue of refused requests (tests/server/test_refused_catalogue.py runs it).

Each ``Bad`` is one request a client can send that the server must refuse: the expected 4xx
status and fragments its message must contain (naming what is wrong). Namespaces: ``base``
exists (schema ``BASE_SCHEMA``, documents, one segment and an unindexed WAL tail), ``fresh``
does not. Keys: ``admin``, ``writer``, ``reader`` of org ``acme``; ``other`` is org ``globex``'s
admin; ``None`` sends no key.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from lagoon.schema import MAX_ATTR_NAME_BYTES, MAX_ATTRIBUTES, MAX_DIMS, MAX_SPARSE_DIMS
from lagoon.values import MAX_STRING_ID_BYTES
from lagoon.wire.query import MAX_AGGREGATIONS, MAX_BM25_QUERY_CHARS, MAX_QUERIES, MAX_TOP_K

DIMS = 4
BASE_SCHEMA: dict[str, Any] = {
    "id": "uint",
    "v": {"type": f"[{DIMS}]f32", "ann": {"distance_metric": "cosine_distance"}},
    "title": {"type": "string", "full_text_search": True},
    "s": {"type": "string", "regex": True, "glob": True},
    "n": {"type": "int", "filterable": True},
    "f": "float",
    "b": "bool",
    "tags": "[]string",
    "when": "datetime",
}


def base_doc(i: int) -> dict[str, Any]:
    return {
        "id": i,
        "v": [float(i % 7), 1.0, 0.5, float(i % 3)],
        "title": f"title number {i} of the catalogue",
        "s": f"value-{i:04d}",
        "n": i,
        "f": i / 3,
        "b": i % 2 == 0,
        "tags": [f"t{i % 5}", "all"],
        "when": "2026-01-01T00:00:00Z",
    }


@dataclass(frozen=True)
class Bad:
    name: str
    method: str
    path: str
    json: Any = None
    content: bytes | None = None
    status: int = 400
    fragments: tuple[str, ...] = ()
    who: str | None = "admin"
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)


W = "/v2/namespaces/{ns}"
Q = "/v2/namespaces/{ns}/query"


def _doc(**over: Any) -> dict[str, Any]:
    d = base_doc(1)
    d.update(over)
    return {k: v for k, v in d.items() if v is not _DROP}


_DROP = object()


def write_cases(ns: str) -> Iterator[Bad]:
    """Bodies of the write route, against ``ns`` (``base`` or ``fresh``)."""
    path = W.format(ns=ns)

    def bad(name: str, body: Any, *fragments: str, status: int = 400) -> Bad:
        return Bad(f"write[{ns}]:{name}", "POST", path, json=body, status=status, fragments=fragments)

    yield bad("body-array", [], "object")
    yield bad("body-string", "x", "object")
    yield bad("body-number", 1, "object")
    yield bad("unknown-field", {"upsert_rows": [], "frobnicate": 1}, "frobnicate")
    yield bad("rows-not-array", {"upsert_rows": {"id": 1}}, "upsert_rows")
    yield bad("row-not-object", {"upsert_rows": [1]}, "upsert_rows[0]")
    yield bad("row-without-id", {"upsert_rows": [{"n": 1}]}, "upsert_rows[0]", "id")
    yield bad("id-null", {"upsert_rows": [_doc(id=None)]}, "id")
    yield bad("id-float", {"upsert_rows": [_doc(id=1.5)]}, "id")
    yield bad("id-negative", {"upsert_rows": [_doc(id=-1)]}, "id")
    yield bad("id-bool", {"upsert_rows": [_doc(id=True)]}, "id")
    yield bad("id-object", {"upsert_rows": [_doc(id={"a": 1})]}, "id")
    yield bad("id-huge-int", {"upsert_rows": [_doc(id=2**64)]}, "id")
    if ns == "fresh":
        yield bad(
            "string-id-one-past",
            {"upsert_rows": [{"id": "x" * (MAX_STRING_ID_BYTES + 1)}]},
            "id",
            str(MAX_STRING_ID_BYTES),
        )
        yield bad(
            "dims-one-past", {"upsert_rows": [{"id": 1, "vector": [0.5] * (MAX_DIMS + 1)}]}, str(MAX_DIMS)
        )
        yield bad("dims-100k", {"upsert_rows": [{"id": 1, "vector": [0.5] * 100_000}]}, str(MAX_DIMS))
        yield bad("vector-empty", {"upsert_rows": [{"id": 1, "vector": []}]}, "vector")
        yield bad(
            "schema-dims-one-past",
            {"schema": {"v": f"[{MAX_DIMS + 1}]f32"}, "upsert_rows": [{"id": 1}]},
            str(MAX_DIMS),
        )
        yield bad(
            "attributes-one-past",
            {"upsert_rows": [{"id": 1, **{f"a{i}": i for i in range(MAX_ATTRIBUTES + 1)}}]},
            str(MAX_ATTRIBUTES),
        )
        yield bad(
            "attributes-spread-over-rows",
            {"upsert_rows": [{"id": i, f"a{i}": i} for i in range(MAX_ATTRIBUTES + 1)]},
            str(MAX_ATTRIBUTES),
        )
        yield bad(
            "schema-attributes-one-past",
            {"schema": {f"a{i}": "int" for i in range(MAX_ATTRIBUTES + 1)}, "upsert_rows": [{"id": 1}]},
            str(MAX_ATTRIBUTES),
        )
        yield bad("mixed-types-in-rows", {"upsert_rows": [{"id": 1, "x": 1}, {"id": 2, "x": "a"}]}, "x")
        yield bad("mixed-id-types", {"upsert_rows": [{"id": 1}, {"id": "a"}]}, "id")
        yield bad(
            "unknown-distance-metric",
            {"distance_metric": "manhattan", "upsert_rows": [{"id": 1}]},
            "manhattan",
        )
        yield bad("create-namespace-not-bool", {"create_namespace": "yes"}, "create_namespace")
        yield bad("schema-unknown-type", {"schema": {"x": "complex"}, "upsert_rows": [{"id": 1}]}, "complex")
        yield bad("schema-not-object", {"schema": [1], "upsert_rows": [{"id": 1}]}, "schema")
        yield bad("schema-bad-id-type", {"schema": {"id": "float"}, "upsert_rows": [{"id": 1}]}, "id")
        yield bad(
            "sparse-one-past",
            {
                "schema": {"sp": "{}f16"},
                "upsert_rows": [{"id": 1, "sp": {str(i): 1.0 for i in range(MAX_SPARSE_DIMS + 1)}}],
            },
            str(MAX_SPARSE_DIMS),
        )
    yield bad(
        "attr-name-one-past",
        {"upsert_rows": [_doc(**{"a" * (MAX_ATTR_NAME_BYTES + 1): 1})]},
        str(MAX_ATTR_NAME_BYTES),
    )
    yield bad("attr-name-dollar", {"upsert_rows": [_doc(**{"$x": 1})]}, "$x")
    yield bad("attr-name-empty", {"upsert_rows": [_doc(**{"": 1})]}, "name")
    if ns == "base":
        yield bad("vector-wrong-dims", {"upsert_rows": [_doc(v=[1.0] * (DIMS + 1))]}, "v", str(DIMS))
        yield bad("vector-not-numbers", {"upsert_rows": [_doc(v=["a"] * DIMS)]}, "v")
        yield bad("vector-nested", {"upsert_rows": [_doc(v=[[1.0]] * DIMS)]}, "v")
        yield bad("int-gets-string", {"upsert_rows": [_doc(n="seven")]}, "n")
        yield bad("int-gets-float", {"upsert_rows": [_doc(n=1.5)]}, "n")
        yield bad("int-gets-huge", {"upsert_rows": [_doc(n=2**70)]}, "n")
        yield bad("bool-gets-int", {"upsert_rows": [_doc(b=3)]}, "b")
        yield bad("string-gets-object", {"upsert_rows": [_doc(title={"a": 1})]}, "title")
        yield bad("list-gets-scalar", {"upsert_rows": [_doc(tags="x")]}, "tags")
        yield bad("list-mixed", {"upsert_rows": [_doc(tags=["a", 1])]}, "tags")
        yield bad("datetime-garbage", {"upsert_rows": [_doc(when="yesterday")]}, "when")
        yield bad("float-gets-string", {"upsert_rows": [_doc(f="1.5")]}, "f")
        yield bad("one-good-one-bad-row", {"upsert_rows": [base_doc(500), _doc(id=501, n="x")]}, "n")
        yield bad("columns-unequal", {"upsert_columns": {"id": [1, 2], "n": [1]}}, "n")
        yield bad("columns-not-object", {"upsert_columns": [1, 2]}, "upsert_columns")
        yield bad("columns-without-id", {"upsert_columns": {"n": [1]}}, "id")
        yield bad("columns-not-arrays", {"upsert_columns": {"id": 1}}, "id")
        yield bad("patch-vector-wrong", {"patch_rows": [{"id": 1, "v": [1.0]}]}, "v")
        yield bad("patch-bad-type", {"patch_rows": [{"id": 1, "n": "x"}]}, "n")
        yield bad("deletes-not-array", {"deletes": 1}, "deletes")
        yield bad("deletes-bad-id", {"deletes": [{"x": 1}]}, "deletes")
        yield bad("delete-by-filter-garbage", {"delete_by_filter": ["n", "Wat", 1]}, "Wat")
        yield bad("delete-by-filter-unknown-attr-op", {"delete_by_filter": "n"}, "delete_by_filter")
        yield bad("patch-by-filter-not-pair", {"patch_by_filter": {"n": 1}}, "patch_by_filter")
        yield bad(
            "patch-by-filter-bad-value",
            {"patch_by_filter": {"filters": ["n", "Eq", 1], "patch": {"n": "x"}}},
            "n",
        )
        yield bad(
            "upsert-condition-garbage",
            {"upsert_rows": [base_doc(1)], "upsert_condition": 5},
            "upsert_condition",
        )
        yield bad("schema-type-change", {"schema": {"n": "string"}}, "n")
        yield bad("schema-drop-id", {"schema": {"id": {"drop": True}}}, "schema.id", "cannot be dropped")
        yield bad("schema-vector-dims-change", {"schema": {"v": "[8]f32"}}, "v")
        yield bad(
            "distance-metric-change",
            {"distance_metric": "euclidean_squared", "upsert_rows": [base_doc(1)]},
            "distance",
        )
        yield bad(
            "return-affected-ids-not-bool",
            {"upsert_rows": [base_doc(1)], "return_affected_ids": "x"},
            "return_affected_ids",
        )
        yield bad(
            "encryption-garbage",
            {"upsert_rows": [base_doc(1)], "encryption": {"mode": "rot13"}},
            "encryption",
        )
        yield bad(
            "cmek-on-fs-or-plain-s3",
            {"upsert_rows": [base_doc(1)], "encryption": {"mode": "customer-managed", "key_name": "k"}},
            "encryption",
        )
        yield bad("copy-into-existing", {"copy_from_namespace": "base"}, "empty")
        yield bad("copy-combined", {"copy_from_namespace": "base", "upsert_rows": []}, "copy_from_namespace")
        yield bad(
            "create-namespace-twice-conflict",
            {"create_namespace": "x", "upsert_rows": [base_doc(1)]},
            "create_namespace",
        )


def query_cases() -> Iterator[Bad]:
    path = Q.format(ns="base")

    def bad(name: str, body: Any, *fragments: str, status: int = 400, who: str = "reader") -> Bad:
        return Bad(f"query:{name}", "POST", path, json=body, status=status, fragments=fragments, who=who)

    yield bad("body-array", [1], "object")
    yield bad("unknown-field", {"rank_by": ["id", "asc"], "frobnicate": 1}, "frobnicate")
    yield bad("top-k-one-past", {"rank_by": ["id", "asc"], "top_k": MAX_TOP_K + 1}, str(MAX_TOP_K))
    yield bad("top-k-zero", {"rank_by": ["id", "asc"], "top_k": 0}, "top_k")
    yield bad("top-k-string", {"rank_by": ["id", "asc"], "top_k": "10"}, "top_k")
    yield bad("rank-by-garbage", {"rank_by": 5}, "rank_by")
    yield bad("rank-by-unknown-attr", {"rank_by": ["nope", "asc"]}, "nope")
    yield bad("ann-wrong-dims", {"rank_by": ["v", "ANN", [1.0] * (DIMS + 1)]}, str(DIMS))
    yield bad("ann-not-vector-attr", {"rank_by": ["n", "ANN", [1.0] * DIMS]}, "n")
    yield bad("ann-strings", {"rank_by": ["v", "ANN", ["a"] * DIMS]}, "v")
    yield bad("bm25-not-indexed", {"rank_by": ["s", "BM25", "x"]}, "s")
    yield bad(
        "bm25-too-long",
        {"rank_by": ["title", "BM25", "x" * (MAX_BM25_QUERY_CHARS + 1)]},
        str(MAX_BM25_QUERY_CHARS),
    )
    yield bad("bm25-not-string", {"rank_by": ["title", "BM25", 5]}, "rank_by", "string")
    yield bad("filter-unknown-op", {"rank_by": ["id", "asc"], "filters": ["n", "Wat", 1]}, "Wat")
    yield bad("filter-type-mismatch", {"rank_by": ["id", "asc"], "filters": ["n", "Eq", "x"]}, "n")
    yield bad("filter-not-list", {"rank_by": ["id", "asc"], "filters": "n"}, "filters")
    yield bad(
        "filter-regex-not-enabled", {"rank_by": ["id", "asc"], "filters": ["title", "Regex", "a"]}, "title"
    )
    yield bad("filter-bad-regex", {"rank_by": ["id", "asc"], "filters": ["s", "Regex", "("]}, "Regex")
    yield bad("filter-and-not-list", {"rank_by": ["id", "asc"], "filters": ["And", 5]}, "And")
    yield bad(
        "multi-one-past", {"queries": [{"rank_by": ["id", "asc"]}] * (MAX_QUERIES + 1)}, str(MAX_QUERIES)
    )
    yield bad("multi-not-list", {"queries": {"rank_by": ["id", "asc"]}}, "queries")
    yield bad(
        "aggregations-one-past",
        {"aggregate_by": {f"c{i}": ["Count"] for i in range(MAX_AGGREGATIONS + 1)}},
        str(MAX_AGGREGATIONS),
    )
    yield bad("aggregate-garbage", {"aggregate_by": {"c": ["Wat"]}}, "Wat")
    yield bad(
        "include-attributes-garbage",
        {"rank_by": ["id", "asc"], "include_attributes": 5},
        "include_attributes",
    )
    yield bad("include-unknown-attr", {"rank_by": ["id", "asc"], "include_attributes": ["nope"]}, "nope")
    yield bad(
        "consistency-garbage", {"rank_by": ["id", "asc"], "consistency": {"level": "psychic"}}, "consistency"
    )
    yield bad(
        "vector-encoding-garbage", {"rank_by": ["id", "asc"], "vector_encoding": "morse"}, "vector_encoding"
    )
    yield bad("group-by-garbage", {"aggregate_by": {"c": ["Count"]}, "group_by": 5}, "group_by")
    yield Bad(
        "explain:garbage",
        "POST",
        "/v2/namespaces/base/explain_query",
        json={"rank_by": 5},
        fragments=("rank_by",),
        who="reader",
    )
    yield Bad(
        "query:missing-namespace",
        "POST",
        Q.format(ns="fresh"),
        json={"rank_by": ["id", "asc"]},
        status=404,
        who="reader",
    )


def schema_and_metadata_cases() -> Iterator[Bad]:
    def schema(name: str, body: Any, *fragments: str, ns: str = "base", status: int = 400) -> Bad:
        path = f"/v1/namespaces/{ns}/schema"
        return Bad(f"schema:{name}", "POST", path, json=body, status=status, fragments=fragments)

    def metadata(name: str, body: Any, *fragments: str, ns: str = "base", status: int = 400) -> Bad:
        path = f"/v1/namespaces/{ns}/metadata"
        return Bad(f"metadata:{name}", "PATCH", path, json=body, status=status, fragments=fragments)

    def branch(name: str, body: Any, *fragments: str, ns: str = "fresh", status: int = 400) -> Bad:
        path = f"/v2/namespaces/{ns}/branch"
        return Bad(f"branch:{name}", "POST", path, json=body, status=status, fragments=fragments)

    yield schema("not-object", [1], "object")
    yield schema("type-change", {"n": "string"}, "n")
    yield schema("unknown-type", {"x": "complex"}, "complex")
    yield schema("bad-option", {"title": {"type": "string", "full_text_search": 5}}, "full_text_search")
    yield schema("dims-one-past", {"w": f"[{MAX_DIMS + 1}]f32"}, str(MAX_DIMS))
    yield schema("missing-namespace", {"x": "int"}, ns="fresh", status=404)
    yield schema("name-too-long", {"a" * (MAX_ATTR_NAME_BYTES + 1): "int"}, str(MAX_ATTR_NAME_BYTES))
    yield metadata("unknown-field", {"colour": "red"}, "colour")
    yield metadata("pinning-garbage", {"pinning": {"replicas": 0}}, "pinning")
    yield metadata("read-only-not-bool", {"read_only": "yes"}, "read_only")
    yield metadata("recall-target-out-of-range", {"ann_recall_target": 2}, "ann_recall_target")
    yield metadata("not-object", [1], "object")
    yield metadata("missing-namespace", {"read_only": True}, ns="fresh", status=404)
    yield Bad("delete:missing-namespace", "DELETE", W.format(ns="fresh"), status=404)
    yield branch("future-version", {"source_namespace": "base", "at_version": 10**6}, "at_version")
    yield branch("at-version", {"source_namespace": "base", "at_version": "one"}, "at_version")
    yield branch("unknown-field", {"source_namespace": "base", "x": 1}, "x")
    yield branch("bad-source", {"source_namespace": "../x"}, "namespace")
    yield branch("missing-source", {"source_namespace": "nope"}, status=404)
    yield branch("into-existing", {"source_namespace": "base"}, "itself", ns="base")
    yield Bad("list:page-size", "GET", "/v1/namespaces", params={"page_size": "0"}, fragments=("page_size",))
    yield Bad(
        "list:page-size-text", "GET", "/v1/namespaces", params={"page_size": "many"}, fragments=("page_size",)
    )
    yield Bad(
        "list:prefix-too-long", "GET", "/v1/namespaces", params={"prefix": "a" * 129}, fragments=("prefix",)
    )
    yield Bad("list:bad-cursor", "GET", "/v1/namespaces", params={"cursor": "../x"}, fragments=("namespace",))
    yield Bad(
        "recall:garbage", "POST", "/v1/namespaces/base/_debug/recall", json={"num": "x"}, fragments=("num",)
    )


def name_cases() -> Iterator[Bad]:
    for name, ns in [
        ("too-long", "a" * 129),
        ("space", "a%20b"),
        ("unicode", "%C3%A9t%C3%A9"),
        ("colon", "a:b"),
    ]:
        yield Bad(
            f"name:{name}:write",
            "POST",
            W.format(ns=ns),
            json={"upsert_rows": [{"id": 1}]},
            fragments=("namespace",),
        )
        yield Bad(
            f"name:{name}:query", "POST", Q.format(ns=ns), json={}, fragments=("namespace",), who="reader"
        )
    yield Bad("name:slash", "POST", "/v2/namespaces/a/b", json={"upsert_rows": [{"id": 1}]}, status=404)


def auth_cases() -> Iterator[Bad]:
    body = {"upsert_rows": [base_doc(900)]}
    yield Bad(
        "auth:no-key-write",
        "POST",
        W.format(ns="base"),
        json=body,
        status=401,
        who=None,
        fragments=("API key",),
    )
    yield Bad("auth:no-key-create", "POST", W.format(ns="fresh"), json=body, status=401, who=None)
    yield Bad(
        "auth:bad-key",
        "POST",
        W.format(ns="base"),
        json=body,
        status=401,
        who=None,
        headers={"authorization": "Bearer lgn_0000000000000000_" + "x" * 43},
    )
    yield Bad(
        "auth:not-bearer",
        "POST",
        W.format(ns="base"),
        json=body,
        status=401,
        who=None,
        headers={"authorization": "Basic Zm9vOmJhcg=="},
    )
    yield Bad(
        "auth:reader-writes",
        "POST",
        W.format(ns="base"),
        json=body,
        status=403,
        who="reader",
        fragments=("writ",),
    )
    yield Bad("auth:writer-deletes-namespace", "DELETE", W.format(ns="base"), status=403, who="writer")
    yield Bad(
        "auth:writer-drops",
        "POST",
        W.format(ns="base"),
        json={"schema": {"n": {"drop": True}}},
        status=403,
        who="writer",
    )
    yield Bad(
        "auth:writer-patches-metadata",
        "PATCH",
        "/v1/namespaces/base/metadata",
        json={"read_only": True},
        status=403,
        who="writer",
    )
    yield Bad(
        "auth:reader-schema",
        "POST",
        "/v1/namespaces/base/schema",
        json={"x": "int"},
        status=403,
        who="reader",
    )
    yield Bad(
        "auth:other-org-writes",
        "POST",
        W.format(ns="base"),
        json={"patch_rows": [{"id": 1, "n": 5}]},
        status=404,
        who="other",
    )
    yield Bad("auth:other-org-deletes", "DELETE", W.format(ns="base"), status=404, who="other")
    yield Bad(
        "auth:other-org-copies",
        "POST",
        W.format(ns="fresh"),
        json={"copy_from_namespace": "base"},
        status=404,
        who="other",
    )


def body_cases() -> Iterator[Bad]:
    """Bodies that are not JSON objects, or are encoded wrongly, or too big or too deep."""
    path = W.format(ns="base")
    fresh = W.format(ns="fresh")
    yield Bad("body:not-json", "POST", path, content=b"{not json", fragments=("JSON",))
    yield Bad(
        "body:truncated-json", "POST", fresh, content=b'{"upsert_rows": [{"id": 1}', fragments=("JSON",)
    )
    yield Bad(
        "body:trailing-garbage", "POST", fresh, content=b'{"upsert_rows": [{"id": 1}]} x', fragments=("JSON",)
    )
    yield Bad("body:nan", "POST", fresh, content=b'{"upsert_rows": [{"id": 1, "x": NaN}]}')
    yield Bad("body:bad-utf8", "POST", fresh, content=b'{"upsert_rows": [{"id": 1, "x": "\xff\xfe"}]}')
    yield Bad("body:lone-surrogate", "POST", fresh, content=b'{"upsert_rows": [{"id": 1, "x": "\\ud800"}]}')
    yield Bad(
        "body:duplicate-keys-bad", "POST", fresh, content=b'{"upsert_rows": [{"id": 1}], "upsert_rows": 5}'
    )
    deep = b"[" * 100_000 + b"]" * 100_000
    yield Bad("body:deep-array", "POST", fresh, content=b'{"upsert_rows": [{"id": 1, "x": ' + deep + b"}]}")
    yield Bad("body:deep-filter", "POST", Q.format(ns="base"), content=_deep_and(3000), who="reader")
    yield Bad(
        "body:gzip-garbage", "POST", fresh, content=b"\x1f\x8b not gzip", headers={"content-encoding": "gzip"}
    )
    yield Bad(
        "body:gzip-truncated",
        "POST",
        fresh,
        content=gzip.compress(b'{"upsert_rows": [{"id": 1}]}')[:-8],
        headers={"content-encoding": "gzip"},
    )
    yield Bad(
        "body:unknown-encoding",
        "POST",
        fresh,
        content=b'{"upsert_rows": [{"id": 1}]}',
        headers={"content-encoding": "br"},
        fragments=("Content-Encoding",),
    )
    yield Bad(
        "body:gzip-bomb",
        "POST",
        fresh,
        content=_bomb(),
        headers={"content-encoding": "gzip"},
        status=413,
        fragments=("max_body_bytes",),
    )
    yield Bad(
        "body:too-large",
        "POST",
        fresh,
        content=b" " * (BODY_LIMIT + 1),
        status=413,
        fragments=("max_body_bytes",),
    )
    yield Bad(
        "body:deflate-garbage", "POST", fresh, content=b"x" * 40, headers={"content-encoding": "deflate"}
    )


BODY_LIMIT = 4 << 20
"""The catalogue's server runs with ``server.max_body_bytes`` = 4 MiB."""


def _bomb() -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b"\x00" * (1 << 20)
    return b"".join(c.compress(chunk) for _ in range(BODY_LIMIT // len(chunk) + 4)) + c.flush()


def _deep_and(depth: int) -> bytes:
    """``{"filters": ["And", [["And", [... ["n", "Eq", 1] ...]]]]}``, ``depth`` levels deep."""
    return b'{"filters": ' + b'["And", [' * depth + b'["n", "Eq", 1]' + b"]]" * depth + b"}"


def catalogue() -> list[Bad]:
    cases = [
        *write_cases("base"),
        *write_cases("fresh"),
        *query_cases(),
        *schema_and_metadata_cases(),
        *name_cases(),
        *auth_cases(),
        *body_cases(),
    ]
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "catalogue names must be unique"
    return cases
