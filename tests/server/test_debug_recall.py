"""``POST /v1/namespaces/{ns}/_debug/recall`` through a real ``lagoon-server``: sampling needs a
``vector`` attribute of a vector type, and a namespace without one is a 400 that says so (and
which vector attributes it has), not a complaint about a request field the client never sent."""

from __future__ import annotations

from typing import Any

import httpx

from .conftest import LiveServer, assert_error


def write(server: LiveServer, ns: str, body: dict[str, Any]) -> None:
    r = httpx.post(f"{server.url}/v2/namespaces/{ns}", json=body, timeout=30)
    assert r.status_code == 200, r.text


def recall(server: LiveServer, ns: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/namespaces/{ns}/_debug/recall", json=body, timeout=60)


def test_a_namespace_without_vectors_is_refused_naming_what_it_lacks(
    live_server: LiveServer, unique: str
) -> None:
    write(live_server, unique, {"upsert_rows": [{"id": 1, "text": "a"}, {"id": 2, "text": "b"}]})
    body = assert_error(
        recall(live_server, unique, {}), 400, f"namespace '{unique}' has no 'vector' attribute"
    )
    assert "no vector attribute, so no vector index to measure" in body["error"]
    assert "include_attributes" not in body["error"]


def test_a_vector_attribute_of_another_name_is_offered(live_server: LiveServer, unique: str) -> None:
    write(
        live_server,
        unique,
        {
            "upsert_rows": [{"id": i, "emb": [float(i), 1.0], "vector": f"v{i}"} for i in range(4)],
            "schema": {"emb": {"type": "[2]f32", "ann": True}, "vector": {"type": "string"}},
            "distance_metric": "cosine_distance",
        },
    )
    body = assert_error(
        recall(live_server, unique, {}), 400, "attribute 'vector'", "has type string, not a vector type"
    )
    assert "its vector attributes: emb" in body["error"] and "rank_by" in body["error"]
    r = recall(live_server, unique, {"rank_by": ["emb", "ANN", [1.0, 0.0]], "top_k": 2})
    assert r.status_code == 200, r.text
    assert r.json() == {"avg_recall": 1.0, "avg_ann_count": 2.0, "avg_exhaustive_count": 2.0}


def test_sampling_the_vector_attribute_still_measures(live_server: LiveServer, unique: str) -> None:
    rows = [{"id": i, "vector": [float(i), 1.0, 0.5]} for i in range(6)]
    write(live_server, unique, {"upsert_rows": rows, "distance_metric": "euclidean_squared"})
    r = recall(live_server, unique, {"num": 3, "top_k": 4})
    assert r.status_code == 200, r.text
    assert r.json() == {"avg_recall": 1.0, "avg_ann_count": 4.0, "avg_exhaustive_count": 4.0}
    assert_error(recall(live_server, unique + "-none", {}), 404, "not found")
