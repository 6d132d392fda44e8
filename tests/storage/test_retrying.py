"""RetryingStore: backoff on transient errors only, budget, and ambiguous conditional PUTs."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry

from lagoon.storage import (
    AlreadyExists,
    ConditionalConflict,
    FaultyStore,
    IfMatch,
    InstrumentedStore,
    MemoryStore,
    ObjectNotFound,
    PreconditionFailed,
    PutMode,
    RetryingStore,
    StorageError,
    StoreUnavailable,
)

pytestmark = pytest.mark.anyio


class FakeTime:
    """An injectable clock and sleep: sleeping advances the clock, instantly."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay

    def clock(self) -> float:
        return self.now


class Stack:
    """Retrying(Faulty(Instrumented(Memory))): ``counts`` are the requests that reached the store."""

    def __init__(self, **retry: float) -> None:
        self.memory = MemoryStore()
        self.counted = InstrumentedStore(self.memory, CollectorRegistry())
        self.faulty = FaultyStore(self.counted)
        self.time = FakeTime()
        self.store = RetryingStore(
            self.faulty,
            sleep=self.time.sleep,
            clock=self.time.clock,
            rng=random.Random(7),
            **retry,  # type: ignore[arg-type]
        )

    @property
    def counts(self) -> dict[str, int]:
        return dict(self.counted.counts)


async def test_transient_errors_are_retried_with_full_jitter() -> None:
    s = Stack(base_delay=0.1, max_delay=0.3)
    await s.memory.put("k", b"v")
    s.faulty.arm("get", "error_before", times=4)
    assert await s.store.get("k") == b"v"
    assert s.store.retries == 4
    assert len(s.time.sleeps) == 4
    for attempt, delay in enumerate(s.time.sleeps):
        assert 0 <= delay <= min(0.3, 0.1 * 2**attempt)


async def test_non_transient_errors_are_not_retried() -> None:
    s = Stack()
    v1 = await s.store.put("k", b"v1", PutMode.CREATE)
    await s.store.put("k", b"v2")
    s.counted.reset_counts()
    with pytest.raises(ObjectNotFound):
        await s.store.get("missing")
    with pytest.raises(ObjectNotFound):
        await s.store.head("missing")
    with pytest.raises(AlreadyExists):
        await s.store.put("k", b"x", PutMode.CREATE)
    with pytest.raises(PreconditionFailed):
        await s.store.put("k", b"x", IfMatch(v1.etag or ""))
    assert s.counts == {"get": 1, "head": 1, "put": 2}  # once each, no read-back
    assert s.time.sleeps == []


async def test_ambiguous_create_that_landed_is_a_success() -> None:
    s = Stack()
    s.faulty.arm("put", "error_after")  # applied, then the answer is lost
    meta = await s.store.put("wal/1", b"entry nonce=abc", PutMode.CREATE)
    assert meta.size == len(b"entry nonce=abc")
    assert await s.memory.get("wal/1") == b"entry nonce=abc"
    assert s.counts == {"put": 2, "get": 1, "head": 1}  # put, put (412), read-back, head


async def test_ambiguous_create_taken_by_another_writer_is_already_exists() -> None:
    s = Stack()

    async def other_writer(op: str, key: str) -> None:
        await s.memory.put(key, b"entry nonce=theirs", PutMode.CREATE)

    s.faulty.arm("put", "error_before")  # we cannot know it did not land
    s.faulty.arm("put", other_writer)  # meanwhile another node takes the slot
    with pytest.raises(AlreadyExists):
        await s.store.put("wal/1", b"entry nonce=ours", PutMode.CREATE)
    assert await s.memory.get("wal/1") == b"entry nonce=theirs"
    assert s.counts["get"] == 1  # the read-back


async def test_conflict_409_is_retried_and_not_ambiguous() -> None:
    s = Stack()

    async def other_writer(op: str, key: str) -> None:
        await s.memory.put(key, b"theirs", PutMode.CREATE)

    s.faulty.arm("put", "conflict")  # 409: nothing was written
    s.faulty.arm("put", other_writer)
    with pytest.raises(AlreadyExists):
        await s.store.put("wal/1", b"ours", PutMode.CREATE)
    assert "get" not in s.counts  # no read-back after a clean 409


async def test_ambiguous_if_match_resolved_by_read_back() -> None:
    s = Stack()
    v1 = await s.store.put("manifest", b"v1")
    s.faulty.arm("put", "error_after")
    await s.store.put("manifest", b"v2 nonce=1", IfMatch(v1.etag or ""))
    assert await s.memory.get("manifest") == b"v2 nonce=1"


async def test_ambiguous_if_match_superseded_is_precondition_failed() -> None:
    s = Stack()
    v1 = await s.store.put("manifest", b"v1")

    async def other_writer(op: str, key: str) -> None:
        await s.memory.put(key, b"v2 nonce=theirs")

    s.faulty.arm("put", "error_before")
    s.faulty.arm("put", other_writer)
    with pytest.raises(PreconditionFailed):
        await s.store.put("manifest", b"v2 nonce=ours", IfMatch(v1.etag or ""))


async def test_budget_exhausted_raises_last_error() -> None:
    s = Stack(max_attempts=1000, base_delay=0.5, max_delay=2.0, budget_secs=5.0)
    s.faulty.p_error_before = 1.0
    with pytest.raises(StoreUnavailable):
        await s.store.get("k")
    assert s.time.now <= 5.0
    assert s.store.retries >= 3


async def test_max_attempts() -> None:
    s = Stack(max_attempts=3)
    s.faulty.p_error_before = 1.0
    with pytest.raises(StoreUnavailable):
        await s.store.put("k", b"v", PutMode.CREATE)
    assert s.store.retries == 2
    assert [t[2] for t in s.faulty.trace] == ["error_before"] * 3


async def test_corrupt_read_is_retried() -> None:
    s = Stack()
    await s.memory.put("seg/1", b"0123456789")
    s.faulty.arm("get_range", "truncate")
    s.faulty.arm("get", "truncate")
    assert await s.store.get_range("seg/1", 2, 8) == b"234567"
    assert await s.store.get("seg/1") == b"0123456789"
    assert s.store.retries == 2


async def test_conflict_on_overwrite_and_delete_retried() -> None:
    s = Stack()
    s.faulty.arm("put", "conflict")
    s.faulty.arm("delete", "error_after")
    await s.store.put("k", b"v")
    await s.store.delete("k")
    with pytest.raises(ObjectNotFound):
        await s.memory.get("k")


async def test_list_resumes_after_a_failed_page() -> None:
    s = Stack()
    names = [f"wal/{i:04d}" for i in range(50)]
    for n in names:
        await s.memory.put(n, b"x")
    s.faulty.arm("list", "error_after", times=2)  # yields a prefix of the listing, then fails
    assert [m.key async for m in s.store.list("wal/")] == names
    assert s.store.retries == 2


async def test_errors_outside_the_tree_propagate() -> None:
    s = Stack()
    with pytest.raises(ValueError):
        await s.store.get_range("k", 5, 1)
    assert issubclass(ConditionalConflict, StorageError) and ConditionalConflict.transient
