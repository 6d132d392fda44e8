"""Every route of the HTTP API, in process, over the real engine and a memory store: results
(ids, order, ``$dist``), response shapes, and the 4xx answers to bad names and bodies."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from starlette.testclient import TestClient

from lagoon.engine import database
from lagoon.server.openapi import build_openapi
from lagoon.server.routes import ROUTES

from .conftest import assert_error

MakeClient = Callable[..., TestClient]

DOCS = [
    {"id": 1, "vector": [1.0, 0.0, 0.0], "title": "the quick brown fox", "cat": "a", "n": 5},
    {"id": 2, "vector": [0.9, 0.1, 0.0], "title": "a lazy dog sleeps", "cat": "b", "n": 3},
    {"id": 3, "vector": [0.0, 1.0, 0.0], "title": "quick quick fox jumps", "cat": "a", "n": 8},
    {"id": 4, "vector": [0.0, 0.0, 1.0], "title": "brown dog and fox", "cat": "b", "n": 1},
    {"id": 5, "vector": [0.5, 0.5, 0.0], "title": "nothing to see", "cat": "a", "n": 13},
]
FTS_SCHEMA = {"title": {"type": "string", "full_text_search": True}}


def cosine_distance(a: list[float], b: list[float]) -> float:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(1.0 - x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))


def b64(vec: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()


def ids(resp_json: dict[str, Any]) -> list[Any]:
    return [row["id"] for row in resp_json["rows"]]


def ok(resp: Any, status: int = 200) -> Any:
    assert resp.status_code == status, (resp.status_code, resp.text)
    return resp.json()


@pytest.fixture
def docs(client: TestClient) -> TestClient:
    body = {"upsert_rows": DOCS, "distance_metric": "cosine_distance", "schema": FTS_SCHEMA}
    result = ok(client.post("/v2/namespaces/docs", json=body))
    assert result["status"] == "OK" and result["rows_affected"] == 5 and result["rows_upserted"] == 5
    assert result["billing"]["billable_logical_bytes_written"] > 0
    assert isinstance(result["performance"]["server_total_ms"], int)
    return client


# --- writes -----------------------------------------------------------------------------------


def test_upsert_columns_with_base64_vectors(client: TestClient) -> None:
    body = {
        "upsert_columns": {"id": [10, 11], "vector": [b64([1.0, 0.0]), b64([0.0, 1.0])], "title": ["x", "y"]},
        "distance_metric": "euclidean_squared",
    }
    assert ok(client.post("/v2/namespaces/cols", json=body))["rows_upserted"] == 2
    q = ok(
        client.post(
            "/v2/namespaces/cols/query",
            json={"rank_by": ["vector", "kNN", [0.0, 1.0]], "top_k": 2, "include_attributes": ["title"]},
        )
    )
    assert ids(q) == [11, 10]
    assert q["rows"][0]["$dist"] == pytest.approx(0.0) and q["rows"][1]["$dist"] == pytest.approx(2.0)
    assert q["rows"][0]["title"] == "y"


def test_patch_delete_and_affected_ids(docs: TestClient) -> None:
    body = {
        "patch_rows": [{"id": 1, "cat": "z"}, {"id": 999, "cat": "z"}],
        "deletes": [2],
        "return_affected_ids": True,
    }
    r = ok(docs.post("/v2/namespaces/docs", json=body))
    assert r["patched_ids"] == [1] and r["deleted_ids"] == [2] and r["rows_affected"] == 2
    q = ok(
        docs.post(
            "/v2/namespaces/docs/query",
            json={"rank_by": ["id", "asc"], "top_k": 10, "include_attributes": ["cat"]},
        )
    )
    assert [(row["id"], row["cat"]) for row in q["rows"]] == [(1, "z"), (3, "a"), (4, "b"), (5, "a")]


def test_by_filter_and_conditional_writes(docs: TestClient) -> None:
    r = ok(
        docs.post(
            "/v2/namespaces/docs", json={"delete_by_filter": ["n", "Lt", 4], "return_affected_ids": True}
        )
    )
    assert sorted(r["deleted_ids"]) == [2, 4]
    r = ok(
        docs.post(
            "/v2/namespaces/docs",
            json={"patch_by_filter": {"filters": ["cat", "Eq", "a"], "patch": {"cat": "c"}}},
        )
    )
    assert r["rows_patched"] == 3
    # Upsert only when the new n is larger ($ref_new): id 1 (5 -> 7) applies, id 3 (8 -> 2) does not.
    body = {
        "upsert_rows": [
            {"id": 1, "vector": [1.0, 0.0, 0.0], "n": 7},
            {"id": 3, "vector": [0.0, 1.0, 0.0], "n": 2},
        ],
        "upsert_condition": ["n", "Lt", {"$ref_new": "n"}],
        "return_affected_ids": True,
    }
    r = ok(docs.post("/v2/namespaces/docs", json=body))
    assert r["upserted_ids"] == [1]
    q = ok(
        docs.post(
            "/v2/namespaces/docs/query",
            json={"rank_by": ["id", "asc"], "top_k": 10, "include_attributes": ["n"]},
        )
    )
    assert [(row["id"], row["n"]) for row in q["rows"]] == [(1, 7), (3, 8), (5, 13)]


def test_write_errors_are_4xx(docs: TestClient) -> None:
    assert_error(docs.post("/v2/namespaces/docs", json={"upsert_rows": [{"id": 1}, {"id": 1}]}), 400)
    assert_error(docs.post("/v2/namespaces/docs", json={"upsert_rows": "nope"}), 400)
    assert_error(docs.post("/v2/namespaces/docs", json={"upsert_rows": [{"id": 9, "vector": [1.0]}]}), 400)
    assert_error(docs.post("/v2/namespaces/docs", json={"upsert_rows": [{"id": 9, "n": "text"}]}), 400)
    assert_error(
        docs.post("/v2/namespaces/fresh", json={"upsert_rows": [{"id": 1}], "create_namespace": False}), 404
    )


# --- queries ----------------------------------------------------------------------------------


def test_ann_and_knn_with_filters(docs: TestClient) -> None:
    q = [1.0, 0.2, 0.0]
    r = ok(docs.post("/v2/namespaces/docs/query", json={"rank_by": ["vector", "ANN", q], "top_k": 3}))
    expected = sorted(DOCS, key=lambda d: cosine_distance(d["vector"], q))[:3]
    assert ids(r) == [d["id"] for d in expected]
    for row, doc in zip(r["rows"], expected, strict=True):
        assert row["$dist"] == pytest.approx(cosine_distance(doc["vector"], q), abs=1e-5)
    assert set(r["performance"]) >= {
        "approx_namespace_size",
        "cache_hit_ratio",
        "cache_temperature",
        "exhaustive_search_count",
        "query_execution_ms",
        "server_total_ms",
    }
    body = {
        "rank_by": ["vector", "kNN", q],
        "top_k": 10,
        "filters": ["cat", "Eq", "b"],
        "include_attributes": ["cat"],
    }
    r = ok(docs.post("/v2/namespaces/docs/query", json=body))
    assert ids(r) == [2, 4] and all(row["cat"] == "b" for row in r["rows"])


def test_bm25_and_score_expressions(docs: TestClient) -> None:
    r = ok(
        docs.post("/v2/namespaces/docs/query", json={"rank_by": ["title", "BM25", "quick fox"], "top_k": 10})
    )
    assert ids(r)[:2] == [3, 1] and set(ids(r)) == {1, 3, 4}
    scores = [row["$dist"] for row in r["rows"]]
    assert scores == sorted(scores, reverse=True) and scores[-1] > 0
    summed = ["Sum", [["title", "BM25", "dog"], ["Product", 10.0, ["cat", "Eq", "a"]]]]
    r = ok(docs.post("/v2/namespaces/docs/query", json={"rank_by": summed, "top_k": 10}))
    assert set(ids(r)[:3]) == {1, 3, 5}  # the category boost outweighs BM25 on 'dog'
    assert set(ids(r)) == {1, 2, 3, 4, 5}


def test_order_by_paging_with_id_cursor(docs: TestClient) -> None:
    seen: list[int] = []
    last = None
    while True:
        body: dict[str, Any] = {"rank_by": ["id", "asc"], "top_k": 2}
        if last is not None:
            body["filters"] = ["id", "Gt", last]
        rows = ok(docs.post("/v2/namespaces/docs/query", json=body))["rows"]
        assert all("$dist" not in row for row in rows)
        if not rows:
            break
        seen += [row["id"] for row in rows]
        last = rows[-1]["id"]
    assert seen == [1, 2, 3, 4, 5]
    r = ok(
        docs.post(
            "/v2/namespaces/docs/query",
            json={"rank_by": ["n", "desc"], "top_k": 2, "include_attributes": ["n"]},
        )
    )
    assert [row["n"] for row in r["rows"]] == [13, 8]


def test_aggregations(docs: TestClient) -> None:
    r = ok(
        docs.post(
            "/v2/namespaces/docs/query", json={"aggregate_by": {"count": ["Count"], "total": ["Sum", "n"]}}
        )
    )
    assert r["aggregations"] == {"count": 5, "total": 30}
    r = ok(
        docs.post(
            "/v2/namespaces/docs/query", json={"aggregate_by": {"count": ["Count"]}, "group_by": ["cat"]}
        )
    )
    assert sorted(r["aggregation_groups"], key=lambda g: g["cat"]) == [
        {"cat": "a", "count": 3},
        {"cat": "b", "count": 2},
    ]


def test_multi_query_with_rrf(docs: TestClient) -> None:
    body = {
        "queries": [
            {"rank_by": ["vector", "ANN", [0.0, 1.0, 0.0]], "top_k": 3},
            {"rank_by": ["title", "BM25", "quick"], "top_k": 3},
        ],
        "rerank_by": ["RRF"],
        "limit": 3,
    }
    r = ok(
        docs.post(
            "/v2/namespaces/docs/query?stainless_overload=multiQuery",
            json=body,
            headers={"prefer": "respond-async"},
        )
    )
    (fused,) = r["results"]
    assert ids(fused)[0] == 3  # first in both lists
    assert len(fused["rows"]) == 3
    assert set(r["performance"]) >= {"server_total_ms", "query_execution_ms"}
    r = ok(docs.post("/v2/namespaces/docs/query", json={"queries": body["queries"]}))
    assert [ids(sub) for sub in r["results"]] == [[3, 5, 2], [3, 1]]


def test_query_errors_are_4xx(docs: TestClient) -> None:
    for body in (
        {},
        {"rank_by": "nope"},
        {"rank_by": ["vector", "ANN", [1.0]]},
        {"rank_by": ["id", "asc"], "top_k": 10**9},
        {"rank_by": ["id", "asc"], "filters": ["n", "Frobnicate", 1]},
        {"rank_by": ["nope", "BM25", "x"]},
        {"queries": "x"},
        {"queries": [{"rank_by": ["id", "asc"]}] * 17},
    ):
        r = docs.post("/v2/namespaces/docs/query", json=body)
        assert 400 <= r.status_code < 500, (body, r.status_code, r.text)
        assert_error(r, r.status_code)


def test_explain(docs: TestClient) -> None:
    r = ok(
        docs.post(
            "/v2/namespaces/docs/explain_query",
            json={"rank_by": ["vector", "ANN", [1.0, 0.0, 0.0]], "top_k": 3},
        )
    )
    assert isinstance(r["plan_text"], str) and "vector" in r["plan_text"]


# --- namespace management ---------------------------------------------------------------------


def test_metadata_and_v1_alias(docs: TestClient) -> None:
    m = ok(docs.get("/v2/namespaces/docs/metadata"))
    assert m["approx_row_count"] == 5
    assert set(m) >= {"approx_logical_bytes", "created_at", "updated_at", "encryption", "index", "schema"}
    assert m["schema"]["vector"]["type"] == "[3]f32"
    assert ok(docs.get("/v1/namespaces/docs/metadata"))["approx_row_count"] == 5
    m = ok(docs.patch("/v1/namespaces/docs/metadata", json={"pinning": {"replicas": 2}}))
    assert m["pinning"]["replicas"] == 2
    assert_error(docs.patch("/v1/namespaces/docs/metadata", json={"pinning": "yes"}), 400)


def test_schema_get_and_update(docs: TestClient) -> None:
    s = ok(docs.get("/v1/namespaces/docs/schema"))
    assert s["id"]["type"] == "uint" and s["title"]["type"] == "string"
    s = ok(docs.post("/v1/namespaces/docs/schema", json={"extra": {"type": "float"}}))
    assert s["extra"]["type"] == "float"
    assert_error(docs.post("/v1/namespaces/docs/schema", json={"n": "string"}), 400)
    assert_error(docs.post("/v1/namespaces/docs/schema", json=["n"]), 400, "JSON object")


def test_list_namespaces_pages(client: TestClient) -> None:
    for name in ("p-a", "p-b", "p-c", "p-d", "p-e", "q-x"):
        ok(client.post(f"/v2/namespaces/{name}", json={"upsert_rows": [{"id": 1}]}))
    names: list[str] = []
    cursor = None
    pages = 0
    while True:
        url = "/v1/namespaces?prefix=p-&page_size=2&stainless_overload=x" + (
            f"&cursor={cursor}" if cursor else ""
        )
        page = ok(client.get(url))
        names += [n["id"] for n in page["namespaces"]]
        pages += 1
        cursor = page.get("next_cursor")
        if not cursor:
            assert "next_cursor" not in page
            break
    assert names == ["p-a", "p-b", "p-c", "p-d", "p-e"] and pages == 3
    assert [n["id"] for n in ok(client.get("/v1/namespaces"))["namespaces"]] == [*names, "q-x"]
    for bad in ("page_size=0", "page_size=1001", "page_size=x", "cursor=..", "cursor=a%2Fb"):
        assert_error(client.get(f"/v1/namespaces?{bad}"), 400)


def test_hint_cache_warm(docs: TestClient) -> None:
    assert ok(docs.get("/v1/namespaces/docs/hint_cache_warm"), 202)["status"] == "ACCEPTED"
    assert_error(docs.get("/v1/namespaces/never-written/hint_cache_warm"), 404, "not found")


def test_recall(docs: TestClient) -> None:
    r = ok(docs.post("/v1/namespaces/docs/_debug/recall", json={"num": 3, "top_k": 2}))
    assert r == {"avg_recall": 1.0, "avg_ann_count": 2.0, "avg_exhaustive_count": 2.0}
    r = ok(
        docs.post(
            "/v1/namespaces/docs/_debug/recall",
            json={"rank_by": ["vector", "ANN", [1.0, 0.0, 0.0]], "top_k": 2, "include_ground_truth": True},
        )
    )
    assert r["avg_recall"] == 1.0
    (truth,) = r["ground_truth"]
    assert truth["query_vector"] == [1.0, 0.0, 0.0] and [n["id"] for n in truth["nearest_neighbors"]] == [
        1,
        2,
    ]
    r = ok(docs.post("/v1/namespaces/docs/_debug/recall", content=b""))
    assert r["avg_recall"] == 1.0 and r["avg_ann_count"] == 5.0  # top_k 10 over 5 documents
    assert_error(docs.post("/v1/namespaces/docs/_debug/recall", json={"num": 0}), 400, "num")
    assert_error(docs.post("/v1/namespaces/docs/_debug/recall", json={"bogus": 1}), 400, "bogus")
    assert_error(
        docs.post(
            "/v1/namespaces/docs/_debug/recall", json={"num": 2, "rank_by": ["vector", "ANN", [1, 0, 0]]}
        ),
        400,
    )
    assert_error(docs.post("/v1/namespaces/missing/_debug/recall", json={}), 404)


def test_versions_grow_with_every_commit(docs: TestClient) -> None:
    """The commit version is the WAL seq: every write that commits takes the next one, a write
    that changes nothing answers the current one, and metadata shows the latest."""
    v0 = ok(docs.get("/v2/namespaces/docs/metadata"))["version"]
    assert v0 == 1
    a = ok(docs.post("/v2/namespaces/docs", json={"upsert_rows": [{"id": 9, "title": "nine"}]}))
    assert a["version"] == v0 + 1
    b = ok(docs.post("/v2/namespaces/docs", json={"deletes": [9]}))
    assert b["version"] == v0 + 2
    noop = ok(docs.post("/v2/namespaces/docs", json={"deletes": [12345]}))
    assert noop["version"] == v0 + 2 and noop["rows_affected"] == 0
    assert ok(docs.get("/v2/namespaces/docs/metadata"))["version"] == v0 + 2
    meta = ok(docs.patch("/v1/namespaces/docs/metadata", json={"read_only": False}))
    assert meta["version"] == v0 + 3  # a settings change commits too
    ok(docs.delete("/v2/namespaces/docs"))
    again = ok(docs.post("/v2/namespaces/docs", json={"upsert_rows": [{"id": 1}]}))
    assert again["version"] == v0 + 5  # deleting commits a truncating entry: versions never go back


def test_branch_shares_the_current_state(docs: TestClient) -> None:
    r = ok(docs.post("/v2/namespaces/copy/branch", json={"source_namespace": "docs"}))
    assert r["status"] == "OK" and r["rows_affected"] == 5
    ok(docs.post("/v2/namespaces/docs", json={"deletes": [1, 2, 3]}))
    assert ok(docs.get("/v2/namespaces/copy/metadata"))["approx_row_count"] == 5
    assert_error(
        docs.post("/v2/namespaces/copy/branch", json={"source_namespace": "docs"}), 400, "must not exist"
    )
    assert_error(docs.post("/v2/namespaces/other/branch", json={"source_namespace": "missing"}), 404)
    r = ok(
        docs.post(
            "/v2/namespaces/copy2?stainless_overload=copyFrom",
            json={"copy_from_namespace": {"source_namespace": "docs"}},
        )
    )
    assert r["rows_affected"] == 2


def test_delete_namespace(docs: TestClient) -> None:
    assert ok(docs.delete("/v2/namespaces/docs", headers={"content-type": "application/json"})) == {
        "status": "OK"
    }
    assert_error(docs.get("/v2/namespaces/docs/metadata"), 404, "docs")
    assert_error(docs.delete("/v2/namespaces/docs"), 404)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v2/namespaces/{}/query", {"rank_by": ["id", "asc"], "top_k": 1}),
        ("POST", "/v2/namespaces/{}/explain_query", {"rank_by": ["id", "asc"], "top_k": 1}),
        ("GET", "/v2/namespaces/{}/metadata", None),
        ("GET", "/v1/namespaces/{}/metadata", None),
        ("PATCH", "/v1/namespaces/{}/metadata", {"read_only": False}),
        ("GET", "/v1/namespaces/{}/schema", None),
        ("POST", "/v1/namespaces/{}/schema", {"a": "string"}),
        ("DELETE", "/v2/namespaces/{}", None),
    ],
)
def test_missing_namespace_is_404(client: TestClient, method: str, path: str, body: Any) -> None:
    r = client.request(method, path.format("missing-ns"), json=body)
    assert_error(r, 404, "missing-ns")


@pytest.mark.parametrize(
    ("raw_path", "statuses"),
    [
        ("/v2/namespaces/%2e%2e/metadata", {400}),
        ("/v2/namespaces/a%2Fb/metadata", {404}),
        ("/v2/namespaces/a%00b/metadata", {400}),
        ("/v2/namespaces/caf%C3%A9/metadata", {400}),
        ("/v2/namespaces/" + "x" * 129 + "/metadata", {400}),
        ("/v2/namespaces/a%20b/metadata", {400}),
        ("/v2/namespaces//metadata", {404}),
        ("/v1/namespaces/", {404}),
    ],
)
def test_weird_names_are_4xx(client: TestClient, raw_path: str, statuses: set[int]) -> None:
    r = client.get(raw_path)  # (httpx normalizes literal "." and ".." segments; see test_live_wire)
    assert r.status_code in statuses, (raw_path, r.status_code, r.text)
    assert_error(r, r.status_code)


# --- operations ---------------------------------------------------------------------------------


def test_health_ready_metrics(docs: TestClient) -> None:
    assert ok(docs.get("/healthz")) == {"status": "ok"}
    assert ok(docs.get("/readyz")) == {"status": "ready"}
    ok(
        docs.post(
            "/v2/namespaces/docs/query", json={"rank_by": ["vector", "ANN", [1.0, 0.0, 0.0]], "top_k": 1}
        )
    )
    ok(docs.post("/v2/namespaces/docs/query", json={"rank_by": ["title", "BM25", "fox"], "top_k": 1}))
    text = docs.get("/metrics").text
    assert 'lagoon_http_requests_total{method="POST",route="query",status="200"} 2.0' in text
    assert 'lagoon_query_duration_seconds_count{kind="vector"} 1.0' in text
    assert 'lagoon_query_duration_seconds_count{kind="fts"} 1.0' in text
    assert 'lagoon_query_duration_seconds_count{kind="hybrid"} 0.0' in text
    assert "lagoon_objstore_requests_total" in text
    assert "process_cpu_seconds_total" in text or "python_info" in text


def test_request_id_echo(client: TestClient) -> None:
    r = client.get("/healthz", headers={"x-request-id": "trace-123"})
    assert r.headers["x-request-id"] == "trace-123"
    r = client.get("/healthz", headers={"x-request-id": "bad id; x=1"})
    assert r.headers["x-request-id"] != "bad id; x=1" and len(r.headers["x-request-id"]) == 16


def test_unknown_route_and_method(client: TestClient) -> None:
    assert_error(client.get("/v3/anything"), 404, "no such route")
    r = client.put("/v2/namespaces/docs", json={})
    assert_error(r, 405)
    assert "POST" in r.headers["allow"]


def test_openapi_document(client: TestClient) -> None:
    from openapi_spec_validator import validate

    doc = ok(client.get("/openapi.json"))
    validate(doc)
    assert doc == json.loads(json.dumps(build_openapi()))
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    for route in ROUTES:
        path = route.path.replace("{ns}", "{namespace}")
        for method in route.methods or ():
            if method != "HEAD":
                assert (path, method) in documented, (path, method)


def _where_writes_are_validated(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Each write validation from now on appends whether it ran on the event loop (True) or in a
    worker thread (False)."""
    validated_on_loop: list[bool] = []
    real = database.parse_write

    def spy(body: Any, schema: Any) -> Any:
        try:
            asyncio.get_running_loop()
            validated_on_loop.append(True)
        except RuntimeError:
            validated_on_loop.append(False)
        return real(body, schema)

    monkeypatch.setattr(database, "parse_write", spy)
    return validated_on_loop


@pytest.mark.parametrize(("rows", "on_the_loop"), [(100, True), (5_000, False)])
def test_a_write_of_many_values_is_validated_off_the_event_loop(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, rows: int, on_the_loop: bool
) -> None:
    """Small writes are validated on the event loop; one naming many values (here 5,000 rows of
    about 60 KiB, far below the 1 MiB of a large body) in a worker thread, so that it does not
    hold every other client of the process while it is validated."""
    validated_on_loop = _where_writes_are_validated(monkeypatch)
    body = {"upsert_rows": [{"id": i, "n": i} for i in range(rows)]}
    assert ok(client.post("/v2/namespaces/many", json=body))["rows_upserted"] == rows
    assert validated_on_loop == [on_the_loop]


@pytest.mark.parametrize(
    ("row", "on_the_loop"),
    [({"id": 1, "vector": [0.5] * 4096}, True), ({"id": 1, "tags": list(range(20_000))}, False)],
)
def test_an_array_attribute_counts_its_elements_a_vector_does_not(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, row: dict[str, Any], on_the_loop: bool
) -> None:
    """One row holding a 20,000-element array attribute is validated element by element: off the
    loop; a vector of the same order is checked as one matrix: on it."""
    validated_on_loop = _where_writes_are_validated(monkeypatch)
    body = {"upsert_rows": [row], "distance_metric": "cosine_distance"}
    assert ok(client.post("/v2/namespaces/arrays", json=body))["rows_upserted"] == 1
    assert validated_on_loop == [on_the_loop]


@pytest.mark.parametrize(
    ("columns", "on_the_loop"),
    [
        ({"id": [1, 2], "vector": [[0.5] * 4096, [0.25] * 4096]}, True),
        ({"id": [1, 2], "tags": [list(range(10_000)), list(range(10_000))]}, False),
        ({"id": list(range(5_000)), "n": list(range(5_000))}, False),
    ],
)
def test_columns_count_their_entries_and_array_elements(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, columns: dict[str, Any], on_the_loop: bool
) -> None:
    """The same count for ``upsert_columns``: every entry of a column is a value, an array
    attribute's elements are values, a vector is one value."""
    validated_on_loop = _where_writes_are_validated(monkeypatch)
    body = {"upsert_columns": columns, "distance_metric": "cosine_distance"}
    assert ok(client.post("/v2/namespaces/columns", json=body))["rows_upserted"] == len(columns["id"])
    assert validated_on_loop == [on_the_loop]
