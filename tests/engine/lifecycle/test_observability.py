"""The indexer publishes the deployment guide's backlog metrics, and metadata stays meaningful
after the WAL is folded into segments."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from lagoon.engine.database import Database
from lagoon.engine.indexer import index_namespace
from lagoon.storage.memory import MemoryStore

from .helpers import KEYS, NS, components, make_settings

pytestmark = pytest.mark.anyio


def gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"namespace": f"default/{NS}"})


async def test_backlog_metrics_and_metadata_after_indexing() -> None:
    store = MemoryStore()
    settings = make_settings(flush_interval_secs=3600)
    db = Database(store, settings, components("w"))
    await db.write(NS, {"upsert_rows": [{"id": i, "t": "x"} for i in range(10)]})
    waiting = await index_namespace(store, KEYS, settings, components("i"))
    assert waiting.status == "waiting"
    tail_bytes = gauge("lagoon_wal_tail_bytes")
    assert tail_bytes is not None and tail_bytes > 0
    assert gauge("lagoon_indexing_lag_seconds") is not None
    assert gauge("lagoon_segment_count") == 0
    done = await index_namespace(store, KEYS, settings, components("i"), force=True)
    assert done.status == "committed"
    assert gauge("lagoon_wal_tail_bytes") == 0 and gauge("lagoon_indexing_lag_seconds") == 0
    assert gauge("lagoon_segment_count") == 1
    misses_before = REGISTRY.get_sample_value("lagoon_cache_misses_total", {"layer": "memory"}) or 0.0
    fresh = Database(store, settings, components("r"))
    meta = await fresh.metadata(NS)
    misses_after = REGISTRY.get_sample_value("lagoon_cache_misses_total", {"layer": "memory"}) or 0.0
    assert misses_after == misses_before + 1  # the new node fetched the segment once
    assert meta["index"] == {"status": "up-to-date"} and meta["approx_row_count"] == 10
    assert not meta["updated_at"].startswith("1970") and meta["updated_at"] >= meta["created_at"][:4]
    await db.close()
    await fresh.close()
