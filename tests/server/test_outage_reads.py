"""Reads during a store outage (real SeaweedFS, stopped and started again; real app over HTTP):
strong reads fail retryably (503); eventual reads of a namespace the node has loaded keep
answering from its cached view for ``manifest.outage_staleness_ms`` and say so in
``performance`` (``store_unreachable``, ``staleness_ms``); with the bound at 0 they fail too."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from lagoon.config import Settings
from tests.seaweedfs import SeaweedFS
from tests.server.test_readiness import app_client, s3_settings, wait_ready  # noqa: F401 (fixture)

pytestmark = pytest.mark.s3
EVENTUAL: dict[str, Any] = {"rank_by": ["id", "asc"], "top_k": 5, "consistency": {"level": "eventual"}}


def _settings(endpoint: str, bound_ms: int) -> Settings:
    base = s3_settings(endpoint, "outage", "p/").model_dump()
    base["manifest"] = {"poll_interval_ms": 50, "outage_staleness_ms": bound_ms}
    return Settings.model_validate(base)


@pytest.mark.parametrize("bound_ms", [600_000, pytest.param(0, marks=pytest.mark.slow)])
def test_eventual_reads_ride_out_an_outage_within_the_bound(
    tmp_path: Path,
    app_client: Callable[[Settings], TestClient],  # noqa: F811
    bound_ms: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = SeaweedFS(tmp_path / "weed", buckets=("outage",))
    store.start()
    for name, value in store.env().items():
        monkeypatch.setenv(name, value)
    try:
        c = app_client(_settings(store.endpoint, bound_ms))
        ready = wait_ready(c, True)
        assert ready.status_code == 200, ready.text
        assert c.post("/v2/namespaces/docs", json={"upsert_rows": [{"id": 1, "t": "x"}]}).status_code == 200
        ok = c.post("/v2/namespaces/docs/query", json=EVENTUAL)
        assert ok.status_code == 200 and "store_unreachable" not in ok.json()["performance"], ok.text
        store.s3_port = store.ports["s3"]
        store.stop(grace=5.0)
        time.sleep(0.2)  # past the poll interval: every read now asks the store

        strong = c.post("/v2/namespaces/docs/query", json={"rank_by": ["id", "asc"], "top_k": 5})
        assert strong.status_code == 503, strong.text
        r = c.post("/v2/namespaces/docs/query", json=EVENTUAL)
        if bound_ms == 0:
            assert r.status_code == 503, r.text
        else:
            assert r.status_code == 200, r.text
            perf = r.json()["performance"]
            assert [row["id"] for row in r.json()["rows"]] == [1]
            assert perf["store_unreachable"] is True and perf["staleness_ms"] >= 200, perf

        store.start()
        deadline = time.monotonic() + 90
        while True:
            r = c.post("/v2/namespaces/docs/query", json=EVENTUAL)
            if r.status_code == 200 and "store_unreachable" not in r.json()["performance"]:
                break
            assert time.monotonic() < deadline, r.text
            time.sleep(0.2)
        assert r.json()["performance"]["staleness_ms"] < 60_000
    finally:
        store.stop(grace=5.0)
