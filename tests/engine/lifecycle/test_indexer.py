"""The indexer: folding the WAL tail into segments, truncation, freshness rules, backpressure."""

from __future__ import annotations

import asyncio
import random

import pytest

from lagoon.engine import manifest_store
from lagoon.engine.indexer import fold_entries, index_namespace
from lagoon.errors import TooManyRequests
from lagoon.format.wal import OP_DELETE
from lagoon.index.segment.build import OP_COLUMN
from lagoon.storage.memory import MemoryStore

from .helpers import (
    KEYS,
    NS,
    JumpClock,
    Model,
    components,
    dangling,
    db_on,
    live_view,
    make_settings,
    random_writes,
)

pytestmark = pytest.mark.anyio


async def test_index_then_read_sees_the_same_live_docs() -> None:
    store = MemoryStore()
    settings = make_settings()
    db = db_on(store, settings)
    model = Model()
    rng = random.Random(1)
    comps = components("w1")
    await random_writes(db, model, rng, 20)
    assert await live_view(store) == model.docs
    out = await index_namespace(store, KEYS, settings, comps, force=True)
    head = db.handle("default", NS).state.head
    assert out.status == "committed" and out.version == 1 and out.indexed_through == out.head == head
    m = await manifest_store.read_latest(store, KEYS)
    assert m is not None and len(m.segments) == 1 and m.indexed_through == head
    assert m.schema is not None and m.schema["id_type"] == "uint"
    assert any(r.wal_through is not None for r in m.pending_delete)
    assert await live_view(store) == model.docs
    assert await dangling(store) == []

    # More writes (deletes of indexed ids included) go to a second segment that keeps tombstones.
    await random_writes(db, model, rng, 15)
    await db.write(NS, {"deletes": [next(iter(model.docs))]})
    model.deleted([next(iter(model.docs))])
    out = await index_namespace(store, KEYS, settings, comps, force=True)
    assert out.status == "committed" and out.segments == 2
    m = await manifest_store.read_latest(store, KEYS)
    assert m is not None and m.version == 2 and m.segments[0].id != m.segments[1].id
    assert await live_view(store) == model.docs
    # Nothing left: an idle pass changes nothing.
    again = await index_namespace(store, KEYS, settings, comps, force=True)
    assert again.status == "idle" and again.version == 2
    await db.close()


async def test_first_segment_drops_tombstones_later_ones_keep_them() -> None:
    store = MemoryStore()
    settings = make_settings()
    db = db_on(store, settings)
    comps = components("w1")
    await db.write(NS, {"upsert_rows": [{"id": i, "v": i} for i in range(5)]})
    await db.write(NS, {"deletes": [0, 1]})
    await index_namespace(store, KEYS, settings, comps, force=True)
    await db.write(NS, {"deletes": [2]})
    await db.write(NS, {"upsert_rows": [{"id": 9, "v": 9}]})
    await index_namespace(store, KEYS, settings, comps, force=True)
    m = await manifest_store.read_latest(store, KEYS)
    assert m is not None
    from lagoon.engine.segment_io import SegmentIO
    from lagoon.schema import Schema

    schema = Schema.from_storage(m.schema or {})
    first, second = [(await SegmentIO(store).open(KEYS, ref, schema)).table() for ref in m.segments]
    assert sorted(first.column("id").to_pylist()) == [2, 3, 4]  # no older data: deletes dropped
    assert OP_DELETE not in first.column(OP_COLUMN).to_pylist()
    ops = dict(zip(second.column("id").to_pylist(), second.column(OP_COLUMN).to_pylist(), strict=True))
    assert ops == {2: OP_DELETE, 9: 0}  # the delete must hide id 2 of the first segment
    assert await live_view(store) == {3: {"v": 3}, 4: {"v": 4}, 9: {"v": 9}}
    await db.close()


async def test_waits_for_age_or_size() -> None:
    store = MemoryStore()
    db = db_on(store, make_settings())
    await db.write(NS, {"upsert_rows": [{"id": 1, "v": 1}]})
    comps = components("w1")
    slow = make_settings(flush_interval_secs=3600)
    assert (await index_namespace(store, KEYS, slow, comps)).status == "waiting"
    small = make_settings(flush_interval_secs=3600, flush_bytes=10)
    assert (await index_namespace(store, KEYS, small, comps)).status == "committed"
    await db.close()


async def test_truncate_voids_older_segments_and_entries() -> None:
    store = MemoryStore()
    settings = make_settings()
    db = db_on(store, settings)
    comps = components("w1")
    await db.write(NS, {"upsert_rows": [{"id": i, "v": i, "tag": "old"} for i in range(6)]})
    await index_namespace(store, KEYS, settings, comps, force=True)
    await db.write(NS, {"upsert_rows": [{"id": 7, "v": 7}]})
    await db.delete_namespace(NS)
    await db.write(NS, {"upsert_rows": [{"id": 1, "v": 100}, {"id": 2, "v": 200}]})
    await db.write(NS, {"deletes": [2]})
    old = await manifest_store.read_latest(store, KEYS)
    assert old is not None
    out = await index_namespace(store, KEYS, settings, comps, force=True)
    assert out.status == "committed"
    m = await manifest_store.read_latest(store, KEYS)
    assert m is not None and len(m.segments) == 1
    pending_segments = {r.segment for r in m.pending_delete}
    assert old.segments[0].id in pending_segments
    assert m.schema is not None and "tag" not in m.schema["attributes"]  # the schema restarted
    assert await live_view(store) == {1: {"v": 100}}
    from lagoon.engine.segment_io import SegmentIO
    from lagoon.schema import Schema

    table = (await SegmentIO(store).open(KEYS, m.segments[0], Schema.from_storage(m.schema))).table()
    assert table.column("id").to_pylist() == [1]  # rows before the truncate and the tombstone are gone
    await db.close()


async def test_truncate_without_recreate_leaves_no_segment() -> None:
    store = MemoryStore()
    settings = make_settings()
    db = db_on(store, settings)
    comps = components("w1")
    await db.write(NS, {"upsert_rows": [{"id": 1, "v": 1}]})
    await index_namespace(store, KEYS, settings, comps, force=True)
    await db.delete_namespace(NS)
    await index_namespace(store, KEYS, settings, comps, force=True)
    m = await manifest_store.read_latest(store, KEYS)
    assert m is not None and m.segments == () and m.schema is None
    assert await live_view(store) == {}
    await db.close()


def test_fold_keeps_the_newest_row_per_id() -> None:
    import pyarrow as pa

    from lagoon.format.wal import OP_COLUMN as WAL_OP
    from lagoon.format.wal import WalEntry
    from lagoon.schema import Schema

    schema = Schema.from_storage(
        {"id_type": "uint", "attributes": {"v": {"type": "int", "filterable": True}}}
    )

    def entry(seq: int, ids: list[int], ops: list[int], vs: list[int | None]) -> WalEntry:
        docs = pa.table(
            {
                "id": pa.array(ids, pa.uint64()),
                WAL_OP: pa.array(ops, pa.uint8()),
                "v": pa.array(vs, pa.int64()),
            }
        )
        return WalEntry(seq=seq, nonce=b"n", created_at_ms=0, writer="t", docs=docs)

    entries = [
        entry(1, [1, 2, 3], [0, 0, 0], [1, 2, 3]),
        entry(2, [2, 4], [1, 0], [None, 4]),
        entry(3, [1], [0], [10]),
    ]
    fold = fold_entries(entries, schema, older_data=True)
    got = {r["id"]: (r["$seq"], r["$op"], r["v"]) for r in fold.table.to_pylist()}
    assert got == {1: (3, 0, 10), 2: (2, 1, None), 3: (1, 0, 3), 4: (2, 0, 4)}
    fold = fold_entries(entries, schema, older_data=False)
    assert sorted(r["id"] for r in fold.table.to_pylist()) == [1, 3, 4]


async def test_commit_is_refused_when_the_upload_got_old() -> None:
    """A pause between upload and commit longer than grace/2: abort, files left for GC."""
    store = MemoryStore()
    settings = make_settings(gc_grace_secs=10)
    db = db_on(store, settings)
    await db.write(NS, {"upsert_rows": [{"id": 1, "v": 1}]})
    clock = JumpClock()
    comps = components("w1")
    comps.clock = clock

    def pause() -> None:
        clock.jump += 6

    comps.failpoints.arm("indexer.after_upload", pause)
    out = await index_namespace(store, KEYS, settings, comps, force=True)
    assert out.status == "aborted" and "grace" in out.reason
    assert await manifest_store.read_latest(store, KEYS) is None
    await db.close()


async def test_late_commit_rehomes_the_segment() -> None:
    """A pause between the freshness check and the commit: the commit lands, then the segment is
    rebuilt under a new id and swapped in, the old one goes to pending_delete."""
    store = MemoryStore()
    settings = make_settings(gc_grace_secs=10)
    db = db_on(store, settings)
    await db.write(NS, {"upsert_rows": [{"id": 1, "v": 1}, {"id": 2, "v": 2}]})
    clock = JumpClock()
    comps = components("w1")
    comps.clock = clock

    def pause() -> None:
        clock.jump += 6

    comps.failpoints.arm("indexer.after_commit", pause)
    out = await index_namespace(store, KEYS, settings, comps, force=True)
    assert out.status == "committed" and out.version == 1
    m = await manifest_store.read_latest(store, KEYS)
    assert m is not None and m.version == 2 and len(m.segments) == 1
    assert m.segments[0].id != out.segment_id
    assert out.segment_id in {r.segment for r in m.pending_delete}
    assert await live_view(store) == {1: {"v": 1}, 2: {"v": 2}}
    assert await dangling(store) == []
    await db.close()


async def test_backpressure_429_until_indexed() -> None:
    store = MemoryStore()
    settings = make_settings(max_unindexed_bytes=2000)
    db = db_on(store, settings)
    comps = components("w1")
    body = {"upsert_rows": [{"id": i, "v": i, "tag": "x" * 50} for i in range(40)]}
    await db.write(NS, body)  # the first write is admitted: the tail was empty
    with pytest.raises(TooManyRequests) as err:
        await db.write(NS, {"upsert_rows": [{"id": 1000, "v": 1}]})
    assert err.value.status == 429 and err.value.retry_after is not None and err.value.retry_after >= 1
    out = await index_namespace(store, KEYS, settings, comps, force=True)
    assert out.status == "committed"
    # The node notices the new manifest within manifest.poll_interval_ms: then writes are admitted.
    await asyncio.sleep(settings.manifest.poll_interval_ms / 1000 + 0.01)
    await db.write(NS, {"upsert_rows": [{"id": 1000, "v": 1}]})
    assert 1000 in await live_view(store)
    # Metadata changes and namespace deletion are never blocked.
    await db.write(NS, body)
    with pytest.raises(TooManyRequests):
        await db.write(NS, {"upsert_rows": [{"id": 1001, "v": 1}]})
    await db.update_metadata(NS, {"read_only": False})
    await db.delete_namespace(NS)
    await db.close()


async def test_index_build_loses_the_race_and_aborts() -> None:
    store = MemoryStore()
    settings = make_settings()
    db = db_on(store, settings)
    await db.write(NS, {"upsert_rows": [{"id": 1, "v": 1}]})
    a, b = components("a", 1), components("b", 2)
    from lagoon.engine.indexer import indexing_state

    sa = indexing_state(KEYS, store, settings, a)
    await sa.refresh()
    assert (await index_namespace(store, KEYS, settings, b, force=True)).status == "committed"

    # ``a`` decided on a view from before b's commit: it must lose the CAS, not overwrite.
    async def no_refresh(not_before: float | None = None) -> None:
        return None

    sa.refresh = no_refresh  # type: ignore[method-assign]
    out = await index_namespace(store, KEYS, settings, a, state=sa, force=True)
    assert out.status == "aborted"
    m = await manifest_store.read_latest(store, KEYS)
    assert m is not None and m.version == 1 and m.writer == "b"
    await db.close()
