"""Commit routing between the serving processes of one node (engine/routing.py): each
namespace's writes, wherever they were received and validated, are committed by its owning
process; a write validated against a schema the owner no longer commits on is validated again;
an owner that is gone or stopping leaves the write to the process that received it; an owner
that goes away holding a write answers nothing that could be taken for an acknowledgement.

Two ``Database`` instances on one bucket, each with its ``CommitRouter`` on real Unix sockets in
one folder, stand for two serving processes (the server tests run real processes)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from lagoon.config import Settings
from lagoon.engine.components import Components
from lagoon.engine.database import Database
from lagoon.engine.nodelock import NodeCommitLocks
from lagoon.engine.routing import CommitRouter, owner_index
from lagoon.errors import InvalidRequest, Unavailable
from lagoon.format.keys import DEFAULT_ORG
from lagoon.format.wal import decode_entry
from lagoon.storage.fs import FsStore

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def owned_by(index: int, prefix: str = "ns") -> str:
    """A namespace name whose owner is process ``index`` of two."""
    return next(f"{prefix}{k}" for k in range(1000) if owner_index(DEFAULT_ORG, f"{prefix}{k}", 2) == index)


def writers_of(bucket: Path, namespace: str) -> list[str]:
    """The process that committed each WAL entry of ``namespace``, in seq order."""
    entries = sorted(
        (decode_entry(p.read_bytes()) for p in bucket.glob(f"**/{namespace}/wal/*.wal")), key=lambda e: e.seq
    )
    return [e.writer for e in entries]


async def ids_of(db: Database, namespace: str) -> set[Any]:
    snap = await db.snapshot(DEFAULT_ORG, namespace)  # strong: probes the bucket
    return set(snap.live_table().column("id").to_pylist())


class Node:
    def __init__(self, root: Path, commit_window_ms: float = 0.0) -> None:
        self.root = root
        self.bucket = root / "bucket"
        self.settings = Settings(
            manifest={"poll_interval_ms": 60_000},  # type: ignore[arg-type]
            server={"commit_window_ms": commit_window_ms},  # type: ignore[arg-type]
        )
        self.dbs: list[Database] = []

    async def process(self, index: int, *, routed: bool = True) -> Database:
        db = Database(FsStore(self.bucket, fsync=False), self.settings, Components(node_id=f"p{index}"))
        db.turns = NodeCommitLocks(self.root / "locks")
        if routed:
            await db.start_routing(CommitRouter(self.root / "route", index, 2))
        self.dbs.append(db)
        return db

    async def close(self) -> None:
        for db in self.dbs:
            if not db._closed:
                await db.close()
            if db.turns is not None:
                db.turns.close()


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    n = Node(tmp_path)
    yield n
    await n.close()


async def test_writes_received_by_any_process_are_committed_by_the_owner(node: Node) -> None:
    p0, p1 = await node.process(0), await node.process(1)
    ns = owned_by(0)
    await p1.write(ns, {"upsert_rows": [{"id": 0, "n": 0}]})

    async def writer(db: Database, first: int) -> None:
        for k in range(first, first + 80, 8):
            result = await db.write(ns, {"upsert_rows": [{"id": k, "n": k}, {"id": k + 1000, "n": k}]})
            assert result["rows_upserted"] == 2

    await asyncio.gather(*(writer((p0, p1)[w % 2], 1 + w) for w in range(8)))
    writers = writers_of(node.bucket, ns)
    assert set(writers) == {"p0"}  # one committer for the namespace on this node
    assert len(writers) < 81  # grouped: writes from both processes share entries
    assert p1.router is not None and p1.router.counts["forwarded"] == 41 and p1.router.counts["fallback"] == 0
    expected = {0} | set(range(1, 81)) | set(range(1001, 1081))
    assert await ids_of(p1, ns) == expected  # the receiver's strong read catches up
    assert await ids_of(p0, ns) == expected


async def test_a_write_checked_against_an_old_schema_is_checked_again(node: Node) -> None:
    p0, p1 = await node.process(0), await node.process(1)
    ns = owned_by(0)
    await p1.write(ns, {"upsert_rows": [{"id": 1, "n": 1}]})
    await p0.write(ns, {"upsert_rows": [{"id": 2, "n": 2, "tag": "red"}]})  # p1 has not seen "tag"
    with pytest.raises(InvalidRequest, match="tag"):
        await p1.write(ns, {"upsert_rows": [{"id": 3, "tag": 7}]})  # an int where the owner has a string
    result = await p1.write(ns, {"upsert_rows": [{"id": 4, "tag": "blue"}]})
    assert result["rows_upserted"] == 1
    snap = await p1.snapshot(DEFAULT_ORG, ns)
    assert (
        snap.schema.attributes["tag"].type
        == p0.handle(DEFAULT_ORG, ns).state.current().schema.attributes["tag"].type
    )
    rows = {r["id"]: r for r in snap.live_table().to_pylist()}
    assert set(rows) == {1, 2, 4} and rows[4]["tag"] == "blue"
    assert set(writers_of(node.bucket, ns)) == {"p0"}


async def test_a_schema_change_inside_a_group_sends_later_writes_back_to_be_checked(tmp_path: Path) -> None:
    """Requests validated by another process against the schema before an earlier request of
    the same group changed it are checked again against the changed one, not taken as they are
    (a commit window of 300 ms puts both into one group)."""
    node = Node(tmp_path, commit_window_ms=300)
    try:
        p0, p1 = await node.process(0), await node.process(1)
        ns = owned_by(0)
        await p0.write(ns, {"upsert_rows": [{"id": 1, "n": 1}]})
        await p1.write(ns, {"upsert_rows": [{"id": 2, "n": 2}]})
        first = asyncio.create_task(p0.write(ns, {"upsert_rows": [{"id": 3, "shade": "dark"}]}))
        await asyncio.sleep(0.05)  # queued first, in the group that is forming
        with pytest.raises(InvalidRequest, match="shade"):
            await p1.write(ns, {"upsert_rows": [{"id": 4, "shade": 9}]})
        assert (await first)["version"] == 3
        assert p1.router is not None and p1.router.counts["stale"] == 1
        assert await ids_of(p1, ns) == {1, 2, 3}
    finally:
        await node.close()


async def test_without_an_owner_the_receiver_commits(node: Node) -> None:
    p1 = await node.process(1)
    ns = owned_by(0)  # process 0 is not running
    result = await p1.write(ns, {"upsert_rows": [{"id": 1, "n": 1}]})
    assert result["rows_upserted"] == 1
    assert writers_of(node.bucket, ns) == ["p1"]
    assert p1.router is not None and p1.router.counts["fallback"] == 1
    p0 = await node.process(0)
    await asyncio.sleep(1.1)  # past RETRY_CONNECT_SECS: the receiver tries the owner again
    await p1.write(ns, {"upsert_rows": [{"id": 2, "n": 2}]})
    assert writers_of(node.bucket, ns) == ["p1", "p0"]
    assert await ids_of(p0, ns) == {1, 2}


async def test_a_stopping_owner_answers_what_it_took_and_leaves_the_rest(node: Node) -> None:
    p0, p1 = await node.process(0), await node.process(1)
    ns = owned_by(0)
    await p1.write(ns, {"upsert_rows": [{"id": 1, "n": 1}]})  # p1 holds a connection to p0 now
    await p0.close()  # drains: stops taking forwarded writes
    result = await p1.write(ns, {"upsert_rows": [{"id": 2, "n": 2}]})
    assert result["rows_upserted"] == 1
    assert writers_of(node.bucket, ns) == ["p0", "p1"]
    assert await ids_of(p1, ns) == {1, 2}


async def test_an_owner_gone_with_the_write_answers_unavailable(node: Node) -> None:
    """The owner took the write and its connection broke before it answered (the process died):
    the outcome is unknown, so the receiver neither acknowledges it nor commits it again."""
    p0, p1 = await node.process(0), await node.process(1)
    ns = owned_by(0)
    await p1.write(ns, {"upsert_rows": [{"id": 1, "n": 1}]})
    assert p0.router is not None
    taken = asyncio.Event()

    async def dies(*args: Any) -> dict[str, Any]:
        taken.set()
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    p0.router._handler = dies
    write = asyncio.create_task(p1.write(ns, {"upsert_rows": [{"id": 2, "n": 2}]}))
    await taken.wait()
    for peer in list(p0.router._peers):
        peer.transport.abort()  # as the kernel does for a killed process
    with pytest.raises(Unavailable, match="may or may not"):
        await write
    assert writers_of(node.bucket, ns) == ["p0"]  # not committed a second time by the receiver
    for task in list(p0.router._taken):  # the "dead" process's work
        task.cancel()
