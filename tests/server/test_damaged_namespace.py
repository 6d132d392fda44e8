"""One namespace with data nobody can read does not take its org down.

- a WAL entry written wrongly (an older build, or damaged in the bucket): the namespace keeps
  working around it, and admin DELETE removes it;
- a manifest that cannot be read: its reads answer 500 naming `lagoon repair`; the org's listing
  names it, flagged ``"damaged": true`` (from the catalog once this node has met the damage; from
  the folders at once), and every other namespace keeps working.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from lagoon.config import Settings
from lagoon.engine.scheduler import IndexerLoop
from lagoon.server import create_app
from lagoon.storage.factory import open_store


def settings(root: Path) -> Settings:
    return Settings(
        storage={"backend": "fs", "root": str(root)},  # type: ignore[arg-type]
        server={"embedded_indexer": False},  # type: ignore[arg-type]
    )


def seed(root: Path, *, index: bool) -> None:
    with TestClient(create_app(settings(root))) as c:
        for ns in ("good", "bad"):
            assert (
                c.post(f"/v2/namespaces/{ns}", json={"upsert_rows": [{"id": 1, "x": 1}]}).status_code == 200
            )
    if index:

        async def run() -> None:
            store = open_store(settings(root).storage)
            try:
                await IndexerLoop(store, settings(root)).run_once(force=True)
            finally:
                await store.close()

        asyncio.run(run())


def listing(c: TestClient) -> list[dict[str, object]]:
    r = c.get("/v1/namespaces")
    assert r.status_code == 200, r.text
    return list(r.json()["namespaces"])


def test_a_wrongly_written_wal_entry_leaves_the_namespace_deletable(tmp_path: Path) -> None:
    seed(tmp_path, index=False)
    (tmp_path / "default/bad/wal/00000000000000000002.wal").write_bytes(b"LGNW not a wal entry" * 8)
    with TestClient(create_app(settings(tmp_path))) as c:
        r = c.post("/v2/namespaces/bad/query", json={"rank_by": ["id", "asc"]})
        assert r.status_code == 200, r.text
        [damage] = r.json()["performance"]["damage"]
        assert damage.startswith("wal/2: ") and "default/bad" not in r.text  # no object key in a body
        assert listing(c) == [{"id": "bad"}, {"id": "good"}]
        assert c.delete("/v2/namespaces/bad").status_code == 200
        assert listing(c) == [{"id": "good"}]
        assert c.get("/v1/namespaces/bad/metadata").status_code == 404


@pytest.mark.parametrize("catalog", [True, False], ids=["catalog", "folders"])
def test_listing_flags_an_unreadable_namespace_and_the_rest_works(tmp_path: Path, catalog: bool) -> None:
    seed(tmp_path, index=True)
    for p in (tmp_path / "default/bad/manifest").iterdir():
        p.write_bytes(b"not a manifest")
    if not catalog:  # an org whose catalog is not complete is listed from its folders
        shutil.rmtree(tmp_path / "_lagoon/catalog")
    with TestClient(create_app(settings(tmp_path))) as c:
        if catalog:  # the catalog lists names without reading them
            assert listing(c) == [{"id": "bad"}, {"id": "good"}]
        else:
            assert listing(c) == [{"id": "bad", "damaged": True}, {"id": "good"}]
        r = c.post("/v2/namespaces/bad/query", json={"rank_by": ["id", "asc"]})
        assert r.status_code == 500 and "lagoon repair" in r.json()["error"], r.text
        assert "default/bad" not in r.text  # the object is named in the log, not to the client
        assert listing(c) == [{"id": "bad", "damaged": True}, {"id": "good"}]
        r = c.post("/v2/namespaces/good/query", json={"rank_by": ["id", "asc"]})
        assert r.status_code == 200 and r.json()["rows"] == [{"id": 1}]
        assert c.post("/v2/namespaces/good", json={"upsert_rows": [{"id": 2}]}).status_code == 200
        assert c.post("/v2/namespaces/fresh", json={"upsert_rows": [{"id": 2}]}).status_code == 200
        assert [n["id"] for n in listing(c)] == ["bad", "fresh", "good"]
