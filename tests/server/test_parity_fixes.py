"""turbopuffer-compatibility details of the HTTP API: metadata while indexing, ``Allow`` on 405,
the short stopword lists, and the per-attribute ``ann.distance_metric`` rules."""

from __future__ import annotations

from typing import Any

import pytest
import turbopuffer
from starlette.testclient import TestClient

from lagoon.index.text.analyze import Analyzer
from lagoon.index.text.postings import same_stopwords
from lagoon.index.text.stopwords import STOPWORDS_VERSION, stopwords
from lagoon.schema import FtsConfig

from .conftest import LiveServer, assert_error


def ok(resp: Any, status: int = 200) -> Any:
    assert resp.status_code == status, (resp.status_code, resp.text)
    return resp.json()


# --- metadata ---------------------------------------------------------------------------------


def test_metadata_while_unindexed_has_rows_and_bytes(client: TestClient) -> None:
    rows = [{"id": i, "n": i} for i in range(7)]
    ok(client.post("/v2/namespaces/m", json={"upsert_rows": rows}))
    ok(client.post("/v2/namespaces/m", json={"deletes": [0]}))
    index = ok(client.get("/v2/namespaces/m/metadata"))["index"]
    # nothing indexes in this app: the whole WAL is unindexed (7 upserted rows + 1 delete)
    assert index["status"] == "updating"
    assert index["unindexed_rows"] == 8
    assert isinstance(index["unindexed_bytes"], int) and index["unindexed_bytes"] > 0


def test_sdk_parses_metadata_strictly(live_server: LiveServer, unique: str) -> None:
    """The SDK's NamespaceMetadata model requires unindexed_rows while indexing."""
    client = turbopuffer.Turbopuffer(
        api_key="x", base_url=live_server.url, max_retries=0, _strict_response_validation=True
    )
    try:
        ns = client.namespace(unique)
        ns.write(upsert_rows=[{"id": 1, "a": "x"}, {"id": 2, "a": "y"}])
        ns._client._strict_response_validation = True  # namespace() drops the flag
        meta = ns.metadata()
        assert meta.approx_row_count == 2
        if meta.index.status == "updating":
            assert meta.index.unindexed_rows == 2  # type: ignore[union-attr]
    finally:
        client.close()


# --- 405 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("put", "/v2/namespaces/ns", "POST, DELETE"),
        ("get", "/v2/namespaces/ns", "POST, DELETE"),
        ("put", "/v1/namespaces/ns/metadata", "GET, HEAD, PATCH"),
        ("delete", "/v1/namespaces/ns/schema", "GET, HEAD, POST"),
        ("get", "/v2/namespaces/ns/query", "POST"),
    ],
)
def test_405_allow_lists_every_method_of_the_path(
    client: TestClient, method: str, path: str, allowed: str
) -> None:
    r = getattr(client, method)(path)
    assert_error(r, 405, "method not allowed")
    assert r.headers["allow"] == allowed


# --- stopwords ----------------------------------------------------------------------------------


def test_english_stopwords_are_lucenes_short_list() -> None:
    words = stopwords("english")
    assert len(words) == 33
    assert {"the", "of", "and", "a", "is"} <= words
    assert not {"hello", "world", "information", "system", "new"} & words
    analyzer = Analyzer(FtsConfig(remove_stopwords=True))
    assert analyzer.tokens("Hello world: the new information system of a company") == [
        "hello",
        "world",
        "new",
        "information",
        "system",
        "company",
    ]


@pytest.mark.parametrize(
    ("language", "word", "size_range"),
    [
        ("german", "und", (150, 300)),
        ("french", "le", (100, 200)),
        ("spanish", "el", (200, 350)),
        ("russian", "и", (100, 200)),
        ("hungarian", "az", (150, 250)),
        ("romanian", "si", (150, 300)),
        ("arabic", "في", (100, 250)),
    ],
)
def test_other_languages_have_short_lists(language: str, word: str, size_range: tuple[int, int]) -> None:
    words = stopwords(language)
    assert size_range[0] <= len(words) <= size_range[1], len(words)
    assert word in words


def test_tamil_has_no_list() -> None:
    assert stopwords("tamil") == frozenset()
    analyzer = Analyzer(FtsConfig(language="tamil", remove_stopwords=True))
    assert analyzer.tokens("நான் ஒரு") == ["நான்", "ஒரு"]


def test_postings_built_with_other_lists_are_not_reused() -> None:
    on, off = FtsConfig(remove_stopwords=True), FtsConfig()
    assert same_stopwords({"stopwords_version": STOPWORDS_VERSION}, on)
    assert not same_stopwords({}, on)  # built before versions were recorded (stopwords-iso)
    assert same_stopwords({}, off)  # stopwords were not removed: the lists do not matter


def test_stopword_query_end_to_end(client: TestClient) -> None:
    schema = {"t": {"type": "string", "full_text_search": {"remove_stopwords": True}}}
    rows = [{"id": 1, "t": "hello world"}, {"id": 2, "t": "the world of new things"}]
    ok(client.post("/v2/namespaces/sw", json={"upsert_rows": rows, "schema": schema}))
    res = ok(client.post("/v2/namespaces/sw/query", json={"rank_by": ["t", "BM25", "hello"]}))
    assert [r["id"] for r in res["rows"]] == [1]
    res = ok(client.post("/v2/namespaces/sw/query", json={"rank_by": ["t", "BM25", "the of"]}))
    assert res["rows"] == []  # only stopwords: nothing to match


# --- per-attribute distance metrics -------------------------------------------------------------


def test_own_metrics_need_no_top_level_metric(client: TestClient) -> None:
    schema = {
        "a": {"type": "[2]f32", "ann": {"distance_metric": "euclidean_squared"}},
        "b": {"type": "[2]f32", "ann": {"distance_metric": "cosine_distance"}},
    }
    rows = [{"id": 1, "a": [0.0, 0.0], "b": [1.0, 0.0]}, {"id": 2, "a": [3.0, 4.0], "b": [0.0, 1.0]}]
    ok(client.post("/v2/namespaces/pm", json={"upsert_rows": rows, "schema": schema}))
    res = ok(client.post("/v2/namespaces/pm/query", json={"rank_by": ["a", "ANN", [0.0, 0.0]]}))
    assert [(r["id"], r["$dist"]) for r in res["rows"]] == [(1, 0.0), (2, 25.0)]  # 3² + 4²
    res = ok(client.post("/v2/namespaces/pm/query", json={"rank_by": ["b", "ANN", [1.0, 1.0]]}))
    # cosine: 1 - 1/√2 for both; ties by id
    assert [r["id"] for r in res["rows"]] == [1, 2]
    assert res["rows"][0]["$dist"] == pytest.approx(1 - 2**-0.5, abs=1e-6)
    s = ok(client.get("/v1/namespaces/pm/schema"))
    assert s["a"]["ann"] == {"distance_metric": "euclidean_squared"}
    assert s["b"]["ann"] == {"distance_metric": "cosine_distance"}


def test_top_level_metric_applies_to_columns_without_one(client: TestClient) -> None:
    schema = {"a": {"type": "[2]f32", "ann": {"distance_metric": "euclidean_squared"}}, "b": "[2]f32"}
    rows = [{"id": 1, "a": [1.0, 0.0], "b": [1.0, 0.0]}]
    body = {"upsert_rows": rows, "schema": schema, "distance_metric": "euclidean_squared"}
    ok(client.post("/v2/namespaces/tl", json=body))
    s = ok(client.get("/v1/namespaces/tl/schema"))
    assert s["b"]["ann"] == {"distance_metric": "euclidean_squared"}
    res = ok(client.post("/v2/namespaces/tl/query", json={"rank_by": ["b", "ANN", [0.0, 2.0]]}))
    assert res["rows"][0]["$dist"] == pytest.approx(5.0)  # 1² + 2²


def test_missing_metric_names_the_column(client: TestClient) -> None:
    schema = {"a": {"type": "[2]f32", "ann": {"distance_metric": "euclidean_squared"}}, "b": "[2]f32"}
    rows = [{"id": 1, "a": [1.0, 0.0], "b": [1.0, 0.0]}]
    r = client.post("/v2/namespaces/mm", json={"upsert_rows": rows, "schema": schema})
    body = assert_error(r, 400, "distance_metric is required", "'b'")
    assert "'a'" not in body["error"]
    assert_error(client.post("/v2/namespaces/mm/query", json={"rank_by": ["id", "asc"]}), 404)


def test_conflicting_metrics_are_refused(client: TestClient) -> None:
    schema = {"a": {"type": "[2]f32", "ann": {"distance_metric": "euclidean_squared"}}}
    body = {
        "upsert_rows": [{"id": 1, "a": [1.0, 0.0]}],
        "schema": schema,
        "distance_metric": "cosine_distance",
    }
    assert_error(
        client.post("/v2/namespaces/cm", json=body), 400, "schema.a.ann.distance_metric", "cosine_distance"
    )
    assert_error(client.post("/v2/namespaces/cm/query", json={"rank_by": ["id", "asc"]}), 404)
