"""FaultyStore: seeded, replayable faults and one-shot failpoints."""

from __future__ import annotations

import asyncio

import pytest

from lagoon.storage import (
    ConditionalConflict,
    CorruptRead,
    FaultyStore,
    IfMatch,
    MemoryStore,
    ObjectNotFound,
    PutMode,
    StorageError,
    StoreUnavailable,
)

pytestmark = pytest.mark.anyio


async def workload(store: FaultyStore) -> list[str]:
    """A fixed sequence of calls; returns each call's outcome."""
    outcomes: list[str] = []

    async def step(coro: object) -> None:
        try:
            await coro  # type: ignore[misc]
            outcomes.append("ok")
        except StorageError as exc:
            outcomes.append(type(exc).__name__)

    for i in range(60):
        await step(store.put(f"k/{i % 7}", b"x" * i, PutMode.CREATE if i % 3 else PutMode.OVERWRITE))
        await step(store.get(f"k/{i % 5}"))
        await step(store.get_ranges(f"k/{i % 5}", [(0, 3), (4, 9)]))
        await step(store.head(f"k/{i % 4}"))
        await step(store.delete(f"k/{i % 11}"))
    return outcomes


def faulty(seed: int) -> FaultyStore:
    return FaultyStore(
        MemoryStore(), seed=seed, p_error_before=0.1, p_error_after=0.1, p_conflict=0.1, p_truncate=0.1
    )


async def test_same_seed_same_fault_trace() -> None:
    a, b, c = faulty(42), faulty(42), faulty(43)
    outcomes_a, outcomes_b = await workload(a), await workload(b)
    await workload(c)
    assert a.trace == b.trace
    assert outcomes_a == outcomes_b
    assert a.trace != c.trace
    faults = {fault for _, _, fault in a.trace}
    assert {"ok", "error_before", "error_after", "conflict", "truncate"} <= faults


async def test_error_before_does_not_apply_error_after_does() -> None:
    store = FaultyStore(MemoryStore())
    store.arm("put", "error_before")
    with pytest.raises(StoreUnavailable):
        await store.put("a", b"1")
    with pytest.raises(ObjectNotFound):
        await store.get("a")
    store.arm("put", "error_after")
    with pytest.raises(StoreUnavailable):
        await store.put("a", b"1")
    assert await store.get("a") == b"1"  # applied: the ambiguous case


async def test_truncated_reads() -> None:
    store = FaultyStore(MemoryStore())
    await store.put("a", b"0123456789")
    store.arm("get", "truncate")
    with pytest.raises(CorruptRead):
        await store.get("a")
    store.raw_truncate = True
    store.arm("get", "truncate")
    short = await store.get("a")
    assert len(short) < 10 and b"0123456789".startswith(short)
    store.arm("get_ranges", "truncate")
    ranges = await store.get_ranges("a", [(0, 4), (5, 9)])
    assert ranges[0] == b"0123" and len(ranges[1]) < 4


async def test_conflicts_only_hit_conditional_puts() -> None:
    store = FaultyStore(MemoryStore(), p_conflict=1.0)
    v1 = await store.put("a", b"1")  # overwrite: never a 409
    with pytest.raises(ConditionalConflict):
        await store.put("b", b"1", PutMode.CREATE)
    with pytest.raises(ConditionalConflict):
        await store.put("a", b"2", IfMatch(v1.etag or ""))
    assert await store.get("a") == b"1"


async def test_ops_filter_and_latency() -> None:
    sleeps: list[float] = []

    async def fake_sleep(delay: float) -> None:
        sleeps.append(delay)

    store = FaultyStore(
        MemoryStore(), p_error_before=1.0, ops={"put"}, latency=(0.01, 0.02), sleep=fake_sleep
    )
    with pytest.raises(StoreUnavailable):
        await store.put("a", b"1")
    with pytest.raises(ObjectNotFound):  # get is not in ops: reaches the store
        await store.get("a")
    assert len(sleeps) == 1 and 0.01 <= sleeps[0] <= 0.02


async def test_failpoint_key_predicate_times_and_hooks() -> None:
    store = FaultyStore(MemoryStore())
    store.arm("put", "error_before", key=lambda k: k.startswith("wal/"), times=2)
    await store.put("other", b"1")  # not matched
    for _ in range(2):
        with pytest.raises(StoreUnavailable):
            await store.put("wal/1", b"1")
    await store.put("wal/1", b"1")  # used up

    gate = asyncio.Event()
    order: list[str] = []

    async def park(op: str, key: str) -> None:
        order.append(f"parked {key}")
        await gate.wait()

    store.arm("put", park, key="slow")
    slow = asyncio.create_task(store.put("slow", b"late"))
    await asyncio.sleep(0)
    await store.put("fast", b"early")
    order.append("fast done")
    gate.set()
    await slow
    assert order == ["parked slow", "fast done"]
    with pytest.raises(ValueError):
        store.arm("nope", "error_before")
    store.arm("get", "error_before")
    store.disarm()
    assert await store.get("fast") == b"early"
