"""A node's segment memory stays within ``cache.memory_bytes`` however many namespaces are open.

Open namespaces refer to their segments by handle (engine/segment_handle.py): the memory LRU
alone keeps readers, so a segment it evicts is really freed (its reader dies) even while its
namespace stays open, and is opened again through the cache when the namespace is queried again.
Queries pin their segments, so the charged total exceeds the budget by at most the segments of
the queries running, and answers equal those of a node that never evicted anything."""

from __future__ import annotations

import asyncio
import gc
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import lagoon.embedded
from lagoon.config import Settings
from lagoon.engine.database import Database
from lagoon.engine.indexer import index_namespace
from lagoon.engine.segment_handle import SegmentHandle, in_use
from lagoon.engine.segment_io import _MemoryLru
from lagoon.format.keys import NamespaceKeys
from lagoon.index.segment.read import SegmentReader
from lagoon.index.text.corpus import corpus
from lagoon.storage.memory import MemoryStore
from tests.index.segment.data import vectors

from .helpers import components, make_settings

pytestmark = pytest.mark.anyio

NAMESPACES = 8
ROWS = 1_500
DIM = 32
SCHEMA = {"text": {"type": "string", "full_text_search": True}, "tag": {"type": "int"}}
BODIES: list[dict[str, Any]] = [
    {"rank_by": ["id", "asc"], "top_k": ROWS, "include_attributes": ["text", "tag"]},
    {"rank_by": ["vector", "ANN", vectors(1, DIM, seed=9)[0].tolist()], "top_k": 10},
    {"rank_by": ["text", "BM25", "the water"], "top_k": 10, "filters": ["tag", "Lt", 4]},
]


def _name(i: int) -> str:
    return f"tenant-{i}"


async def _store() -> MemoryStore:
    """``NAMESPACES`` namespaces of one indexed segment each (text, tag, vector), no WAL tail."""
    store = MemoryStore()
    settings = make_settings()
    db = Database(store, settings, components("writer"))
    texts = [d["text"] for d in corpus(ROWS, seed=3)]
    for i in range(NAMESPACES):
        base = vectors(ROWS, DIM, seed=i)
        rows = [{"id": j, "text": texts[j], "tag": j % 7, "vector": base[j].tolist()} for j in range(ROWS)]
        body = {"upsert_rows": rows, "schema": SCHEMA, "distance_metric": "cosine_distance"}
        await db.write(_name(i), body)
        await index_namespace(
            store, NamespaceKeys.of("default", _name(i)), settings, components("ix"), force=True
        )
    await db.close()
    return store


SAMPLE_ALL = {"recall_sample_rate": 1.0, "recall_sample_min_docs": 0, "recall_samples_per_sec": 1000}


def _node(
    store: MemoryStore, memory_bytes: int, cache_dir: Path | None = None, ann: dict[str, Any] | None = None
) -> Database:
    settings = Settings(
        indexer=make_settings().indexer,
        cache={"memory_bytes": memory_bytes, "dir": str(cache_dir or "")},  # type: ignore[arg-type]
        ann=ann or {},  # type: ignore[arg-type]
    )
    return Database(store, settings, components("reader"))


async def _answers(db: Database, i: int) -> list[Any]:
    out = []
    for body in BODIES:
        got = await db.query(_name(i), body)
        out.append(got["rows"])
    await asyncio.sleep(0)  # (the query's segments are recharged once it has answered)
    return out


def _readers(db: Database) -> list[SegmentReader]:
    return [e.reader for e in db.segment_io.memory._items.values() if e.reader is not None]


async def test_many_open_namespaces_stay_within_the_memory_budget(tmp_path: Path) -> None:
    store = await _store()
    roomy = _node(store, 1 << 30)
    expected = [await _answers(roomy, i) for i in range(NAMESPACES)]
    sizes = [e.size for e in roomy.segment_io.memory._items.values()]
    assert len(sizes) == NAMESPACES
    await roomy.close()

    budget = 2 * max(sizes) + min(sizes) // 2  # two segments of the eight
    assert sum(sizes) > 3 * budget
    db = _node(store, budget, tmp_path / "cache")
    memory = db.segment_io.memory
    charged: list[float] = []
    memory.report = charged.append
    seen: list[weakref.ref[SegmentReader]] = []
    for _ in range(2):  # every namespace in turn, twice: the second round reopens evicted ones
        for i in range(NAMESPACES):
            assert await _answers(db, i) == expected[i]
            seen += [weakref.ref(r) for r in _readers(db)]
            assert memory.used <= budget
    assert max(charged) <= budget + max(sizes)  # at most the segment in use beyond the budget
    assert len(db._handles) == NAMESPACES  # every namespace is still open

    gc.collect()
    cached = {id(r) for r in _readers(db)}
    alive = [r for ref in seen if (r := ref()) is not None]
    assert 1 <= len(cached) <= 2
    assert {id(r) for r in alive} == cached  # every evicted segment's reader (and its arrays) is gone
    for i in range(NAMESPACES):  # no snapshot keeps a source over an evicted reader
        snap = db._handles[("default", _name(i))].state._snapshot
        assert snap is not None and all(isinstance(s, SegmentHandle) for s in snap.segments)
        if snap._source is not None:
            assert all(id(p.reader) in cached for p in snap._source.parts if hasattr(p, "reader"))
    await db.close()


async def test_a_pinned_segment_outlives_eviction_and_a_segment_over_the_budget_still_answers() -> None:
    store = await _store()
    roomy = _node(store, 1 << 30)
    expected = [await _answers(roomy, i) for i in range(3)]
    size = max(e.size for e in roomy.segment_io.memory._items.values())
    await roomy.close()

    db = _node(store, size + size // 2)  # room for one segment
    await _answers(db, 0)
    snap = await db.snapshot("default", _name(0))
    async with in_use(snap.segments):  # as a running query of namespace 0 does
        pinned = weakref.ref(snap.source().parts[0].reader)
        for i in (1, 2):  # (no room left beside it: their segments are opened for each query)
            assert await _answers(db, i) == expected[i]
            assert [r is pinned() for r in _readers(db)] == [True]  # never evicted while in use
    assert await _answers(db, 1) == expected[1]  # the query ended: evicted by the next one
    assert not any(r is pinned() for r in _readers(db))
    assert snap._source is None  # (the snapshot let its source over the evicted reader go)
    gc.collect()
    assert pinned() is None
    assert await _answers(db, 0) == expected[0]
    assert db.segment_io.memory.used <= size
    await db.close()

    tiny = _node(store, size // 4)  # no segment fits: each query opens its segments again
    for i in range(3):
        assert await _answers(tiny, i) == expected[i]
    assert tiny.segment_io.memory.used == 0
    meta = await tiny.metadata(_name(1))
    assert meta["approx_row_count"] == ROWS
    await tiny.close()


async def test_a_recall_sample_waiting_to_be_measured_holds_no_evicted_segment() -> None:
    """A sampled ANN query waiting for the recall monitor keeps its snapshot, not its segments'
    readers: the memory cache evicts them meanwhile and their memory is freed. The measurement
    pins them again (reopening them) as a query does, and unpins them when it is done."""
    store = await _store()
    label = f"default/{_name(0)}"
    roomy = _node(store, 1 << 30, ann=SAMPLE_ALL)
    await _answers(roomy, 0)
    assert await asyncio.to_thread(roomy.recall.drain)
    expected = roomy.recall.recall(label)
    size = max(e.size for e in roomy.segment_io.memory._items.values())
    await roomy.close()
    assert expected[1] == 1  # (one ANN query among the bodies: sampled)

    db = _node(store, size + size // 2, ann=SAMPLE_ALL)  # room for one segment
    start = db.recall._start
    db.recall._start = lambda: None  # type: ignore[method-assign]  # (the measuring thread starts later)
    await _answers(db, 0)  # its ANN query is sampled and waits
    (reader,) = _readers(db)
    evicted = weakref.ref(reader)
    del reader
    await _answers(db, 1)  # evicts namespace 0's segment
    gc.collect()
    assert evicted() is None  # freed, although a sample over it waits
    db.recall._start = start  # type: ignore[method-assign]
    start()
    assert await asyncio.to_thread(db.recall.drain)
    assert db.recall.recall(label) == expected  # measured on the segment opened again
    assert all(e.pins == 0 for e in db.segment_io.memory._items.values())  # and unpinned after
    assert db.segment_io.memory.used <= size + size // 2
    await db.close()


async def test_open_namespaces_wal_tails_are_bounded_together() -> None:
    """Idle namespaces are closed, least recently used first, while the open ones' unindexed
    tails exceed ``cache.max_open_tail_bytes``; a closed one reads its tail again when used."""
    store = MemoryStore()
    writer = Database(store, make_settings(), components("writer"))
    rows = [{"id": j, "text": "x" * 200, "tag": j} for j in range(200)]
    for i in range(4):
        await writer.write(_name(i), {"upsert_rows": rows, "schema": SCHEMA})
    tail = writer.handle("default", _name(0)).state.tail.unindexed_bytes
    await writer.close()

    settings = Settings(
        indexer=make_settings().indexer,
        cache={"max_open_tail_bytes": 2 * tail + tail // 2},  # type: ignore[arg-type]
    )
    db = Database(store, settings, components("reader"))
    body = {"rank_by": ["id", "asc"], "top_k": 300, "include_attributes": ["tag"]}
    for _ in range(2):  # the second round reopens the closed ones
        for i in range(4):
            got = await db.query(_name(i), body)
            assert [r["tag"] for r in got["rows"]] == list(range(200))
            opened = [ns for _, ns in db._handles]
            assert opened[-1] == _name(i) and len(opened) <= 2  # (two tails fit)
            assert sum(h.state.tail.unindexed_bytes for h in db._handles.values()) <= 2 * tail
    assert [ns for _, ns in db._handles] == [_name(2), _name(3)]
    await db.close()


async def test_open_tails_stay_bounded_together_while_they_grow() -> None:
    """A tail that grows while its namespace is open (writes faster than indexing, or another
    process's writes read by a refresh) counts against ``cache.max_open_tail_bytes`` at once: the
    least recently used idle namespaces are closed then, not only when another one is opened."""
    store = MemoryStore()
    rows = [{"id": j, "text": "x" * 200, "tag": j} for j in range(200)]
    other = Database(store, make_settings(), components("other"))
    await other.write(_name(9), {"upsert_rows": rows, "schema": SCHEMA})
    tail = other.handle("default", _name(9)).state.tail.unindexed_bytes
    limit = 2 * tail + tail // 2
    db = Database(
        store,
        Settings(indexer=make_settings().indexer, cache={"max_open_tail_bytes": limit}),  # type: ignore[arg-type]
        components("node"),
    )
    body = {"rank_by": ["id", "asc"], "top_k": 300, "include_attributes": ["tag"]}

    def opened() -> list[str]:
        return [ns for _, ns in db._handles]

    def held() -> int:
        return sum(h.state.tail.unindexed_bytes for h in db._handles.values())

    await db.write(_name(0), {"upsert_rows": rows, "schema": SCHEMA})
    await db.write(_name(1), {"upsert_rows": rows, "schema": SCHEMA})
    assert opened() == [_name(0), _name(1)]  # two tails fit
    await db.write(_name(1), {"upsert_rows": rows})  # namespace 1's tail grows past the bound
    assert opened() == [_name(1)] and held() <= limit  # namespace 0 (idle) was closed
    got = await db.query(_name(0), body)  # reopened: its tail read again (three tails: 1 closed)
    assert [r["tag"] for r in got["rows"]] == list(range(200))
    assert opened() == [_name(0)] and held() <= limit
    await db.write(_name(2), {"upsert_rows": rows, "schema": SCHEMA})
    assert opened() == [_name(0), _name(2)]

    await other.write(_name(0), {"upsert_rows": rows})  # another process writes namespace 0
    got = await db.query(_name(0), body)  # strong: the refresh reads its entry
    assert len(got["rows"]) == 200
    assert opened() == [_name(0)] and held() <= limit  # namespace 2 was closed then
    await other.close()
    await db.close()


async def test_a_write_resolved_against_an_evicted_segment_reopens_it() -> None:
    """A conditional write decides on the documents of a segment the memory cache evicted: it is
    opened again through the cache (pinned while the group is resolved)."""
    store = await _store()
    db = _node(store, 1)  # nothing fits: every segment is evicted as soon as it is opened
    await _answers(db, 0)
    assert db.segment_io.memory.used == 0
    patch = {"patch_rows": [{"id": 7, "tag": 100}], "patch_condition": ["tag", "Eq", 0]}
    await db.write(_name(0), patch)  # id 7: tag 7 % 7 == 0, so the condition holds
    await db.write(_name(0), {"patch_rows": [{"id": 8, "tag": 100}], "patch_condition": ["tag", "Eq", 0]})
    got = await db.query(_name(0), {"rank_by": ["id", "asc"], "top_k": 3, "filters": ["tag", "Eq", 100]})
    assert [r["id"] for r in got["rows"]] == [7]  # (id 8 has tag 1: its condition failed)
    await db.close()


async def test_a_write_resolved_against_an_evicted_segment_reopens_it_without_a_spare_thread() -> None:
    """A write's group is resolved in a worker thread. Were its segments not pinned first, a
    thread meeting an evicted one would wait on the event loop to reopen it, and the reopen needs
    a worker thread too: with every worker so waiting (here the only one), nothing moves again."""
    store = MemoryStore()
    writer = Database(store, make_settings(), components("writer"))
    await writer.write("ns", {"upsert_rows": [{"id": j, "tag": j} for j in range(50)], "schema": SCHEMA})
    await index_namespace(
        store, NamespaceKeys.of("default", "ns"), make_settings(), components("ix"), force=True
    )
    await writer.close()

    db = _node(store, 1)  # no segment fits: each is evicted once its query ends
    await db.query("ns", {"rank_by": ["id", "asc"], "top_k": 1})
    loop = asyncio.get_running_loop()
    single = ThreadPoolExecutor(max_workers=1)
    loop.set_default_executor(single)
    try:
        await asyncio.wait_for(db.write("ns", {"patch_rows": [{"id": 3, "tag": 99}]}), 60)
    finally:
        loop.set_default_executor(ThreadPoolExecutor())
        single.shutdown(wait=False)
    got = await db.query("ns", {"rank_by": ["id", "asc"], "top_k": 5, "include_attributes": ["tag"]})
    assert [r["tag"] for r in got["rows"]] == [0, 1, 2, 99, 4]  # the patch read the segment's row
    await db.close()


def _embedded_run(root: Path, memory_bytes: int) -> tuple[list[Any], list[_MemoryLru]]:
    """A process with the embedded indexer: two writes, indexed and compacted into one segment
    in the background, then queried; the answers and every memory cache it made."""
    before = {id(o) for o in gc.get_objects() if isinstance(o, _MemoryLru)}
    settings = Settings(
        storage={"backend": "fs", "root": str(root)},  # type: ignore[arg-type]
        cache={"memory_bytes": memory_bytes},  # type: ignore[arg-type]
        indexer=make_settings(compaction_fanin=2).indexer,
    )
    db = lagoon.embedded.open(settings)
    try:
        ns = db.namespace(_name(0))
        base = vectors(ROWS, DIM, seed=0)
        texts = [d["text"] for d in corpus(ROWS, seed=3)]
        for half in (range(ROWS // 2), range(ROWS // 2, ROWS)):
            rows = [{"id": j, "text": texts[j], "tag": j % 7, "vector": base[j].tolist()} for j in half]
            ns.write(upsert_rows=rows, schema=SCHEMA, distance_metric="cosine_distance")
        deadline = time.monotonic() + 60
        while ns.metadata()["index"]["status"] != "up-to-date" or len(_segments(db)) != 1:
            assert time.monotonic() < deadline, "not indexed and compacted in 60 s"
            time.sleep(0.05)
        answers = [ns.query(**body)["rows"] for body in BODIES]
        time.sleep(0.1)  # (the queries' segments are recharged once they have answered)
        made = [o for o in gc.get_objects() if isinstance(o, _MemoryLru) and id(o) not in before]
        return answers, made
    finally:
        db.close()


def _segments(db: lagoon.embedded.Database) -> list[Any]:
    manifest = db._db.handle("default", _name(0)).state.manifest
    return list(manifest.segments) if manifest is not None else []


def test_the_embedded_indexer_shares_the_processs_memory_budget(tmp_path: Path) -> None:
    """The indexer and compactor of a serving process (``--embedded-indexer`` with one serving
    process, the embedded API) build and read segments through the serving cache: the process
    holds at most ``cache.memory_bytes`` of segments, not that plus a cache of the indexer's."""
    expected, roomy = _embedded_run(tmp_path / "roomy", 1 << 30)
    assert len(roomy) == 1
    segment = max(e.size for e in roomy[0]._items.values())
    budget = segment + segment // 4  # the final segment fits, with little to spare
    answers, caches = _embedded_run(tmp_path / "tight", budget)
    assert answers == expected
    assert sum(c.budget for c in caches) == budget  # one budget for the process
    assert 0 < sum(c.used for c in caches) <= budget
