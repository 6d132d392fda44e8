"""One namespace with data nobody can read does not take its org down.

- a WAL entry written wrongly (an older build, or damaged in the bucket): the namespace keeps
  working around it, and admin DELETE removes it;
- a manifest that cannot be read: its reads answer 409 naming `lagoon repair` (never retried by
  the SDK); the org's listing names it, flagged ``"damaged": true`` (from the catalog once this node
  has met the damage; from the folders at once), and every other namespace keeps working;
- every route over such a namespace, or one with a corrupt segment, answers something other than
  a 5xx; admin DELETE of an unreadable namespace deletes it without `lagoon repair` first (its
  catalog entry goes at once; GC then removes its segments and WAL entries, damaged ones included).
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from lagoon.config import IndexerSettings, Settings
from lagoon.engine.components import Components
from lagoon.engine.gc import collect_garbage
from lagoon.engine.scheduler import IndexerLoop
from lagoon.format.keys import NamespaceKeys
from lagoon.server import create_app
from lagoon.storage.factory import open_store
from tests.engine.damage import flipped


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
        assert r.status_code == 409 and "lagoon repair" in r.json()["error"], r.text
        assert r.headers["x-should-retry"] == "false" and "retry-after" not in r.headers
        assert "default/bad" not in r.text  # the object is named in the log, not to the client
        assert listing(c) == [{"id": "bad", "damaged": True}, {"id": "good"}]
        r = c.post("/v2/namespaces/good/query", json={"rank_by": ["id", "asc"]})
        assert r.status_code == 200 and r.json()["rows"] == [{"id": 1}]
        assert c.post("/v2/namespaces/good", json={"upsert_rows": [{"id": 2}]}).status_code == 200
        assert c.post("/v2/namespaces/fresh", json={"upsert_rows": [{"id": 2}]}).status_code == 200
        assert [n["id"] for n in listing(c)] == ["bad", "fresh", "good"]


NOT_COMPARED = (".lagoon-locks/", "_lagoon/queue/")
"""The fs store's own lock files, and the indexing queue: an accepted write's notification
reaches it in the background, maybe while the next request runs."""


def bucket(root: Path) -> dict[str, bytes]:
    """The bucket's objects, but for NOT_COMPARED and the fs store's in-flight temp files."""
    out = {}
    for p in root.rglob("*"):
        key = str(p.relative_to(root))
        if p.is_file() and not key.startswith(NOT_COMPARED) and not p.name.startswith(".tmp-"):
            out[key] = p.read_bytes()
    return out


# Every route that names a namespace, with a body it accepts for a healthy one.
ROUTES: list[tuple[str, str, object]] = [
    ("POST", "/v2/namespaces/bad/query", {"rank_by": ["id", "asc"]}),
    ("POST", "/v2/namespaces/bad/explain_query", {"rank_by": ["id", "asc"]}),
    ("POST", "/v2/namespaces/bad", {"upsert_rows": [{"id": 3}]}),
    ("POST", "/v2/namespaces/bad", {"patch_rows": [{"id": 1, "x": 3}]}),
    ("POST", "/v2/namespaces/bad", {"delete_by_filter": ["id", "Eq", 1]}),
    ("POST", "/v2/namespaces/bad", {"upsert_rows": [{"id": 1}], "upsert_condition": ["x", "Eq", 1]}),
    ("POST", "/v2/namespaces/bad", {"copy_from_namespace": "good"}),
    ("POST", "/v2/namespaces/copy", {"copy_from_namespace": "bad"}),
    ("POST", "/v2/namespaces/fork", {"branch_from_namespace": "bad"}),
    ("POST", "/v2/namespaces/bad/branch", {"source_namespace": "good"}),
    ("POST", "/v2/namespaces/fork2/branch", {"source_namespace": "bad"}),
    ("POST", "/v2/namespaces/acopy/async", {"copy_from_namespace": "bad"}),
    ("GET", "/v2/namespaces/bad/metadata", None),
    ("GET", "/v1/namespaces/bad/metadata", None),
    ("PATCH", "/v1/namespaces/bad/metadata", {"read_only": False}),
    ("GET", "/v1/namespaces/bad/schema", None),
    ("POST", "/v1/namespaces/bad/schema", {"y": "string"}),
    ("GET", "/v1/namespaces/bad/hint_cache_warm", None),
    ("POST", "/v1/namespaces/bad/_debug/recall", {"num": 1}),
    ("DELETE", "/v2/namespaces/bad", None),
]


def garble_manifests(root: Path) -> None:
    for p in (root / "default/bad/manifest").iterdir():
        p.write_bytes(b"not a manifest")


def flip_segments(root: Path) -> None:
    for p in (root / "default/bad/seg").rglob("*"):
        if p.is_file():
            flipped(p)


@pytest.mark.parametrize("damage", [garble_manifests, flip_segments], ids=["manifest", "segment"])
def test_no_route_answers_5xx_over_a_damaged_namespace(tmp_path: Path, damage: object) -> None:
    seed(tmp_path, index=True)
    damage(tmp_path)  # type: ignore[operator]
    with TestClient(create_app(settings(tmp_path))) as c:
        for method, path, body in ROUTES:
            before = bucket(tmp_path)
            r = c.request(method, path, json=body)
            assert r.status_code < 500, (method, path, r.status_code, r.text)
            if r.status_code >= 400:  # refused: not one object written (a branch, a settings entry)
                assert bucket(tmp_path) == before, (method, path, r.text)
            if r.status_code == 409:
                assert "lagoon repair" in r.json()["error"] and "default/bad" not in r.text, r.text
        assert c.post("/v2/namespaces/good/query", json={"rank_by": ["id", "asc"]}).status_code == 200


@pytest.mark.parametrize("how", ["flipped", "missing"])
def test_a_damaged_segment_file_is_named_by_its_file_not_a_redacted_key(tmp_path: Path, how: str) -> None:
    """The 409 says which file of which segment is damaged, in words a user can act on: no
    ``<redacted>`` where the object key was; the key itself is in the request's log line."""
    seed(tmp_path, index=True)
    (folder,) = (tmp_path / "default/bad/seg").iterdir()
    if how == "flipped":
        flipped(folder / "docs")
    else:
        (folder / "docs").unlink()
    with TestClient(create_app(settings(tmp_path))) as c:
        r = c.post("/v2/namespaces/bad/query", json={"rank_by": ["id", "asc"]})
    assert r.status_code == 409, r.text
    message = r.json()["error"]
    assert f"segment {folder.name} (manifest v1)" in message and "docs" in message, message
    assert "<redacted>" not in message and "default/bad" not in message, message
    if how == "missing":
        assert f"a file of segment {folder.name} (manifest v1) is missing: docs;" in message, message
    else:
        assert f"segment {folder.name} (manifest v1) is corrupt: docs: " in message, message


@pytest.mark.parametrize("damage", [garble_manifests, flip_segments], ids=["manifest", "segment"])
def test_a_damaged_namespace_is_deleted_without_repair_first_and_gc_removes_its_data(
    tmp_path: Path, damage: object
) -> None:
    seed(tmp_path, index=True)
    damage(tmp_path)  # type: ignore[operator]
    with TestClient(create_app(settings(tmp_path))) as c:
        assert c.post("/v2/namespaces/bad/query", json={"rank_by": ["id", "asc"]}).status_code == 409
        r = c.delete("/v2/namespaces/bad")
        assert r.status_code == 200 and r.json() == {"status": "OK"}, r.text
        assert c.post("/v2/namespaces/bad/query", json={"rank_by": ["id", "asc"]}).status_code == 404
        assert c.get("/v1/namespaces/bad/metadata").status_code == 404
        assert listing(c) == [{"id": "good"}]
        assert c.post("/v2/namespaces/good/query", json={"rank_by": ["id", "asc"]}).json()["rows"] == [
            {"id": 1}
        ]
    assert not (tmp_path / "_lagoon/catalog/default/ns/bad").exists()  # the catalog entry is gone

    gc_now = settings(tmp_path).model_copy(update={"indexer": IndexerSettings(gc_grace_secs=0.0)})

    async def clean() -> None:  # a worker folds the delete; GC (grace 0 here) removes what it held
        store = open_store(gc_now.storage)
        try:
            await IndexerLoop(store, gc_now).run_once(force=True)
            for _ in range(3):
                await collect_garbage(store, NamespaceKeys.of("default", "bad"), gc_now, Components())
        finally:
            await store.close()

    asyncio.run(clean())
    left = sorted(k.removeprefix("default/bad/") for k in bucket(tmp_path) if k.startswith("default/bad/"))
    assert left and all(k.startswith("manifest/") for k in left), left  # no segment, no WAL entry
    with TestClient(create_app(settings(tmp_path))) as c:  # the name can be used again
        assert c.post("/v2/namespaces/bad", json={"upsert_rows": [{"id": 7}]}).status_code == 200
        assert c.post("/v2/namespaces/bad/query", json={"rank_by": ["id", "asc"]}).json()["rows"] == [
            {"id": 7}
        ]
        assert listing(c) == [{"id": "bad"}, {"id": "good"}]
