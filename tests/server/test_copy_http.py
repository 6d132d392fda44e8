"""Copies over HTTP with a short request deadline: the synchronous copy answers 503 saying the copy
goes on, the event loop keeps answering while a batch is read, start_copy_from joins the same
operation, the destination refuses other writes, and the retried copy gets the copy's result."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from lagoon.engine import copy as copy_mod
from tests.server.conftest import memory_settings


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    event = threading.Event()
    real = copy_mod.read_batch

    def gated(*args: Any) -> Any:
        assert event.wait(30)
        return real(*args)

    monkeypatch.setattr(copy_mod, "read_batch", gated)
    yield event
    event.set()


def test_copy_past_the_deadline_goes_on_and_the_retry_gets_its_result(
    make_client: Callable[..., TestClient], gate: threading.Event
) -> None:
    client = make_client(memory_settings(server={"request_timeout_secs": 0.5}))
    rows = [{"id": i, "title": f"t{i}"} for i in range(50)]
    assert client.post("/v2/namespaces/src", json={"upsert_rows": rows}).status_code == 200
    r = client.post("/v2/namespaces/dst", json={"copy_from_namespace": "src"})
    assert r.status_code == 503 and "the copy goes on" in r.json()["error"], r.text
    assert client.get("/healthz").status_code == 200  # a batch is being read off the event loop
    started = client.post(
        "/v2/namespaces/dst/async", json={"copy_from_namespace": {"source_namespace": "src"}}
    )
    token = started.json()["token"]
    status = client.get(f"/v1/namespaces/dst/operations/{token}").json()
    assert status["status"] == "running" and status["progress"] == "0 of 50 documents copied"
    r = client.post("/v2/namespaces/dst", json={"upsert_rows": [{"id": 1}]})
    assert r.status_code == 409 and token in r.json()["error"]
    assert client.get(f"/v1/namespaces/src/operations/{token}").status_code == 404
    gate.set()
    for _ in range(200):
        status = client.get(f"/v1/namespaces/dst/operations/{token}").json()
        if status["status"] == "finished":
            break
        time.sleep(0.05)
    assert status["result"]["success"]["rows_affected"] == 50
    again = client.post("/v2/namespaces/dst", json={"copy_from_namespace": "src"})
    assert again.status_code == 200 and again.json()["rows_affected"] == 50
    count = client.post("/v2/namespaces/dst/query", json={"aggregate_by": {"n": ["Count"]}}).json()
    assert count["aggregations"]["n"] == 50
