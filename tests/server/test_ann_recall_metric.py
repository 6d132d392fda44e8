"""Continuous recall: sampled ANN queries are re-run exactly in the background, and
``lagoon_ann_recall{namespace}`` (and metadata ``ann_recall``) agree with ``_debug/recall``."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import numpy as np
from starlette.testclient import TestClient

from tests.index.segment.data import queries, vectors
from tests.server.conftest import memory_settings

N, DIM, NQ = 12_000, 64, 40
LABEL = "default/ann"


def gauge(text: str, name: str, label: str = LABEL) -> float | None:
    m = re.search(rf'^{name}\{{namespace="{re.escape(label)}"\}} ([0-9.e+-]+)$', text, re.M)
    return float(m.group(1)) if m else None


def test_recall_metric_agrees_with_debug_recall(make_client: Callable[..., TestClient]) -> None:
    settings = memory_settings(
        server={"embedded_indexer": True},
        indexer={"flush_interval_secs": 0.05, "poll_interval_secs": 0.05},
        ann={"recall_sample_rate": 1.0, "recall_sample_min_docs": 0, "recall_samples_per_sec": 1000},
    )
    client = make_client(settings)
    base, qs = vectors(N, DIM), queries(NQ, DIM)
    body = {  # one write: one segment with an IVF (smaller segments are scanned exactly)
        "upsert_columns": {"id": list(range(N)), "v": base.tolist()},
        "distance_metric": "euclidean_squared",
        "schema": {"v": f"[{DIM}]f32"},
    }
    assert client.post("/v2/namespaces/ann", json=body).status_code == 200
    # a low target, so that ANN misses some neighbours and the measurement has something to see
    r = client.patch("/v1/namespaces/ann/metadata", json={"ann_recall_target": 0.8})
    assert r.status_code == 200 and r.json()["ann_recall"]["target"] == 0.8, r.text
    assert client.patch("/v1/namespaces/ann/metadata", json={"ann_recall_target": 2}).status_code == 400
    deadline = time.monotonic() + 120
    while client.get("/v1/namespaces/ann/metadata").json()["index"]["status"] != "up-to-date":
        assert time.monotonic() < deadline, "the namespace was not indexed"
        time.sleep(0.1)
    before = client.get("/v1/namespaces/ann/metadata").json()["ann_recall"]["samples"]
    for q in qs:
        body = {"rank_by": ["v", "ANN", q.tolist()], "top_k": 10}
        assert client.post("/v2/namespaces/ann/query", json=body).status_code == 200
    deadline = time.monotonic() + 60
    while True:
        meta = client.get("/v1/namespaces/ann/metadata").json()["ann_recall"]
        if meta["samples"] >= before + NQ:
            break
        assert time.monotonic() < deadline, meta
        time.sleep(0.05)
    debug = [
        client.post(
            "/v1/namespaces/ann/_debug/recall", json={"rank_by": ["v", "ANN", q.tolist()], "top_k": 10}
        ).json()["avg_recall"]
        for q in qs
    ]
    # _debug/recall's own ANN searches are live queries too: wait until they are measured as well
    # (the same vectors with the same answers, so the window's mean is unchanged by them)
    deadline = time.monotonic() + 60
    while client.get("/v1/namespaces/ann/metadata").json()["ann_recall"]["samples"] < before + 2 * NQ:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    meta = client.get("/v1/namespaces/ann/metadata").json()["ann_recall"]
    text = client.get("/metrics").text
    measured = gauge(text, "lagoon_ann_recall")
    samples = gauge(text, "lagoon_ann_recall_samples_total")
    assert measured is not None and samples is not None and samples >= NQ, text[:2000]
    if before == 0:  # every sample in the window is one of these queries
        assert abs(measured - float(np.mean(debug))) < 1e-9, (measured, np.mean(debug))
        assert abs(meta["measured"] - measured) < 1e-9
    assert 0.6 < measured < 1.0, measured  # ANN at target 0.8 misses some, and is no random answer


def test_sampling_is_off_for_small_namespaces(make_client: Callable[..., TestClient]) -> None:
    client = make_client(memory_settings(ann={"recall_sample_rate": 1.0}))  # min_docs: the default
    base = vectors(500, 8)
    body = {
        "upsert_columns": {"id": list(range(500)), "v": base.tolist()},
        "distance_metric": "cosine_distance",
        "schema": {"v": "[8]f32"},
    }
    assert client.post("/v2/namespaces/small", json=body).status_code == 200
    for q in base[:5]:
        assert (
            client.post(
                "/v2/namespaces/small/query", json={"rank_by": ["v", "ANN", q.tolist()], "top_k": 5}
            ).status_code
            == 200
        )
    meta = client.get("/v1/namespaces/small/metadata").json()["ann_recall"]
    assert meta == {"target": 0.95, "measured": None, "samples": 0}
    assert gauge(client.get("/metrics").text, "lagoon_ann_recall", "default/small") is None
