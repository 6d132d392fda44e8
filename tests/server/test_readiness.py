"""``/readyz`` means it: not ready while the bucket is missing, the credentials are refused or the
store is down; ready again within seconds once the cause is gone (real SeaweedFS, real app)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from lagoon.config import Settings
from lagoon.server import create_app
from tests.conftest import S3Server
from tests.seaweedfs import SeaweedFS

pytestmark = pytest.mark.s3
RECOVERY_SECS = 15.0


def s3_settings(endpoint: str, bucket: str, prefix: str) -> Settings:
    return Settings(
        storage={
            "backend": "s3",
            "endpoint": endpoint,
            "bucket": bucket,
            "prefix": prefix,
            "region": "us-east-1",
        }
    )


@pytest.fixture
def app_client() -> Iterator[Callable[[Settings], TestClient]]:
    clients: list[TestClient] = []

    def make(settings: Settings) -> TestClient:
        c = TestClient(create_app(settings))
        c.__enter__()
        clients.append(c)
        return c

    yield make
    for c in reversed(clients):
        c.__exit__(None, None, None)


def wait_ready(c: TestClient, ready: bool, timeout: float = RECOVERY_SECS) -> httpx.Response:
    """Poll /readyz until it answers ``ready`` (200) or not (503); return that answer."""
    deadline = time.monotonic() + timeout
    while True:
        r = c.get("/readyz")
        if (r.status_code == 200) == ready or time.monotonic() > deadline:
            return r
        time.sleep(0.2)


def test_missing_bucket_is_not_ready_until_it_exists(
    s3_server: S3Server, s3_prefix: str, app_client: Callable[[Settings], TestClient]
) -> None:
    bucket = f"missing-{uuid.uuid4().hex[:10]}"
    c = app_client(s3_settings(s3_server.endpoint, bucket, s3_prefix))
    r = c.get("/readyz")
    assert r.status_code == 503, r.text
    assert "bucket does not exist" in r.json()["error"], r.text
    assert c.get("/healthz").status_code == 200  # alive, just not ready
    s3_server.server.create_bucket(bucket)
    try:
        r = wait_ready(c, True)
        assert r.status_code == 200, r.text
        assert r.json() == {"status": "ready"}
    finally:
        client = s3_server.server.client()
        for obj in client.list_objects_v2(Bucket=bucket).get("Contents", []):
            client.delete_object(Bucket=bucket, Key=obj["Key"])
        client.delete_bucket(Bucket=bucket)
        client.close()


def test_refused_credentials_are_not_ready(
    s3_server: S3Server,
    s3_prefix: str,
    app_client: Callable[[Settings], TestClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    c = app_client(s3_settings(s3_server.endpoint, s3_server.bucket, s3_prefix))
    r = c.get("/readyz")
    assert r.status_code == 503, r.text
    assert "refused the credentials" in r.json()["error"], r.text


def test_store_down_and_back(tmp_path: Path, app_client: Callable[[Settings], TestClient]) -> None:
    store = SeaweedFS(tmp_path / "weed", buckets=("ready",))
    store.start()
    try:
        c = app_client(s3_settings(store.endpoint, "ready", "p/"))
        assert wait_ready(c, True).status_code == 200
        # a namespace written before the outage is readable after it
        assert c.post("/v2/namespaces/docs", json={"upsert_rows": [{"id": 1, "t": "x"}]}).status_code == 200
        store.s3_port = store.ports["s3"]
        store.stop(grace=5.0)
        down = time.monotonic()
        r = wait_ready(c, False)
        assert r.status_code == 503, r.text
        assert time.monotonic() - down < RECOVERY_SECS
        store.start()
        back = time.monotonic()
        r = wait_ready(c, True)
        assert r.status_code == 200, r.text
        assert time.monotonic() - back < RECOVERY_SECS
        q = c.post("/v2/namespaces/docs/query", json={"rank_by": ["id", "asc"], "top_k": 5})
        assert q.status_code == 200 and [row["id"] for row in q.json()["rows"]] == [1], q.text
    finally:
        store.stop(grace=5.0)
