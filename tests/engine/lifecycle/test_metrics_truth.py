"""The indexing metrics tell the truth: a namespace whose indexing fails has a lag that keeps
growing and a failure count; indexed and idle namespaces read 0 (not absent); every namespace the
worker knows has a segment count; counters exist at 0 before anything happened."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from prometheus_client import REGISTRY

from lagoon.engine.database import Database
from lagoon.engine.scheduler import IndexerLoop
from lagoon.format.keys import NamespaceKeys
from lagoon.storage.base import PutMode
from lagoon.storage.memory import MemoryStore

from .helpers import components, make_settings

pytestmark = pytest.mark.anyio


def sample(name: str, ns: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"namespace": f"default/{ns}"})


async def test_failing_namespace_lag_grows_and_healthy_ones_read_zero() -> None:
    tag = uuid.uuid4().hex[:8]
    broken, healthy, idle = f"broken-{tag}", f"healthy-{tag}", f"idle-{tag}"
    store = MemoryStore()
    settings = make_settings(flush_interval_secs=0.01)
    db = Database(store, settings, components("w"))
    await db.write(idle, {"upsert_rows": [{"id": 1, "t": "x"}]})
    loop = IndexerLoop(store, settings, components("i"))
    await loop.run_once(force=True)  # idle is indexed: its tail is empty from now on
    await db.write(broken, {"upsert_rows": [{"id": 1, "t": "x"}]})
    await db.write(broken, {"upsert_rows": [{"id": 2, "t": "y"}]})
    await db.write(healthy, {"upsert_rows": [{"id": 1, "t": "x"}]})
    keys = NamespaceKeys.of("default", broken)
    torn = (await store.get(keys.wal(2)))[:-7]
    await store.put(keys.wal(2), torn, PutMode.OVERWRITE)

    # a fresh worker (as after a restart): finds everything by its sweep; it folds the entry
    # before the torn one, then fails on the torn one in every pass (never folds it away)
    worker = IndexerLoop(store, settings, components("i2"))
    await worker.run_once(force=True)
    assert sample("lagoon_segment_count", broken) == 1.0
    assert sample("lagoon_indexing_failures_total", broken) == 0.0
    await worker.run_once(force=True)
    lag1 = sample("lagoon_indexing_lag_seconds", broken)
    fails1 = sample("lagoon_indexing_failures_total", broken)
    assert lag1 is not None and lag1 > 0
    assert fails1 is not None and fails1 >= 1
    await asyncio.sleep(0.3)
    await worker.run_once(force=True)
    lag2 = sample("lagoon_indexing_lag_seconds", broken)
    assert lag2 is not None and lag2 >= lag1 + 0.25  # keeps growing while indexing fails
    fails2 = sample("lagoon_indexing_failures_total", broken)
    assert fails2 is not None and fails2 == fails1 + 1

    for ns in (healthy, idle):
        assert sample("lagoon_indexing_lag_seconds", ns) == 0.0, ns
        assert sample("lagoon_wal_tail_bytes", ns) == 0.0, ns
        assert sample("lagoon_segment_count", ns) == 1.0, ns
        assert sample("lagoon_indexing_failures_total", ns) == 0.0, ns
    assert sample("lagoon_segment_count", broken) == 1.0

    # steady writes: the series never disappears between passes once the tail is indexed
    for i in range(3):
        await db.write(healthy, {"upsert_rows": [{"id": 10 + i, "t": "z"}]})
        await worker.run_once(force=True)
        assert sample("lagoon_indexing_lag_seconds", healthy) == 0.0
        assert sample("lagoon_segment_count", healthy) is not None
    await db.close()


def test_counters_exist_at_zero_from_the_start() -> None:
    names = [
        ("lagoon_index_builds_total", {"outcome": "failed"}),
        ("lagoon_compaction_total", {"outcome": "failed"}),
        ("lagoon_gc_deleted_objects_total", {}),
        ("lagoon_cache_misses_total", {"layer": "disk"}),
    ]
    for name, labels in names:
        assert REGISTRY.get_sample_value(name, labels) is not None, name
