"""Commit turns between the serving processes of one node (engine/nodelock.py): a waiting
committer is not overtaken by the one that just held the turn, the turn carries the head its
holder left, and committers that take turns on one namespace never lose a WAL slot to each other
(each reads the other's entries before resolving) while every acknowledged write is kept.

Several ``NodeCommitLocks`` on one folder stand for several processes: ``flock`` locks belong to
open file descriptions, so two instances in one process exclude each other as two processes do."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from lagoon.config import Settings
from lagoon.engine import nodelock
from lagoon.engine.components import Components
from lagoon.engine.database import Database
from lagoon.engine.nodelock import NodeCommitLocks
from lagoon.storage.fs import FsStore
from lagoon.storage.instrumented import InstrumentedStore

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_waiter_goes_before_the_holder_asks_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The holder lets the waiter go for as long as it takes: a stalled test process (a loaded
    # machine) must not turn the hand-off's time limit into the outcome.
    monkeypatch.setattr(nodelock, "HANDOFF_WAIT_SECS", 600.0)
    first, second = NodeCommitLocks(tmp_path), NodeCommitLocks(tmp_path)
    order: list[str] = []

    async def take(locks: NodeCommitLocks, name: str) -> None:
        async with locks.turn("ns"):
            order.append(name)

    async with first.turn("ns"):
        waiter = asyncio.create_task(take(second, "second"))
        await asyncio.sleep(0.02)  # the second committer is polling now
    await take(first, "first again")  # released and asked again at once
    await waiter
    assert order == ["second", "first again"]
    first.close()
    second.close()


async def test_the_turn_carries_the_head_its_holder_left(tmp_path: Path) -> None:
    first, second = NodeCommitLocks(tmp_path), NodeCommitLocks(tmp_path)
    async with first.turn("ns") as turn:
        assert turn.previous_head == -1
        turn.head = 7
    async with second.turn("ns") as turn:
        assert turn.previous_head == 7
    async with second.turn("other") as turn:
        assert turn.previous_head == -1  # per namespace
    with pytest.raises(RuntimeError):
        async with first.turn("ns") as turn:
            turn.head = 9
            raise RuntimeError("the commit failed")
    async with second.turn("ns") as turn:
        assert turn.previous_head == 7  # a turn that failed leaves the record as it was
    first.close()
    second.close()


async def test_committers_taking_turns_keep_every_write_and_lose_no_slot(tmp_path: Path) -> None:
    """Two "processes" (a Database each, one bucket, one lock folder), four writers each."""
    settings = Settings(manifest={"poll_interval_ms": 60_000})  # type: ignore[arg-type]
    nodes = []
    for name in ("p1", "p2"):
        db = Database(FsStore(tmp_path / "bucket", fsync=False), settings, Components(node_id=name))
        db.turns = NodeCommitLocks(tmp_path / "locks")
        nodes.append(db)
    await nodes[0].write("ns", {"upsert_rows": [{"id": 0, "n": 0}]})

    async def writer(db: Database, first: int) -> None:
        for k in range(first, first + 80, 8):
            await db.write("ns", {"upsert_rows": [{"id": k, "n": k}, {"id": k + 1000, "n": k}]})

    await asyncio.gather(*(writer(nodes[w % 2], 1 + w) for w in range(8)))
    committers = [db.handle("default", "ns").committer for db in nodes]
    assert all(c.commits > 0 for c in committers)  # both took turns
    assert [c.attempts for c in committers] == [c.commits for c in committers]  # no slot lost
    reader = Database(FsStore(tmp_path / "bucket", fsync=False), settings)
    snap = await reader.snapshot("default", "ns")
    ids = set(snap.live_table().column("id").to_pylist())
    assert ids == {0} | set(range(1, 81)) | set(range(1001, 1081))
    for db in (*nodes, reader):
        if db.turns is not None:
            db.turns.close()
        await db.close()


async def test_a_hint_far_ahead_costs_a_refresh_not_a_burst_of_reads(tmp_path: Path) -> None:
    """A record left by a namespace deleted since (or any wrong hint) far above the bucket's head:
    the commit reads the WAL by one listing, commits at the real next slot, and keeps the write."""
    settings = Settings()
    store = InstrumentedStore(FsStore(tmp_path / "bucket", fsync=False))
    db = Database(store, settings)
    db.turns = NodeCommitLocks(tmp_path / "locks")
    await db.write("ns", {"upsert_rows": [{"id": 1, "n": 1}]})
    async with NodeCommitLocks(tmp_path / "locks").turn(db.handle("default", "ns").state.keys.root) as turn:
        turn.head = 10_000
    gets = store.counts.get("get", 0)
    result = await db.write("ns", {"upsert_rows": [{"id": 2, "n": 2}]})
    assert result["version"] == 2
    assert store.counts.get("get", 0) - gets < 10
    snap = await db.snapshot("default", "ns")
    assert sorted(snap.live_table().column("id").to_pylist()) == [1, 2]
    db.turns.close()
    await db.close()


async def test_a_hint_from_a_bucket_that_went_back_reloads_instead_of_extending_the_view(
    tmp_path: Path,
) -> None:
    """p1 holds entries 1..3; the bucket is then recreated and p2 commits 1..5 of another history
    (its turn's hint: 5). p1's next commit must not fold p2's 4..5 onto its own 1..3: a patch of a
    document only p1's old view holds would write it back as a whole document."""
    settings = Settings(manifest={"poll_interval_ms": 60_000})  # type: ignore[arg-type]
    bucket, locks = tmp_path / "bucket", tmp_path / "locks"
    p1 = Database(FsStore(bucket, fsync=False), settings, Components(node_id="p1"))
    p1.turns = NodeCommitLocks(locks)
    for i in (1, 2, 3):
        await p1.write("ns", {"upsert_rows": [{"id": i, "n": i}]})
    shutil.rmtree(bucket)  # the bucket is recreated (or restored to before the namespace)
    p2 = Database(FsStore(bucket, fsync=False), settings, Components(node_id="p2"))
    p2.turns = NodeCommitLocks(locks)
    for i in range(100, 105):  # entries of another size at the same seqs
        await p2.write("ns", {"upsert_rows": [{"id": i, "n": i, "note": "x" * (50 + i)}]})
    result = await p1.write(  # 1 is only in p1's old view
        "ns", {"patch_rows": [{"id": 1, "n": -1}], "upsert_rows": [{"id": 7, "n": 7}]}
    )
    assert result["version"] == 6  # on the bucket's head
    reader = Database(FsStore(bucket, fsync=False), settings)
    snap = await reader.snapshot("default", "ns")
    assert sorted(snap.live_table().column("id").to_pylist()) == [7, 100, 101, 102, 103, 104]
    for db in (p1, p2, reader):
        if db.turns is not None:
            db.turns.close()
        await db.close()
