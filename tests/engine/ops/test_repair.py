"""``lagoon repair``: deliberately damaged namespaces are diagnosed; only CURRENT is ever changed.

Namespaces are built the way the engine builds them: WAL entries by ``Database.write``, manifest
versions by ``manifest_store.commit`` (segment files are stand-in bytes: repair only HEADs them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest

from lagoon.config import Settings
from lagoon.engine.components import Components
from lagoon.engine.database import Database
from lagoon.engine.indexer import index_namespace
from lagoon.engine.manifest_store import ManifestConflict, commit, next_version, read_version
from lagoon.engine.ops.repair import NamespaceReport, check_namespace, repair
from lagoon.format.keys import NamespaceKeys
from lagoon.format.manifest import PendingDelete, encode_manifest
from lagoon.storage import MemoryStore, ObjectMeta, ObjectStore
from lagoon.storage.base import PutMode
from tests.engine.ops.test_doctor import Wrapper

pytestmark = pytest.mark.anyio
COMPONENTS = Components()


async def build(
    store: ObjectStore, name: str = "docs", *, org: str = "default", versions: int = 3
) -> NamespaceKeys:
    """WAL entries 1..versions+2; manifest v1..v{versions}, v{k} folding WAL 1..k (real segments,
    built by the indexer)."""
    settings = Settings(indexer={"flush_interval_secs": 0.01})  # type: ignore[arg-type]
    db = Database(store, settings)
    keys = NamespaceKeys.of(org, name)
    for batch in range(versions + 2):
        await db.write(
            name,
            {
                "upsert_rows": [{"id": batch * 10 + i, "v": [1.0, float(i)]} for i in range(3)],
                "distance_metric": "euclidean_squared",
            },
            org=org,
        )
        if batch < versions:
            out = await index_namespace(store, keys, settings, COMPONENTS, force=True)
            assert out.status == "committed"
    return keys


async def objects(store: ObjectStore) -> dict[str, bytes]:
    return {meta.key: await store.get(meta.key) async for meta in store.list("")}


def findings(report: NamespaceReport, severity: str | None = None) -> list[str]:
    return [f"{f.check}: {f.message}" for f in report.findings if severity is None or f.severity == severity]


@pytest.fixture
async def store() -> AsyncIterator[MemoryStore]:
    yield MemoryStore()


async def test_healthy_namespace_is_ok(store: MemoryStore) -> None:
    await build(store)
    report = await check_namespace(store, "default", "docs")
    assert report.ok and findings(report, "error") == [] and findings(report, "warning") == []
    assert (report.latest_version, report.indexed_through, report.wal_head, report.segments) == (3, 3, 5, 3)
    assert findings(report, "info") == ["wal: 3 WAL entries at or below indexed_through 3 awaiting GC"]


async def test_current_ahead_blocks_committers_until_repaired(store: MemoryStore) -> None:
    keys = await build(store)
    await store.put(keys.current, b"9")
    latest = await read_version(store, keys, 3)
    with pytest.raises(ManifestConflict):  # what the indexer sees while CURRENT is ahead
        await commit(store, keys, next_version(latest, COMPONENTS))
    await store.delete(keys.manifest(4))  # undo the fork the failed commit left
    report = await check_namespace(store, "default", "docs", dry_run=True)
    assert not report.ok and "CURRENT names v9 but the latest manifest is v3" in findings(report, "error")[0]
    assert await store.get(keys.current) == b"9"  # dry run: unchanged
    report = await check_namespace(store, "default", "docs", dry_run=False)
    assert report.ok and report.findings[0].fixed and report.findings[0].fix == "CURRENT now names v3"
    assert await store.get(keys.current) == encode_manifest(await read_version(store, keys, 3))  # a copy
    await commit(store, keys, next_version(latest, COMPONENTS))  # indexing works again
    assert (await check_namespace(store, "default", "docs")).ok


@pytest.mark.parametrize(
    ("damage", "severity", "message"),
    [
        ("garbled", "error", "CURRENT is garbled"),
        ("foreign-copy", "error", "CURRENT is garbled"),
        ("missing", "warning", "CURRENT is missing (latest manifest v3)"),
        ("below-oldest", "error", "CURRENT names v1, below the oldest surviving version v2"),
        ("lagging", "info", "CURRENT lags (v2, latest v3)"),
        ("no-manifest", "error", "CURRENT names v5 but there is no manifest"),
    ],
)
async def test_bad_current_hints_are_rewritten(
    store: MemoryStore, damage: str, severity: str, message: str
) -> None:
    keys = await build(store, versions=0 if damage == "no-manifest" else 3)
    if damage == "garbled":
        await store.put(keys.current, b"v3\x00")
    elif damage == "foreign-copy":  # a valid manifest, but not the stored v3: readers would use it
        other = dataclasses.replace(await read_version(store, keys, 3), nonce="ab" * 16)
        await store.put(keys.current, encode_manifest(other))
    elif damage == "missing":
        await store.delete(keys.current)
    elif damage == "below-oldest":
        await store.delete(keys.manifest(1))
        await store.put(keys.current, b"1")
    elif damage == "lagging":
        await store.put(keys.current, b"2")
    else:
        await store.put(keys.current, b"5")
    report = await check_namespace(store, "default", "docs")
    hint = [f for f in report.findings if f.check == "current"]
    assert len(hint) == 1 and hint[0].severity == severity and message in hint[0].message, findings(report)
    assert report.ok == (severity != "error")
    fixed = await check_namespace(store, "default", "docs", dry_run=False)
    assert fixed.ok and [f.fixed for f in fixed.findings if f.check == "current"] == [True]
    expected = b"0" if damage == "no-manifest" else encode_manifest(await read_version(store, keys, 3))
    assert await store.get(keys.current) == expected
    again = await check_namespace(store, "default", "docs")
    assert [f for f in again.findings if f.check == "current"] == []


async def orphan_and_pending(store: MemoryStore, keys: NamespaceKeys) -> None:
    m = await read_version(store, keys, 3)
    first = m.segments[0].id
    pending = (PendingDelete(prefix=f"seg/{first}/", removed_at_version=4, removed_at=0),)
    await commit(store, keys, next_version(m, COMPONENTS, segments=m.segments[1:], pending_delete=pending))
    await store.put(keys.segment_file("zz-upload", "docs.bin"), b"x" * 2048)


async def test_pending_deletions_are_not_orphans(store: MemoryStore) -> None:
    keys = await build(store)
    await orphan_and_pending(store, keys)
    report = await check_namespace(store, "default", "docs")
    assert "orphans: 1 object under seg/ pending deletion (GC after the grace period)" in findings(
        report, "info"
    )
    assert "younger than indexer.gc_grace_secs" in findings(report, "warning")[0]


class CompactsDuringCheck(Wrapper):
    """A compactor commits v4 (dropping the damaged segment) while repair's first pass runs."""

    def __init__(self, inner: ObjectStore, keys: NamespaceKeys) -> None:
        super().__init__(inner)
        self.keys = keys
        self.done = False

    async def _compact(self) -> None:
        self.done = True
        m = await read_version(self.inner, self.keys, 3)
        await commit(self.inner, self.keys, next_version(m, COMPONENTS, segments=m.segments[:2]))

    async def head(self, key: str) -> ObjectMeta:
        if key.startswith(self.keys.segment_prefix) and not self.done:
            await self._compact()  # while the segments are being verified
        return await self.inner.head(key)


async def test_a_concurrent_commit_is_rechecked_not_reported(store: MemoryStore) -> None:
    keys = await build(store)
    last = (await read_version(store, keys, 3)).segments[-1].id
    await store.delete(keys.segment_file(last, "docs"))  # GC'd after a compaction dropped it
    wrapped = CompactsDuringCheck(store, keys)
    report = await check_namespace(wrapped, "default", "docs")  # type: ignore[arg-type]
    assert report.ok and report.passes == 2 and report.latest_version == 4, findings(report)


async def test_repair_walks_every_namespace_and_org(store: MemoryStore) -> None:
    await build(store, "a")
    keys_b = await build(store, "b")
    await build(store, "c", org="acme")
    await store.put(keys_b.current, b"77")
    report = await repair(store, orgs=None, dry_run=True)
    assert [(n.org, n.namespace, n.ok) for n in report.namespaces] == [
        ("acme", "c", True),
        ("default", "a", True),
        ("default", "b", False),
    ]
    assert report.fixes_possible == 1 and "would fix: rewrite CURRENT to 3" in report.render()
    fixed = await repair(store, orgs=["default"], dry_run=False)
    assert fixed.ok and fixed.fixes_applied == 1 and "FIXED" in fixed.render()
    missing = await repair(store, orgs=["default"], namespace="nope")
    assert not missing.ok and "no objects under this namespace" in missing.render()


async def test_a_fork_left_by_a_zombie_is_moved_aside(store: MemoryStore) -> None:
    """GC deleted v1 and v2 (CURRENT at v3); a zombie that still held v1 re-created v2 on top of
    it (as a committer without the base check would). v3 was built on the real v2, so the chain
    forks at v2: repair moves v2 aside, readers and committers go on from v3, nothing is lost."""
    keys = await build(store)
    v1, v3 = await read_version(store, keys, 1), await read_version(store, keys, 3)
    want = await _ids(store)
    await store.delete(keys.manifest(1))
    await store.delete(keys.manifest(2))
    await store.put(keys.manifest(2), encode_manifest(next_version(v1, COMPONENTS)), PutMode.CREATE)
    report = await check_namespace(store, "default", "docs", dry_run=True)
    assert not report.ok and any("the chain forks" in f for f in findings(report, "error"))
    report = await check_namespace(store, "default", "docs", dry_run=False)
    assert report.ok, findings(report)
    assert any("moved to the quarantine" in f.fix for f in report.findings if f.fixed)
    assert not [m async for m in store.list(keys.manifest(2))]
    again = await check_namespace(store, "default", "docs", dry_run=False)
    assert again.ok and again.rounds == 0
    assert await _ids(store) == want
    await commit(store, keys, next_version(v3, COMPONENTS))  # committers go on from v3


async def _ids(store: MemoryStore) -> list[int]:
    db = Database(store, Settings())
    try:
        res = await db.query("docs", {"rank_by": ["id", "asc"], "top_k": 100})
        return [r["id"] for r in res["rows"]]
    finally:
        await db.close()
