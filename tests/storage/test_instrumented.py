"""InstrumentedStore: Prometheus metrics per registry and plain counters."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from lagoon.storage import (
    FaultyStore,
    InstrumentedStore,
    MemoryStore,
    ObjectNotFound,
    PutMode,
    StoreMetrics,
    StoreUnavailable,
)

pytestmark = pytest.mark.anyio


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_counts_latency_bytes_and_errors() -> None:
    registry = CollectorRegistry()
    faulty = FaultyStore(MemoryStore())
    store = InstrumentedStore(faulty, registry)
    await store.put("a/1", b"12345", PutMode.CREATE)
    await store.put("a/2", b"xyz")
    assert await store.get("a/1") == b"12345"
    assert await store.get_range("a/1", 1, 3) == b"23"
    assert await store.get_ranges("a/1", [(0, 1), (1, 3)]) == [b"1", b"23"]
    await store.head("a/1")
    assert [m.key async for m in store.list("a/")] == ["a/1", "a/2"]
    assert await store.list_prefixes("") == ["a/"]
    await store.delete("a/2")
    await store.now()
    with pytest.raises(ObjectNotFound):  # an answer, not a failure
        await store.get("missing")
    faulty.arm("put", "error_before")
    with pytest.raises(StoreUnavailable):
        await store.put("a/3", b"x")

    assert store.counts == {
        "put": 3,
        "get": 2,
        "get_range": 1,
        "get_ranges": 1,
        "head": 1,
        "list": 1,
        "list_prefixes": 1,
        "delete": 1,
        "now": 1,
    }
    assert store.error_counts == {("get", "ObjectNotFound"): 1, ("put", "StoreUnavailable"): 1}
    assert sample(registry, "lagoon_objstore_requests_total", op="put") == 3
    assert sample(registry, "lagoon_objstore_errors_total", op="put") == 1
    assert sample(registry, "lagoon_objstore_errors_total", op="get") == 0
    assert sample(registry, "lagoon_objstore_bytes_total", op="put", direction="write") == 8
    assert sample(registry, "lagoon_objstore_bytes_total", op="get", direction="read") == 5
    assert sample(registry, "lagoon_objstore_bytes_total", op="get_ranges", direction="read") == 3
    assert sample(registry, "lagoon_objstore_request_duration_seconds_count", op="get") == 2
    assert sample(registry, "lagoon_objstore_request_duration_seconds_count", op="list") == 1
    store.reset_counts()
    assert store.counts == {}


async def test_registries_are_isolated_and_shareable() -> None:
    one, two = CollectorRegistry(), CollectorRegistry()
    a = InstrumentedStore(MemoryStore(), one)
    b = InstrumentedStore(MemoryStore(), one)  # same registry: metrics are shared, no clash
    c = InstrumentedStore(MemoryStore(), StoreMetrics.for_registry(two))
    for store in (a, b, c):
        await store.put("k", b"v")
    assert sample(one, "lagoon_objstore_requests_total", op="put") == 2
    assert sample(two, "lagoon_objstore_requests_total", op="put") == 1
    assert StoreMetrics.for_registry(one) is a.metrics
