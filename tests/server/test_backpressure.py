"""A namespace whose unindexed WAL tail exceeds ``indexer.max_unindexed_bytes`` refuses writes
over HTTP with a clear 429 and Retry-After, writes nothing, and admits writes again once an
indexer (here another process's) has caught up."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from lagoon.config import Settings
from lagoon.engine.components import Components
from lagoon.engine.indexer import index_namespace
from lagoon.format.keys import NamespaceKeys
from lagoon.storage.fs import FsStore

from .conftest import LiveServer

LIMIT = 2000


def _index(root: Path) -> str:
    async def run() -> str:
        settings = Settings(storage={"backend": "fs", "root": str(root)})  # type: ignore[arg-type]
        store = FsStore(root)
        out = await index_namespace(
            store, NamespaceKeys.of("default", "bp"), settings, Components(), force=True
        )
        await store.close()
        return out.status

    return asyncio.run(run())


def test_a_namespace_far_behind_indexing_gets_429_with_retry_after(tmp_path: Path) -> None:
    server = LiveServer(
        tmp_path / "data",
        tmp_path / "server.log",
        LAGOON_SERVER__PROCESSES="1",
        LAGOON_INDEXER__MAX_UNINDEXED_BYTES=str(LIMIT),
        LAGOON_INDEXER__POLL_INTERVAL_SECS="2",
        LAGOON_MANIFEST__POLL_INTERVAL_MS="50",
    )
    url = server.url + "/v2/namespaces/bp"
    try:
        big = {"upsert_rows": [{"id": i, "tag": "x" * 50} for i in range(40)]}
        r = httpx.post(url, json=big, timeout=30)  # admitted: the tail was empty
        assert r.status_code == 200, r.text
        version = r.json()["version"]
        r = httpx.post(url, json={"upsert_rows": [{"id": 1000, "tag": "late"}]}, timeout=30)
        assert r.status_code == 429, r.text
        assert r.headers["retry-after"] == "2"  # (indexer.poll_interval_secs, whole seconds)
        assert float(r.headers["retry-after-ms"]) == 2000
        message = r.json()["error"]
        assert "behind indexing" in message and f"limit {LIMIT}" in message, message
        q = {"rank_by": ["id", "asc"], "top_k": 1000}
        got = httpx.post(url + "/query", json=q, timeout=30).json()
        assert len(got["rows"]) == 40  # the refused write wrote nothing
        meta = httpx.get(server.url + "/v1/namespaces/bp/metadata", timeout=30).json()
        assert meta["version"] == version and meta["index"]["status"] == "updating"

        assert _index(tmp_path / "data") == "committed"  # a worker catches up
        deadline = time.monotonic() + 30
        while (
            r := httpx.post(url, json={"upsert_rows": [{"id": 1000, "tag": "late"}]}, timeout=30)
        ).status_code == 429:
            assert time.monotonic() < deadline, r.text
            time.sleep(0.1)
        assert r.status_code == 200, r.text
        got = httpx.post(url + "/query", json=q, timeout=30).json()
        assert len(got["rows"]) == 41
    finally:
        server.stop()
