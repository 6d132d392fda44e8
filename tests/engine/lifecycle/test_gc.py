"""Garbage collection: two-phase deletes after grace (store clock), orphans, old manifest
versions, and zombies (paused workers) that must delete nothing live and commit nothing stale."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from lagoon.engine import manifest_store
from lagoon.engine.compactor import compact_namespace
from lagoon.engine.gc import collect_garbage
from lagoon.engine.indexer import index_namespace, indexing_state
from lagoon.engine.segment_io import SegmentIO
from lagoon.format.keys import parse_manifest_version
from lagoon.index.segment.build import build_segment, new_segment_id
from lagoon.schema import Schema
from lagoon.storage.faulty import FaultyStore
from lagoon.storage.memory import MemoryStore

from .helpers import (
    KEYS,
    ManualStoreClock,
    Model,
    components,
    dangling,
    db_on,
    live_view,
    make_settings,
    random_writes,
    segment_ids_in_store,
    wal_seqs,
)

pytestmark = pytest.mark.anyio
GRACE = 10.0


async def _setup(rounds: int = 3, fanin: int = 3) -> tuple[MemoryStore, ManualStoreClock, Model, Any]:
    clock = ManualStoreClock()
    store = MemoryStore(clock=clock)
    settings = make_settings(gc_grace_secs=GRACE, compaction_fanin=fanin)
    db = db_on(store, settings)
    model = Model()
    rng = random.Random(3)
    for _ in range(rounds):
        await random_writes(db, model, rng, 5, id_range=15)
        await index_namespace(store, KEYS, settings, components("i"), force=True)
        clock.advance(1)
    await db.close()
    return store, clock, model, settings


async def _versions(store: MemoryStore) -> list[int]:
    versions = [parse_manifest_version(meta.key) async for meta in store.list(KEYS.manifest_prefix)]
    return sorted(v for v in versions if v is not None)


async def test_pending_objects_wait_for_grace_and_retained_versions() -> None:
    store, clock, model, settings = await _setup()
    comps = components("gc")
    assert (await compact_namespace(store, KEYS, settings, comps)).status == "committed"
    m = await manifest_store.read_latest(store, KEYS)
    assert m is not None
    inputs = {r.segment for r in m.pending_delete if r.segment is not None}
    assert len(inputs) == 3
    out = await collect_garbage(store, KEYS, settings, comps)
    assert out.deleted == 0 and out.more_later  # grace has not passed
    clock.advance(GRACE + 1)
    out = await collect_garbage(store, KEYS, settings, comps)  # older versions (retained) list them
    assert inputs <= await segment_ids_in_store(store)
    assert await wal_seqs(store) == []  # but the folded WAL entries are gone
    assert out.version is not None
    out = await collect_garbage(store, KEYS, settings, comps, retain_versions=1)
    assert out.deleted > 0
    assert await segment_ids_in_store(store) == {s.id for s in m.segments}
    latest = await manifest_store.read_latest(store, KEYS)
    assert latest is not None and latest.pending_delete == ()
    # Versions superseded less than a grace period ago stay (the GC's own commits among them).
    versions = await _versions(store)
    assert versions[-1] == latest.version and versions[0] >= latest.version - 2
    assert await live_view(store) == model.docs
    assert await dangling(store) == []
    # A fresh reader (no hint knowledge) still finds the latest version.
    state = indexing_state(KEYS, store, settings, components("r"))
    await state.refresh()
    assert state.manifest is not None and state.manifest.version == latest.version


async def test_orphans_are_deleted_only_after_grace() -> None:
    store, clock, model, settings = await _setup(rounds=1)
    m = await manifest_store.read_latest(store, KEYS)
    assert m is not None
    schema = Schema.from_storage(m.schema or {})
    seg_io = SegmentIO(store)
    rows = (await seg_io.open(KEYS, m.segments[0], schema)).table()
    orphan = build_segment(
        rows, schema, segment_id=new_segment_id(0, random.Random(9)), level=0, seq_from=1, seq_to=1
    )
    await seg_io.upload(KEYS, orphan)  # a worker that lost the race (or crashed) left this
    comps = components("gc")
    out = await collect_garbage(store, KEYS, settings, comps)
    assert orphan.ref.id in await segment_ids_in_store(store) and out.more_later
    clock.advance(GRACE + 1)
    await collect_garbage(store, KEYS, settings, comps)
    assert orphan.ref.id not in await segment_ids_in_store(store)
    assert m.segments[0].id in await segment_ids_in_store(store)
    assert await live_view(store) == model.docs


async def test_old_manifest_versions_are_deleted_oldest_first_and_current_advanced() -> None:
    store, clock, model, settings = await _setup(rounds=6, fanin=100)
    comps = components("gc")
    assert await _versions(store) == [1, 2, 3, 4, 5, 6]
    await store.put(KEYS.current, b"2")  # a lagging hint
    clock.advance(GRACE + 1)
    await collect_garbage(store, KEYS, settings, comps, retain_versions=3)
    versions = await _versions(store)
    assert versions[0] >= 4 and versions == list(range(versions[0], versions[-1] + 1))
    assert manifest_store.parse_hint(await store.get(KEYS.current))[0] >= 6
    assert await live_view(store) == model.docs
    assert await dangling(store) == []


async def test_stale_reader_view_restarts_from_current() -> None:
    """A node that last looked at v1 (long ago) must not stop probing at a deleted version."""
    store, clock, model, settings = await _setup(rounds=1, fanin=100)
    reader = indexing_state(KEYS, store, settings, components("r"))
    await reader.refresh()
    assert reader.manifest is not None and reader.manifest.version == 1
    db = db_on(store, settings)
    rng = random.Random(5)
    for _ in range(5):
        await random_writes(db, model, rng, 3, id_range=15)
        await index_namespace(store, KEYS, settings, components("i"), force=True)
    clock.advance(GRACE + 1)
    await collect_garbage(store, KEYS, settings, components("gc"), retain_versions=2)
    assert 2 not in await _versions(store)
    reader._last_manifest_check -= GRACE  # the view is older than grace/2
    await reader.refresh()
    latest = await manifest_store.read_latest(store, KEYS)
    assert latest is not None and reader.manifest is not None and reader.manifest.version == latest.version
    fresh = indexing_state(KEYS, store, settings, components("f"))
    await fresh.refresh()
    assert reader.head == fresh.head and reader.indexed_through == fresh.indexed_through
    await db.close()


async def test_zombie_compactor_recreating_a_deleted_version_is_rejected() -> None:
    """The zombie's base version v; while it is paused the others commit many versions and GC
    deletes v+1. Its create-if-absent of v+1 then *succeeds* — the lineage check must reject it,
    and the compaction must abort without touching CURRENT or the live data."""
    inner, clock, model, settings = await _setup()
    store = FaultyStore(inner)
    base = await manifest_store.read_latest(inner, KEYS)
    assert base is not None
    reached, release = asyncio.Event(), asyncio.Event()

    async def park(op: str, key: str) -> None:
        reached.set()
        await release.wait()

    store.arm("put", park, key=KEYS.manifest(base.version + 1))
    zombie = asyncio.create_task(compact_namespace(store, KEYS, settings, components("zombie")))
    await reached.wait()
    # The others: compact the same inputs, write and index more, let grace pass, collect.
    assert (await compact_namespace(inner, KEYS, settings, components("c"))).status == "committed"
    db = db_on(inner, settings)
    rng = random.Random(11)
    for _ in range(4):
        await random_writes(db, model, rng, 3, id_range=15)
        await index_namespace(inner, KEYS, settings, components("i"), force=True)
    clock.advance(GRACE + 1)
    await collect_garbage(inner, KEYS, settings, components("gc"), retain_versions=2)
    await collect_garbage(inner, KEYS, settings, components("gc"), retain_versions=2)
    assert base.version + 1 not in await _versions(inner)
    latest = await manifest_store.read_latest(inner, KEYS)
    assert latest is not None
    release.set()
    out = await zombie
    assert out.status == "aborted"
    version, copy = manifest_store.parse_hint(await inner.get(KEYS.current))
    assert version == latest.version and copy == latest
    again = await manifest_store.read_latest(inner, KEYS)
    assert again is not None and again.version == latest.version and again.nonce == latest.nonce
    assert await live_view(inner) == model.docs
    assert await dangling(inner) == []
    # The fork it left is garbage like any old version.
    clock.advance(GRACE + 1)
    await collect_garbage(inner, KEYS, settings, components("gc"), retain_versions=2)
    assert base.version + 1 not in await _versions(inner)
    await db.close()


@pytest.mark.parametrize("park_op", ["list", "delete", "get"])
async def test_zombie_gc_deletes_nothing_live(park_op: str) -> None:
    """A GC paused at a list, a delete or a manifest read, while the others index, compact and
    collect for longer than the grace period, then resumed: nothing live may go missing."""
    inner, clock, model, settings = await _setup(rounds=3)
    m = await manifest_store.read_latest(inner, KEYS)
    assert m is not None
    schema = Schema.from_storage(m.schema or {})
    orphan_rows = (await SegmentIO(inner).open(KEYS, m.segments[0], schema)).table()
    orphan = build_segment(
        orphan_rows, schema, segment_id=new_segment_id(1, random.Random(1)), level=0, seq_from=1, seq_to=1
    )
    await SegmentIO(inner).upload(KEYS, orphan)
    assert (await compact_namespace(inner, KEYS, settings, components("c"))).status == "committed"
    clock.advance(GRACE + 1)
    store = FaultyStore(inner)
    reached, release = asyncio.Event(), asyncio.Event()

    async def park(op: str, key: str) -> None:
        reached.set()
        await release.wait()

    if park_op == "list":
        store.arm("list", park, key=KEYS.segment_prefix)
    elif park_op == "delete":
        store.arm("delete", park)
    else:
        store.arm("get", park, key=lambda k: k.startswith(KEYS.manifest_prefix), times=1)
    zombie = asyncio.create_task(
        collect_garbage(store, KEYS, settings, components("zombie"), retain_versions=1)
    )
    await asyncio.wait_for(reached.wait(), 5)
    db = db_on(inner, settings)
    rng = random.Random(13)
    for _ in range(6):
        await random_writes(db, model, rng, 3, id_range=15)
        await index_namespace(inner, KEYS, settings, components("i"), force=True)
        await compact_namespace(inner, KEYS, settings, components("c"))
        clock.advance(GRACE / 3)
        await collect_garbage(inner, KEYS, settings, components("gc"), retain_versions=1)
    release.set()
    await zombie
    assert await dangling(inner) == []
    assert await live_view(inner) == model.docs
    clock.advance(GRACE + 1)
    for _ in range(2):
        await collect_garbage(inner, KEYS, settings, components("gc"), retain_versions=1)
    latest = await manifest_store.read_latest(inner, KEYS)
    assert latest is not None and latest.pending_delete == ()
    assert await segment_ids_in_store(inner) == {s.id for s in latest.segments}  # no orphans left
    await db.close()
