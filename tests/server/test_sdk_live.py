"""The official turbopuffer SDK (3.1.0) against a real ``lagoon-server`` process.

The SDK is a weak oracle on its own (it validates nothing by default), so every test checks result
contents: ids, order and ``$dist`` values, not only that a call returned.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import turbopuffer

from .conftest import LiveServer

DOCS = [
    {"id": 1, "vector": [1.0, 0.0, 0.0], "title": "the quick brown fox", "cat": "a", "n": 5},
    {"id": 2, "vector": [0.9, 0.1, 0.0], "title": "a lazy dog sleeps", "cat": "b", "n": 3},
    {"id": 3, "vector": [0.0, 1.0, 0.0], "title": "quick quick fox jumps", "cat": "a", "n": 8},
    {"id": 4, "vector": [0.0, 0.0, 1.0], "title": "brown dog and fox", "cat": "b", "n": 1},
    {"id": 5, "vector": [0.5, 0.5, 0.0], "title": "nothing to see", "cat": "a", "n": 13},
]


def cosine_distance(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return 1.0 - dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


@pytest.fixture(scope="module")
def tpuf(live_server: LiveServer) -> Iterator[turbopuffer.Turbopuffer]:
    client = turbopuffer.Turbopuffer(api_key="x", base_url=live_server.url, max_retries=1)
    yield client
    client.close()


@pytest.fixture
def ns(tpuf: turbopuffer.Turbopuffer, unique: str) -> Any:
    ns = tpuf.namespace(unique)
    res = ns.write(
        upsert_rows=DOCS,
        distance_metric="cosine_distance",
        schema={"title": {"type": "string", "full_text_search": True}},
    )
    assert res.status == "OK" and res.rows_affected == 5 and res.rows_upserted == 5
    assert res.billing.billable_logical_bytes_written > 0
    return ns


def ids(res: Any) -> list[Any]:
    return [row.id for row in res.rows]


def test_write_forms_and_vector_queries(tpuf: turbopuffer.Turbopuffer, unique: str) -> None:
    ns = tpuf.namespace(unique + "-cols")
    res = ns.write(
        upsert_columns={
            "id": [10, 11, 12],
            "vector": [[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]],
            "kind": ["x", "y", "y"],
        },
        distance_metric="euclidean_squared",
    )
    assert res.rows_upserted == 3
    res = ns.query(rank_by=("vector", "ANN", [0.0, 1.0]), top_k=3, include_attributes=["kind"])
    assert ids(res) == [11, 12, 10]
    assert [row["$dist"] for row in res.rows] == pytest.approx([0.0, 0.4, 2.0], abs=1e-6)
    assert [row["kind"] for row in res.rows] == ["y", "y", "x"]
    res = ns.query(rank_by=("vector", "kNN", [1.0, 0.0]), top_k=5, filters=("kind", "Eq", "y"))
    assert ids(res) == [12, 11]
    assert res.performance.approx_namespace_size == 3
    assert res.performance.cache_temperature in ("hot", "warm", "cold")


def test_ann_with_filters_and_dist(ns: Any) -> None:
    q = [1.0, 0.2, 0.0]
    res = ns.query(
        rank_by=("vector", "ANN", q),
        top_k=3,
        filters=("And", [("cat", "Eq", "a"), ("id", "Gte", 1)]),
        include_attributes=["title"],
    )
    expected = sorted((d for d in DOCS if d["cat"] == "a"), key=lambda d: cosine_distance(d["vector"], q))
    assert ids(res) == [d["id"] for d in expected]
    for row, doc in zip(res.rows, expected, strict=True):
        assert row["$dist"] == pytest.approx(cosine_distance(doc["vector"], q), abs=1e-5)
        assert row["title"] == doc["title"]


def test_patches_deletes_and_by_filter(ns: Any) -> None:
    res = ns.write(patch_rows=[{"id": 1, "cat": "z"}], deletes=[2], return_affected_ids=True)
    assert res.patched_ids == [1] and res.deleted_ids == [2]
    res = ns.write(delete_by_filter=("n", "Lt", 4), return_affected_ids=True)
    assert res.deleted_ids == [4]
    res = ns.write(patch_by_filter={"filters": ("cat", "Eq", "a"), "patch": {"cat": "c"}})
    assert res.rows_patched == 2
    res = ns.query(rank_by=("id", "asc"), top_k=10, include_attributes=["cat"])
    assert [(row.id, row["cat"]) for row in res.rows] == [(1, "z"), (3, "c"), (5, "c")]


def test_conditional_write_with_ref_new(ns: Any) -> None:
    res = ns.write(
        upsert_rows=[
            {"id": 1, "vector": [1.0, 0.0, 0.0], "n": 7},
            {"id": 3, "vector": [0.0, 1.0, 0.0], "n": 2},
        ],
        upsert_condition=("n", "Lt", {"$ref_new": "n"}),
        return_affected_ids=True,
    )
    assert res.upserted_ids == [1]
    res = ns.write(
        upsert_rows=[
            {"id": 6, "vector": [0.1, 0.1, 0.1], "n": 0},
            {"id": 1, "vector": [1.0, 0.0, 0.0], "n": 0},
        ],
        upsert_condition=("id", "Eq", None),  # insert-only
        return_affected_ids=True,
    )
    assert res.upserted_ids == [6]
    res = ns.query(rank_by=("id", "asc"), top_k=10, include_attributes=["n"])
    assert [(row.id, row["n"]) for row in res.rows] == [(1, 7), (2, 3), (3, 8), (4, 1), (5, 13), (6, 0)]


def test_bm25_and_sum_product(ns: Any) -> None:
    res = ns.query(rank_by=("title", "BM25", "quick fox"), top_k=10, include_attributes=["title"])
    assert ids(res)[:2] == [3, 1] and set(ids(res)) == {1, 3, 4}
    scores = [row["$dist"] for row in res.rows]
    assert scores == sorted(scores, reverse=True) and scores[-1] > 0
    res = ns.query(
        rank_by=("Sum", [("title", "BM25", "dog"), ("Product", 10.0, ("cat", "Eq", "b"))]), top_k=3
    )
    assert ids(res)[:2] in ([2, 4], [4, 2])


def test_order_by_attribute_paging(ns: Any) -> None:
    seen: list[int] = []
    last = None
    while True:
        kwargs: dict[str, Any] = {"rank_by": ("id", "asc"), "top_k": 2}
        if last is not None:
            kwargs["filters"] = ("id", "Gt", last)
        rows = ns.query(**kwargs).rows or []
        if not rows:
            break
        seen += [row.id for row in rows]
        last = rows[-1].id
    assert seen == [1, 2, 3, 4, 5]
    res = ns.query(rank_by=("n", "desc"), top_k=3, include_attributes=["n"])
    assert [row["n"] for row in res.rows] == [13, 8, 5]


def test_aggregations_with_group_by(ns: Any) -> None:
    res = ns.query(aggregate_by={"count": ("Count",), "total": ("Sum", "n")})
    assert res.aggregations == {"count": 5, "total": 30}
    res = ns.query(aggregate_by={"count": ("Count",)}, group_by=["cat"], top_k=10)
    groups = sorted((dict(g) for g in res.aggregation_groups), key=lambda g: g["cat"])
    assert groups == [{"cat": "a", "count": 3}, {"cat": "b", "count": 2}]


def test_multi_query_rrf(ns: Any) -> None:
    res = ns.multi_query(
        queries=[
            {"rank_by": ("vector", "ANN", [0.0, 1.0, 0.0]), "top_k": 3},
            {"rank_by": ("title", "BM25", "quick"), "top_k": 3},
        ],
        rerank_by=("RRF",),
        limit=3,
    )
    (fused,) = res.results
    assert [row.id for row in fused.rows][0:1] == [3] and len(fused.rows) == 3
    res = ns.multi_query(
        queries=[
            {"rank_by": ("vector", "ANN", [0.0, 1.0, 0.0]), "top_k": 2},
            {"aggregate_by": {"count": ("Count",)}},
        ]
    )
    assert [row.id for row in res.results[0].rows] == [3, 5]
    assert res.results[1].aggregations == {"count": 5}


def test_namespace_listing_pages(tpuf: turbopuffer.Turbopuffer, unique: str) -> None:
    names = [f"{unique}-l{i}" for i in range(5)]
    for name in names:
        tpuf.namespace(name).write(upsert_rows=[{"id": 1, "x": 1}])
    listed = [n.id for n in tpuf.namespaces(prefix=unique + "-l", page_size=2)]
    assert listed == names


def test_metadata_schema_warm_and_explain(ns: Any) -> None:
    meta = ns.metadata()
    assert meta.approx_row_count == 5 and meta.approx_logical_bytes > 0
    assert meta.created_at is not None and meta.index.status in ("up-to-date", "updating")
    schema = ns.schema()
    assert schema["vector"].type == "[3]f32" and schema["title"].type == "string"
    updated = ns.update_schema(schema={"extra": {"type": "float"}})
    assert updated["extra"].type == "float"
    assert ns.hint_cache_warm().status == "ACCEPTED"
    plan = ns.explain_query(rank_by=("vector", "ANN", [1.0, 0.0, 0.0]), top_k=2)
    assert isinstance(plan.plan_text, str) and plan.plan_text
    meta = ns.update_metadata(pinning={"replicas": 2})
    assert meta.pinning is not None
    rec = ns.recall(num=3, top_k=2)
    assert rec.avg_recall == 1.0 and rec.avg_ann_count == 2.0 and rec.avg_exhaustive_count == 2.0


def test_copy_and_branch(tpuf: turbopuffer.Turbopuffer, ns: Any, unique: str) -> None:
    copy = tpuf.namespace(unique + "-copy")
    res = copy.copy_from(source_namespace=ns._client._get_default_namespace_path_param())
    assert res.rows_affected == 5
    branch = tpuf.namespace(unique + "-branch")
    res = branch.branch_from(source_namespace=unique)
    assert res.rows_affected == 5
    assert ids(branch.query(rank_by=("id", "asc"), top_k=10)) == [1, 2, 3, 4, 5]


def test_delete_all_and_not_found(tpuf: turbopuffer.Turbopuffer, ns: Any, unique: str) -> None:
    assert ns.exists()
    with pytest.raises(turbopuffer.BadRequestError) as bad:
        ns.query(rank_by=("vector", "Frobnicate", [1.0]), top_k=1)
    assert bad.value.status_code == 400 and bad.value.body["status"] == "error"
    assert ns.delete_all().status == "OK"
    assert not ns.exists()
    with pytest.raises(turbopuffer.NotFoundError) as info:
        ns.query(rank_by=("id", "asc"), top_k=1)
    assert info.value.status_code == 404
    with pytest.raises(turbopuffer.NotFoundError):
        tpuf.namespace(unique + "-never").metadata()


def test_compressed_requests(live_server: LiveServer, unique: str) -> None:
    client = turbopuffer.Turbopuffer(api_key="x", base_url=live_server.url, compression=True, max_retries=0)
    ns = client.namespace(unique + "-gz")
    rows = [{"id": i, "vector": [float(i), 1.0], "text": "word " * 50} for i in range(1, 21)]
    assert ns.write(upsert_rows=rows, distance_metric="euclidean_squared").rows_upserted == 20
    res = ns.query(rank_by=("vector", "kNN", [3.0, 1.0]), top_k=2)
    assert ids(res) == [3, 2] or ids(res) == [3, 4]
    client.close()


def test_raw_wire_edge_cases(live_server: LiveServer) -> None:
    """Literal '.' and '..' segments (httpx would normalize them away) and unknown params."""
    import socket

    def raw(request: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", live_server.port), timeout=10) as s:
            s.sendall(request)
            chunks = b""
            while b"\r\n\r\n" not in chunks or not chunks.rstrip().endswith(b"}"):
                data = s.recv(65536)
                if not data:
                    break
                chunks += data
            return chunks

    for path in (b"/v2/namespaces/../metadata", b"/v2/namespaces/./metadata"):
        resp = raw(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert resp.startswith(b"HTTP/1.1 400"), resp
        assert b'"status":"error"' in resp
    r = httpx.get(
        live_server.url + "/v1/namespaces?stainless_overload=x&bogus=1", headers={"prefer": "respond-async"}
    )
    assert r.status_code == 200 and "namespaces" in r.json()
