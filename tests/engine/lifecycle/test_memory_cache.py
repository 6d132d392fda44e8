"""The memory cache charges each segment at what it holds in memory: the files' bytes plus the
documents decoded from them (Arrow nbytes of the decompressed columns or batches) and the vectors
(numpy nbytes). Filled past its budget it evicts, and the charged total — exported as
``lagoon_cache_bytes{layer="memory"}`` — stays within ``cache.memory_bytes``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import REGISTRY

from lagoon.config import Settings
from lagoon.engine.database import Database
from lagoon.storage.memory import MemoryStore

from .helpers import NS, components, make_settings
from .test_cold_segments import SEGMENTS, segmented_store

pytestmark = pytest.mark.anyio

ALL = {"rank_by": ["id", "asc"], "top_k": 10_000, "include_attributes": ["text", "tag"]}


def _db(store: MemoryStore, memory_bytes: int) -> Database:
    settings = Settings(
        indexer=make_settings().indexer,
        cache={"memory_bytes": memory_bytes},  # type: ignore[arg-type]
    )
    return Database(store, settings, components("reader"))


def _entries(db: Database) -> list[Any]:
    return list(db.segment_io.memory._items.values())


def _gauge(name: str, layer: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"layer": layer})


async def test_decoded_documents_are_charged_and_the_budget_holds() -> None:
    store, _, _ = await segmented_store()

    roomy = _db(store, 1 << 30)
    assert len((await roomy.query(NS, ALL))["rows"]) == 10_000  # every segment, every column
    entries = _entries(roomy)
    assert len(entries) == SEGMENTS
    for e in entries:
        file_bytes = sum(len(v) for v in e.files.values())
        decoded_text = e.reader.column("text").nbytes  # decompressed from the docs file
        assert e.size == e.resident_bytes() >= file_bytes + decoded_text
        assert decoded_text > len(e.files["docs"])  # what charging the file bytes alone missed
    sizes = sorted(e.size for e in entries)
    assert roomy.segment_io.memory.used == sum(sizes)
    assert _gauge("lagoon_cache_budget_bytes", "memory") == 1 << 30
    await roomy.close()

    budget = sizes[-1] + sizes[-2] + sizes[0] // 2  # room for two segments, not three
    tight = _db(store, budget)
    for _ in range(2):  # visiting every segment twice fills the cache past its budget
        assert len((await tight.query(NS, ALL))["rows"]) == 10_000
    await asyncio.sleep(0)
    memory = tight.segment_io.memory
    kept = _entries(tight)
    assert 1 <= len(kept) < SEGMENTS
    assert memory.used == sum(e.size for e in kept) <= budget
    assert all(e.size == e.resident_bytes() for e in kept)
    assert _gauge("lagoon_cache_bytes", "memory") == memory.used
    assert _gauge("lagoon_cache_budget_bytes", "memory") == budget
    await tight.close()


async def test_batches_decoded_by_queries_are_charged_after_the_query() -> None:
    """A docs file opened from its head decodes the batches of the rows queries return: the
    segment's charge grows with them."""
    store, _, _ = await segmented_store()
    db = _db(store, 1 << 30)
    db.segment_io.hydrate = False
    db.segment_io.docs_lazy_min_bytes = 16 << 10
    await db.query(NS, {"rank_by": ["id", "asc"], "top_k": 1})  # ids only: no batch
    before = {id(e): e.size for e in _entries(db)}
    assert all(e.reader.lazy_docs() for e in _entries(db))
    body = {"rank_by": ["id", "asc"], "top_k": 3, "include_attributes": ["text"]}
    assert len((await db.query(NS, body))["rows"]) == 3  # the first segment's first batch
    await asyncio.sleep(0)  # (charged once the query has answered)
    grown = [e for e in _entries(db) if e.size > before[id(e)]]
    assert len(grown) == 1
    batches = grown[0].reader._docs._batches
    assert grown[0].size - before[id(grown[0])] == sum(b.nbytes for b in batches.values()) > 0
    assert db.segment_io.memory.used == sum(e.size for e in _entries(db))

    # a caller that needs whole segments (the compactor) never gets the lazily opened reader
    state = db.handle("default", NS).state
    ref = state.manifest.segments[0] if state.manifest else None
    assert ref is not None
    whole = await db.segment_io.open(state.keys, ref, state.tail.schema)
    assert not whole.reads_store and not whole.lazy_docs()
    assert await db.segment_io.open(state.keys, ref, state.tail.schema, lazy=True) is whole  # reused
    await db.close()
