"""Queries through the engine (segments + WAL tail) agree with the model at every lifecycle stage:
after indexing, compaction, truncation and garbage collection, on the writer node and a fresh one."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from lagoon.engine.compactor import compact_namespace
from lagoon.engine.database import Database
from lagoon.engine.gc import collect_garbage
from lagoon.engine.indexer import index_namespace
from lagoon.storage.memory import MemoryStore

from .helpers import KEYS, NS, ManualStoreClock, Model, components, db_on, make_settings, random_writes

pytestmark = pytest.mark.anyio


async def query_docs(db: Database) -> dict[Any, dict[str, Any]]:
    res = await db.query(NS, {"rank_by": ["id", "asc"], "top_k": 10_000, "include_attributes": ["v", "tag"]})
    return {r["id"]: {k: r[k] for k in ("v", "tag") if r.get(k) is not None} for r in res["rows"]}


async def test_queries_match_the_model_through_the_lifecycle() -> None:
    clock = ManualStoreClock()
    store = MemoryStore(clock=clock)
    settings = make_settings(compaction_fanin=2, gc_grace_secs=10)
    writer = db_on(store, settings)
    model = Model()
    rng = random.Random(21)
    comps = components("w")

    async def check() -> None:
        await asyncio.sleep(settings.manifest.poll_interval_ms / 1000 + 0.005)  # the writer's view
        assert await query_docs(writer) == model.docs
        assert await query_docs(db_on(store, settings, node="fresh")) == model.docs

    for round_ in range(6):
        await random_writes(writer, model, rng, 8, id_range=40)
        await check()
        await index_namespace(store, KEYS, settings, comps, force=True)
        await check()
        while (await compact_namespace(store, KEYS, settings, comps)).status == "committed":
            pass
        await check()
        if round_ == 3:
            await writer.delete_namespace(NS)
            model.docs.clear()
            await writer.write(NS, model.upsert_body([1, 2], 5))
            model.upserted([1, 2], 5)
            await check()
        clock.advance(11)
        await collect_garbage(store, KEYS, settings, comps, retain_versions=1)
        await check()
    await writer.close()
