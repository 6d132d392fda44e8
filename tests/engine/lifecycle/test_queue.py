"""Work discovery: writers enqueue after commits, workers dequeue idle namespaces, no commit lost."""

from __future__ import annotations

import asyncio

import pytest

from lagoon.engine.indexer import indexing_state
from lagoon.engine.queue import Enqueuer, IndexingQueue, decode_queue, encode_queue
from lagoon.engine.scheduler import IndexerLoop
from lagoon.format.keys import NamespaceKeys, queue_key
from lagoon.storage.instrumented import InstrumentedStore
from lagoon.storage.memory import MemoryStore

from .helpers import KEYS, NS, components, db_on, live_view, make_settings

pytestmark = pytest.mark.anyio


def test_queue_object_round_trips_and_rejects_corruption() -> None:
    data = encode_queue({"default/a": 5, "o/b": 7}, nonce="ab", updated_ms=9)
    assert decode_queue(data) == {"default/a": 5, "o/b": 7}
    assert decode_queue(data.replace(b'"o/b":7', b'"o/b":8')) is None
    assert decode_queue(b"garbage") is None


async def test_commit_enqueues_and_worker_dequeues_when_indexed() -> None:
    store = MemoryStore()
    settings = make_settings()
    db = db_on(store, settings)
    await db.write(NS, {"upsert_rows": [{"id": 1, "v": 1}]})
    await db.write(NS, {"upsert_rows": [{"id": 2, "v": 2}]})
    await db.enqueuer.close()  # flush now instead of waiting for the batch
    queue = IndexingQueue(store, components("q"))
    assert set(await queue.read()) == {"default/docs"}

    worker = IndexerLoop(store, settings, components("w"), sweep_interval_secs=1e9)
    worker._next_sweep = 1e18  # no discovery sweep: the queue alone must drive the work
    report = await worker.run_once(force=True)
    assert report.indexed["default/docs"].status == "idle"  # indexed, then found empty
    assert report.removed == {"default/docs"}
    assert await queue.read() == {}
    assert await live_view(store) == {1: {"v": 1}, 2: {"v": 2}}
    await db.close()


async def test_enqueue_is_batched_per_interval_but_never_dropped() -> None:
    inner = MemoryStore()
    store = InstrumentedStore(inner)
    settings = make_settings(poll_interval_secs=0.2)
    db = db_on(store, settings)
    for i in range(10):
        await db.write(NS, {"upsert_rows": [{"id": i, "v": i}]})
    await db.write("other", {"upsert_rows": [{"id": 1, "v": 1}]})
    await asyncio.sleep(0.5)
    queue = IndexingQueue(store, components("q"))
    assert set(await queue.read()) == {"default/docs", "default/other"}
    assert queue_key().startswith("_lagoon/")
    # minus the WAL entries and, for each of the two new namespaces, its catalog marker and count
    writes = store.counts.get("put", 0) - 11 - 2 * 2
    assert 1 <= writes <= 3  # batched: one write per interval, not one per commit
    await db.close()


async def test_removal_loses_to_a_concurrent_enqueue() -> None:
    """The worker checked the tail (empty), then a commit and its enqueue landed before the
    worker's conditional PUT: the PUT must fail, the re-check sees the entry, the namespace stays."""
    store = MemoryStore()
    settings = make_settings()
    db = db_on(store, settings)
    queue = IndexingQueue(store, components("q"))
    await queue.add(["default/docs"])
    calls = 0

    async def check(names: set[str]) -> set[str]:
        nonlocal calls
        calls += 1
        if calls == 1:  # the tail was empty when checked; a commit lands right after
            await db.write(NS, {"upsert_rows": [{"id": 1, "v": 1}]})
            await db.enqueuer.close()
            return set(names)
        state = indexing_state(KEYS, store, settings, components("w"))
        await state.refresh()
        return set(names) if state.head == state.indexed_through else set()

    removed = await queue.remove_idle({"default/docs"}, check)
    assert calls == 2 and removed == set()
    assert "default/docs" in await queue.read()
    await db.close()


async def test_removal_keeps_namespace_whose_tail_is_not_empty() -> None:
    store = MemoryStore()
    settings = make_settings(flush_interval_secs=3600)
    db = db_on(store, settings)
    await db.write(NS, {"upsert_rows": [{"id": 1, "v": 1}]})
    await db.enqueuer.close()
    worker = IndexerLoop(store, settings, components("w"))
    worker._next_sweep = 1e18
    report = await worker.run_once()  # not due: stays queued
    assert report.indexed["default/docs"].status == "waiting" and not report.removed
    assert "default/docs" in await IndexingQueue(store, components("q")).read()
    await db.close()


async def test_sweep_finds_unqueued_work() -> None:
    store = MemoryStore()
    settings = make_settings()
    db = db_on(store, settings)
    await db.write(NS, {"upsert_rows": [{"id": 1, "v": 1}]})
    await db.write("b", {"upsert_rows": [{"id": 1, "v": 1}]}, org="acme")
    db.enqueuer._closed = True  # simulate a writer that crashed before enqueuing
    await store.delete(queue_key())
    worker = IndexerLoop(store, settings, components("w"))
    report = await worker.run_once(force=True)
    assert {n for n, o in report.indexed.items() if o.indexed_through >= 1} == {"default/docs", "acme/b"}
    assert await live_view(store, NamespaceKeys.of("acme", "b")) == {1: {"v": 1}}
    assert await live_view(store, KEYS) == {1: {"v": 1}}


async def test_enqueuer_close_flushes_pending() -> None:
    store = MemoryStore()
    q = IndexingQueue(store, components("q"))
    e = Enqueuer(q, interval_secs=3600)
    e.notify(KEYS)
    await asyncio.sleep(0.01)
    e.notify(NamespaceKeys.of("default", "x"))  # throttled: waits for the interval...
    await e.close()  # ...or for close
    assert set(await q.read()) == {"default/docs", "default/x"}
