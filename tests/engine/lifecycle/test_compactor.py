"""The compactor: merges, shadowed rows and dead tombstones dropped, CAS on the exact base."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

import pyarrow as pa
import pytest

from lagoon.config import Settings
from lagoon.engine import manifest_store
from lagoon.engine.compactor import (
    CompactionOutcome,
    compact_namespace,
    merge_tables,
    pick_inputs,
    tombstone_bound,
)
from lagoon.engine.indexer import index_namespace
from lagoon.engine.segment_io import SegmentIO
from lagoon.format.manifest import Manifest, SegmentRef
from lagoon.schema import Schema
from lagoon.storage.faulty import FaultyStore
from lagoon.storage.memory import MemoryStore

from .helpers import KEYS, NS, Model, components, dangling, db_on, live_view, make_settings, random_writes

pytestmark = pytest.mark.anyio


def ref(i: str, level: int, lo: int, hi: int) -> SegmentRef:
    return SegmentRef(id=i, level=level, seq_from=lo, seq_to=hi, rows=1, bytes=1)


def test_pick_inputs_oldest_of_the_lowest_full_level() -> None:
    segs = [
        ref("a", 1, 1, 10),
        ref("b", 0, 11, 12),
        ref("c", 0, 13, 14),
        ref("d", 0, 15, 16),
        ref("e", 1, 17, 18),
    ]
    assert [s.id for s in pick_inputs(segs, 3)] == ["b", "c", "d"]
    assert [s.id for s in pick_inputs(segs, 2)] == ["b", "c"]
    assert pick_inputs(segs, 4) == []
    assert tombstone_bound(segs, pick_inputs(segs, 3)) == 1
    assert tombstone_bound(segs[1:4], segs[1:4]) is None


def test_merge_keeps_newest_and_drops_tombstones_below_the_bound() -> None:
    schema = Schema.from_storage(
        {"id_type": "uint", "attributes": {"v": {"type": "int", "filterable": True}}}
    )

    def t(rows: list[tuple[int, int, int, int | None]]) -> pa.Table:
        ids, seqs, ops, vs = zip(*rows, strict=True)
        return pa.table(
            {
                "id": pa.array(ids, pa.uint64()),
                "$seq": pa.array(seqs, pa.uint64()),
                "$op": pa.array(ops, pa.uint8()),
                "v": pa.array(vs, pa.int64()),
            }
        )

    old = t([(1, 5, 0, 1), (2, 5, 0, 2), (3, 6, 0, 3)])
    new = t([(1, 8, 1, None), (2, 9, 0, 20), (4, 9, 1, None)])
    got = {r["id"]: (r["$seq"], r["$op"], r["v"]) for r in merge_tables([new, old], schema, None).to_pylist()}
    assert got == {2: (9, 0, 20), 3: (6, 0, 3)}
    # Every other segment starts at seq 9 or later: the tombstone at 8 can hide nothing there
    # (dropped), the one at 9 might (kept).
    kept = {r["id"]: r["$op"] for r in merge_tables([old, new], schema, 9).to_pylist()}
    assert kept == {2: 0, 3: 0, 4: 1}


async def _indexed_segments(n: int, fanin: int = 3) -> tuple[MemoryStore, Model]:
    store = MemoryStore()
    settings = make_settings(compaction_fanin=fanin)
    db = db_on(store, settings)
    model = Model()
    rng = random.Random(7)
    comps = components("w1")
    for _ in range(n):
        await random_writes(db, model, rng, 6, id_range=20)
        await index_namespace(store, KEYS, settings, comps, force=True)
    await db.close()
    return store, model


async def test_compaction_merges_a_full_level() -> None:
    store, model = await _indexed_segments(3)
    settings = make_settings(compaction_fanin=3)
    before = await manifest_store.read_latest(store, KEYS)
    assert before is not None and len(before.segments) == 3
    out = await compact_namespace(store, KEYS, settings, components("c"))
    assert out.status == "committed" and out.level == 0 and len(out.inputs) == 3
    m = await manifest_store.read_latest(store, KEYS)
    assert m is not None and m.version == before.version + 1
    assert [s.level for s in m.segments] == [1]
    assert {r.segment for r in m.pending_delete} >= set(out.inputs)
    assert await live_view(store) == model.docs
    # All inputs merged, none older: the output has no tombstones and one row per live id.
    schema = Schema.from_storage(m.schema or {})
    table = (await SegmentIO(store).open(KEYS, m.segments[0], schema)).table()
    assert set(table.column("$op").to_pylist()) <= {0}
    assert sorted(table.column("id").to_pylist()) == sorted(model.docs)
    assert (await compact_namespace(store, KEYS, settings, components("c"))).status == "idle"
    assert await dangling(store) == []


async def test_compaction_keeps_tombstones_that_still_shadow_older_segments() -> None:
    store = MemoryStore()
    settings = make_settings(compaction_fanin=2)
    db = db_on(store, settings)
    comps = components("w1")
    await db.write(NS, {"upsert_rows": [{"id": i, "v": i} for i in range(4)]})
    await index_namespace(store, KEYS, settings, comps, force=True)  # level 0: A
    await db.write(NS, {"upsert_rows": [{"id": 9, "v": 9}]})
    await index_namespace(store, KEYS, settings, comps, force=True)  # level 0: B
    assert (await compact_namespace(store, KEYS, settings, comps)).status == "committed"  # A+B -> L1
    await db.write(NS, {"deletes": [0]})
    await index_namespace(store, KEYS, settings, comps, force=True)
    await db.write(NS, {"deletes": [1]})
    await index_namespace(store, KEYS, settings, comps, force=True)
    out = await compact_namespace(store, KEYS, settings, comps)  # the two newest, above the L1 one
    assert out.status == "committed" and out.level == 0
    m = await manifest_store.read_latest(store, KEYS)
    assert m is not None and sorted(s.level for s in m.segments) == [1, 1]
    newest = max(m.segments, key=lambda s: s.seq_from)
    table = (await SegmentIO(store).open(KEYS, newest, Schema.from_storage(m.schema or {}))).table()
    assert sorted(table.column("id").to_pylist()) == [0, 1] and set(table.column("$op").to_pylist()) == {1}
    assert await live_view(store) == {2: {"v": 2}, 3: {"v": 3}, 9: {"v": 9}}
    # Level 1 is full now: merging both (the oldest included) drops the tombstones.
    out = await compact_namespace(store, KEYS, settings, comps)
    assert out.status == "committed" and out.level == 1
    m = await manifest_store.read_latest(store, KEYS)
    assert m is not None and len(m.segments) == 1
    table = (await SegmentIO(store).open(KEYS, m.segments[0], Schema.from_storage(m.schema or {}))).table()
    assert sorted(table.column("id").to_pylist()) == [2, 3, 9]
    assert await live_view(store) == {2: {"v": 2}, 3: {"v": 3}, 9: {"v": 9}}
    await db.close()


@dataclass
class Parked:
    """A compaction of three level-0 segments, paused just before its manifest put."""

    inner: MemoryStore  # the bucket, for the other actors
    model: Model
    settings: Settings
    base: Manifest  # the version the compaction started from
    release: asyncio.Event  # set: the put goes on
    task: asyncio.Task[CompactionOutcome]


async def _parked_compaction(node: str) -> Parked:
    inner, model = await _indexed_segments(3)
    store = FaultyStore(inner)
    settings = make_settings(compaction_fanin=3)
    base = await manifest_store.read_latest(inner, KEYS)
    assert base is not None
    reached, release = asyncio.Event(), asyncio.Event()

    async def hook(op: str, key: str) -> None:
        reached.set()
        await release.wait()

    store.arm("put", hook, key=KEYS.manifest(base.version + 1))
    task = asyncio.create_task(compact_namespace(store, KEYS, settings, components(node)))
    await reached.wait()
    return Parked(inner, model, settings, base, release, task)


async def test_compaction_aborts_when_its_inputs_were_compacted_by_another() -> None:
    zombie = await _parked_compaction("zombie")
    winner = await compact_namespace(zombie.inner, KEYS, zombie.settings, components("winner"))
    assert winner.status == "committed"
    zombie.release.set()
    out = await zombie.task
    assert out.status == "aborted" and out.reason == "inputs changed"
    m = await manifest_store.read_latest(zombie.inner, KEYS)
    assert m is not None and m.writer == "winner" and m.version == zombie.base.version + 1
    assert await live_view(zombie.inner) == zombie.model.docs


async def test_compaction_reapplies_on_a_new_base_when_inputs_are_unchanged() -> None:
    parked = await _parked_compaction("c")
    inner, model, settings = parked.inner, parked.model, parked.settings
    db = db_on(inner, settings)
    await db.write(NS, model.upsert_body([500], 1))
    model.upserted([500], 1)
    assert (await index_namespace(inner, KEYS, settings, components("i"), force=True)).status == "committed"
    parked.release.set()
    out = await parked.task
    assert out.status == "committed" and out.version == parked.base.version + 2
    m = await manifest_store.read_latest(inner, KEYS)
    assert m is not None and sorted(s.level for s in m.segments) == [0, 1]
    assert await live_view(inner) == model.docs
    await db.close()
