"""Manifest commits never build on a missing base version, and a lost race stays a lost race.

A base that is missing while nothing newer exists (the version deleted by hand or lost, and a node
built on CURRENT's copy of it) is a broken chain: the commit is refused with ``DataCorruption``
naming it and ``lagoon repair``, and writes nothing. A base that GC deleted because the chain moved
on (a zombie resumed late) is a lost race: ``ManifestConflict``, so the caller aborts.
"""

from __future__ import annotations

import pytest

from lagoon.engine.manifest_store import ManifestConflict, advance_hint, commit, next_version, read_version
from lagoon.engine.ops.repair import check_namespace
from lagoon.errors import DataCorruption
from lagoon.storage import MemoryStore
from tests.engine.ops.test_repair import COMPONENTS, build

pytestmark = pytest.mark.anyio


async def _manifest_keys(store: MemoryStore, prefix: str) -> list[str]:
    return sorted([m.key async for m in store.list(prefix)])


async def test_no_commit_on_top_of_a_broken_chain() -> None:
    store = MemoryStore()
    keys = await build(store)
    latest = await read_version(store, keys, 3)
    await store.delete(keys.manifest(3))  # CURRENT still holds its copy: a node may build on it
    before = await _manifest_keys(store, keys.manifest_prefix)
    with pytest.raises(DataCorruption, match="run `lagoon repair`") as err:
        await commit(store, keys, next_version(latest, COMPONENTS))
    assert keys.manifest(3) in str(err.value)
    assert await _manifest_keys(store, keys.manifest_prefix) == before  # nothing written
    report = await check_namespace(store, "default", "docs", dry_run=False)
    assert report.ok and any("restored from CURRENT's copy" in f.fix for f in report.findings if f.fixed)
    await commit(store, keys, next_version(latest, COMPONENTS))  # the chain is whole again


@pytest.mark.parametrize("deleted", [(1,), (1, 2)])
async def test_a_base_gc_deleted_is_a_lost_race(deleted: tuple[int, ...]) -> None:
    """GC deletes versions below CURRENT, oldest first: a committer still on one of them lost
    the race (also when the version after its base is gone too), whatever CURRENT holds."""
    store = MemoryStore()
    keys = await build(store)
    zombie_base = await read_version(store, keys, 1)
    await advance_hint(store, keys, await read_version(store, keys, 3))
    for v in deleted:
        await store.delete(keys.manifest(v))
    before = await _manifest_keys(store, keys.manifest_prefix)
    with pytest.raises(ManifestConflict):
        await commit(store, keys, next_version(zombie_base, COMPONENTS))
    assert await _manifest_keys(store, keys.manifest_prefix) == before
