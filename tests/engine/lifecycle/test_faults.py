"""Workers over a store that fails (errors before and after applying, 409s, torn reads): the
live documents still equal the model, nothing referenced goes missing, and once the faults stop
and the grace period passes, GC leaves exactly the latest version's objects."""

from __future__ import annotations

import asyncio
import random

import pytest

from lagoon.engine import manifest_store
from lagoon.engine.gc import collect_garbage
from lagoon.engine.scheduler import IndexerLoop
from lagoon.storage.faulty import FaultyStore
from lagoon.storage.memory import MemoryStore
from lagoon.storage.retrying import RetryingStore

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
)

pytestmark = pytest.mark.anyio


async def _no_sleep(_: float) -> None:
    await asyncio.sleep(0)


@pytest.mark.parametrize(
    "seed", [*range(6), *(pytest.param(s, marks=pytest.mark.slow) for s in range(6, 60))]
)
async def test_workers_over_a_faulty_store(seed: int) -> None:
    clock = ManualStoreClock()
    inner = MemoryStore(clock=clock)
    settings = make_settings(compaction_fanin=2, gc_grace_secs=5)
    db = db_on(inner, settings)
    model = Model()
    rng = random.Random(seed)
    faulty = [
        FaultyStore(
            inner,
            seed=seed * 10 + i,
            p_error_before=0.05,
            p_error_after=0.05,
            p_conflict=0.05,
            p_truncate=0.03,
        )
        for i in range(2)
    ]
    workers = [
        IndexerLoop(
            RetryingStore(f, sleep=_no_sleep, max_attempts=3), settings, components(f"w{i}", seed + i)
        )
        for i, f in enumerate(faulty)
    ]
    errors = 0
    for _ in range(12):
        await random_writes(db, model, rng, 4, id_range=25)
        await db.enqueuer.close()
        db.enqueuer._closed = False
        for w in workers:
            report = await w.run_once(force=True)
            errors += report.errors
        clock.advance(2)
        assert await dangling(inner) == []
        assert await live_view(inner) == model.docs
    for f in faulty:  # the outage ends
        f.p_error_before = f.p_error_after = f.p_conflict = f.p_truncate = 0.0
    for w in workers:
        await w.run_once(force=True)
    assert await live_view(inner) == model.docs
    clock.advance(6)
    for _ in range(2):
        await collect_garbage(inner, KEYS, settings, components("gc"), retain_versions=1)
    latest = await manifest_store.read_latest(inner, KEYS)
    assert latest is not None and latest.pending_delete == ()
    assert await segment_ids_in_store(inner) == {s.id for s in latest.segments}
    assert await dangling(inner) == []
    assert await live_view(inner) == model.docs
    await db.close()
