"""Copy operations (engine/copy.py): streamed in batches, state in the bucket, a failed or
abandoned copy leaves no destination, a retry joins the running copy, a cold node copies from
segments, the destination refuses other writes while the copy runs."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from lagoon.config import Settings
from lagoon.engine import copy as copy_mod
from lagoon.engine.components import Clock, Components
from lagoon.engine.database import Database
from lagoon.engine.indexer import index_namespace
from lagoon.errors import Conflict, InvalidRequest, NotFound
from lagoon.format.keys import OPERATIONS_PREFIX, NamespaceKeys
from lagoon.storage.memory import MemoryStore

pytestmark = pytest.mark.anyio

N = 250


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class AheadClock(Clock):
    """The real clock, ``ahead_ms`` later (another node whose view of time has moved on)."""

    def __init__(self, ahead_ms: int = 0) -> None:
        self.ahead_ms = ahead_ms

    def now_ms(self) -> int:
        return super().now_ms() + self.ahead_ms


def node(store: MemoryStore, name: str, clock: Clock | None = None) -> Database:
    comps = Components(clock=clock or Clock(), rng=random.Random(hash(name) & 0xFFFF), node_id=name)
    return Database(store, Settings(), comps)


def docs(n: int = N) -> list[dict[str, Any]]:
    return [{"id": i, "title": f"doc {i}", "n": i % 7, "v": [float(i), 1.0]} for i in range(n)]


async def fill(db: Database, ns: str = "src", n: int = N) -> None:
    schema = {"title": {"type": "string", "full_text_search": True}}
    await db.write(ns, {"upsert_rows": docs(n), "distance_metric": "euclidean_squared", "schema": schema})


async def rows(db: Database, ns: str) -> list[dict[str, Any]]:
    out = await db.query(ns, {"rank_by": ["id", "asc"], "top_k": 10_000, "include_attributes": True})
    return list(out["rows"])


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
async def db(store: MemoryStore) -> AsyncIterator[Database]:
    d = node(store, "a")
    yield d
    await d.close()


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(copy_mod, "MAX_BATCH_ROWS", 40)


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Batches wait for the event (set it to let the copy go on)."""
    event = threading.Event()
    real = copy_mod.read_batch

    def gated(*args: Any) -> dict[str, Any]:
        assert event.wait(30)
        return real(*args)

    monkeypatch.setattr(copy_mod, "read_batch", gated)
    yield event
    event.set()


async def wal_entries(store: MemoryStore, ns: str) -> int:
    return len([m async for m in store.list(NamespaceKeys.of("default", ns).wal_prefix)])


async def test_copy_is_streamed_in_batches_and_equal(
    db: Database, store: MemoryStore, small_batches: None
) -> None:
    await fill(db)
    result = await db.write("dst", {"copy_from_namespace": "src"})
    assert result["rows_affected"] == N and result["status"] == "OK"
    assert await rows(db, "dst") == await rows(db, "src")
    assert await wal_entries(store, "dst") >= N // 40 + 2  # claim, batches, finish
    schema = await db.get_schema("dst")
    assert schema["title"]["full_text_search"]
    bm25 = await db.query("dst", {"rank_by": ["title", "BM25", "doc 3"], "top_k": 1})
    assert bm25["rows"][0]["id"] == 3
    meta = await db.metadata("dst")
    assert meta["approx_row_count"] == N


async def test_async_copy_poll_from_another_node(db: Database, store: MemoryStore) -> None:
    await fill(db)
    token = (await db.start_copy("dst", {"copy_from_namespace": {"source_namespace": "src"}}))["token"]
    other = node(store, "b")
    try:
        for _ in range(1200):  # up to a minute on a busy machine
            status = await other.poll_copy("dst", token)
            if status["status"] == "finished":
                break
            assert status["status"] == "running" and "documents copied" in status["progress"]
            await asyncio.sleep(0.05)
        assert status["result"]["success"]["rows_affected"] == N
        assert status["finish_time"] >= status["start_time"]
        assert await rows(other, "dst") == await rows(db, "src")
        with pytest.raises(NotFound):
            await other.poll_copy("dst", "0" * 32)
        with pytest.raises(NotFound):
            await other.poll_copy("src", token)  # a token belongs to its destination
        with pytest.raises(NotFound):
            await other.poll_copy("dst", "../../x")
    finally:
        await other.close()


async def test_refused_copies_write_nothing(db: Database, store: MemoryStore) -> None:
    await fill(db)
    before = {m.key: m.etag async for m in store.list("")}
    cases: list[tuple[Any, type[Exception], str]] = [
        ({"source_namespace": "src", "source_region": "aws-us-east-1"}, InvalidRequest, "source_region"),
        ({"source_namespace": "src", "source_api_key": "k"}, InvalidRequest, "source_api_key"),
        ({"source_namespace": "src", "bogus": 1}, InvalidRequest, "bogus"),
        ({"source_namespace": 5}, InvalidRequest, "source_namespace"),
        ({"source_namespace": "nope"}, NotFound, "nope"),
        ({"source_namespace": "src", "dest_encryption": {"mode": "customer-managed", "key_name": "k"}},
         InvalidRequest, "s3 storage backend"),
    ]  # fmt: skip
    for spec, exc, word in cases:
        with pytest.raises(exc, match=word):
            await db.start_copy("dst", {"copy_from_namespace": spec})
    with pytest.raises(InvalidRequest, match="must be empty"):
        await db.start_copy("src", {"copy_from_namespace": "src"})
    with pytest.raises(InvalidRequest, match="combined"):
        await db.write("dst", {"copy_from_namespace": "src", "upsert_rows": [{"id": 1}]})
    assert [m.key async for m in store.list(OPERATIONS_PREFIX)] == []
    assert {m.key: m.etag async for m in store.list("")} == before


async def test_destination_refuses_writes_while_copying(db: Database, gate: threading.Event) -> None:
    await fill(db)
    token = (await db.start_copy("dst", {"source_namespace": "src"}))["token"]
    with pytest.raises(Conflict, match=f"operation {token}"):
        await db.write("dst", {"upsert_rows": [{"id": 1}]})
    gate.set()
    result = await db.copies.wait(await db.copies.read("default", "dst", token))
    assert result["rows_affected"] == N
    await db.write("dst", {"upsert_rows": [{"id": 10_000, "title": "new"}]})  # a normal namespace now
    assert len(await rows(db, "dst")) == N + 1


async def test_failed_copy_leaves_no_destination(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    await fill(db)

    def broken(*args: Any) -> dict[str, Any]:
        raise InvalidRequest("simulated failure while reading the source")

    monkeypatch.setattr(copy_mod, "read_batch", broken)
    with pytest.raises(InvalidRequest, match="simulated failure"):
        await db.write("dst", {"copy_from_namespace": "src"})
    with pytest.raises(NotFound):
        await db.metadata("dst")
    assert [n["id"] for n in (await db.list_namespaces())["namespaces"]] == ["src"]
    monkeypatch.undo()
    assert (await db.write("dst", {"copy_from_namespace": "src"}))["rows_affected"] == N  # may start again


async def test_retry_after_deadline_joins_the_running_copy(db: Database, gate: threading.Event) -> None:
    await fill(db)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(db.write("dst", {"copy_from_namespace": "src"}), 0.2)
    retry = asyncio.ensure_future(db.write("dst", {"copy_from_namespace": "src"}))
    await asyncio.sleep(0.1)
    assert not retry.done()
    gate.set()
    assert (await retry)["rows_affected"] == N
    again = await db.write("dst", {"copy_from_namespace": "src"})  # the same copy, finished: its result
    assert again["rows_affected"] == N
    assert await rows(db, "dst") == await rows(db, "src")
    await db.write("dst", {"upsert_rows": [{"id": 1}]})
    with pytest.raises(InvalidRequest, match="must be empty"):  # written since: not that copy any more
        await db.write("dst", {"copy_from_namespace": "src"})


async def test_copy_of_a_dead_node_is_settled_by_another(store: MemoryStore, gate: threading.Event) -> None:
    a = node(store, "a")
    await fill(a)
    token = (await a.start_copy("dst", {"source_namespace": "src"}))["token"]
    await asyncio.sleep(0.05)  # node a is stuck in its first batch
    b = node(store, "b", AheadClock(int(copy_mod.LEASE_SECS * 1000) + 5_000))
    try:
        status = await b.poll_copy("dst", token)
        assert status["status"] == "finished"
        err = status["result"]["error"]
        assert err["status_code"] == 503 and "start the copy again" in err["detail"]["error"]
        with pytest.raises(NotFound):
            await b.metadata("dst")
        gate.set()  # the zombie wakes up: its next batch finds its marker gone and stops
        await asyncio.sleep(0.3)
        assert (await a.poll_copy("dst", token))["result"] == status["result"]
        with pytest.raises(NotFound):
            await a.metadata("dst")
        assert (await b.write("dst", {"copy_from_namespace": "src"}))["rows_affected"] == N
    finally:
        gate.set()
        await a.close()
        await b.close()


async def test_cold_node_copies_from_segments(store: MemoryStore, small_batches: None) -> None:
    a = node(store, "a")
    await fill(a)
    await index_namespace(store, NamespaceKeys.of("default", "src"), a.settings, a.components, force=True)
    want = await rows(a, "src")
    await a.close()
    cold = node(store, "cold")
    try:
        assert (await cold.write("dst", {"copy_from_namespace": "src"}))["rows_affected"] == N
        assert await rows(cold, "dst") == want
    finally:
        await cold.close()


async def test_every_type_and_id_kind_copies_exactly(db: Database, small_batches: None) -> None:
    from tests.engine.ops.test_transfer import QUERIES, SCHEMA, doc

    await db.write("all", {"upsert_rows": [doc(i) for i in range(1, 60)], "schema": SCHEMA,
                           "distance_metric": "cosine_distance"})  # fmt: skip
    await db.write("all", {"deletes": [3, 4]})
    await db.write("dst", {"copy_from_namespace": "all"})
    assert await db.get_schema("dst") == await db.get_schema("all")
    for q in QUERIES:
        assert (await db.query("dst", q))["rows"] == (await db.query("all", q))["rows"]
    uuids = [{"id": str(__import__("uuid").UUID(int=i)), "t": f"x{i}"} for i in range(1, 50)]
    await db.write("u", {"upsert_rows": uuids})
    await db.write("ucp", {"copy_from_namespace": "u"})
    assert await rows(db, "ucp") == await rows(db, "u")


@pytest.mark.parametrize("backend", ["fs", pytest.param("s3", marks=pytest.mark.s3)])
async def test_operations_on_real_stores(backend: str, request: pytest.FixtureRequest, tmp_path: Any) -> None:
    """The record's create-if-absent and If-Match rewrites, the claim and the settle of a dead
    node's copy on the local folder and on a real S3 server (SeaweedFS)."""
    from lagoon.storage import FsStore
    from tests.storage.conftest import make_s3_store

    if backend == "fs":
        real: Any = FsStore(tmp_path / "store")
    else:
        real = make_s3_store(request.getfixturevalue("s3_server"), request.getfixturevalue("s3_prefix"))
    event = threading.Event()
    real_batch = copy_mod.read_batch

    def gated(*args: Any) -> Any:
        assert event.wait(30)
        return real_batch(*args)

    mp = pytest.MonkeyPatch()
    mp.setattr(copy_mod, "read_batch", gated)
    a = node(real, "a")
    b = node(real, "b", AheadClock(int(copy_mod.LEASE_SECS * 1000) + 5_000))
    try:
        await fill(a, n=60)
        token = (await a.start_copy("dst", {"source_namespace": "src"}))["token"]
        status = await b.poll_copy("dst", token)
        assert status["status"] == "finished" and status["result"]["error"]["status_code"] == 503
        with pytest.raises(NotFound):
            await b.metadata("dst")
        event.set()
        mp.undo()
        assert (await b.write("dst", {"copy_from_namespace": "src"}))["rows_affected"] == 60
        assert await rows(b, "dst") == await rows(a, "src")
        keys = [m.key async for m in real.list(OPERATIONS_PREFIX)]
        assert len(keys) == 2 and any(token in k for k in keys)
    finally:
        event.set()
        mp.undo()
        await a.close()
        await b.close()
