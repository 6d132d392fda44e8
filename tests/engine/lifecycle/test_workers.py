"""Several workers on one bucket: in-process asyncio tasks and separate processes, with a writer
stream, compaction forced often, and a worker frozen with SIGSTOP mid-compaction (reliability
T5/T6). Checked throughout: the latest manifest never references a missing object; at the end
the live documents equal the model and, after the grace period, no orphan is left.

Every test runs on a local folder (fs) and on a real S3 server (SeaweedFS, one fresh prefix per
test, the retrying store stack servers use)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lagoon import metrics
from lagoon.engine import manifest_store
from lagoon.engine.gc import collect_garbage
from lagoon.engine.queue import IndexingQueue
from lagoon.engine.scheduler import IndexerLoop
from lagoon.storage import RetryingStore, S3Store
from lagoon.storage.base import ObjectStore
from lagoon.storage.fs import FsStore
from tests.conftest import S3Server

from .helpers import (
    KEYS,
    NS,
    Model,
    components,
    dangling,
    db_on,
    live_view,
    make_settings,
    random_write,
    segment_ids_in_store,
    wal_seqs,
)

pytestmark = pytest.mark.anyio
REPO = Path(__file__).resolve().parents[3]
GRACE = 1.5


@dataclass
class Bucket:
    """Where a test's workers meet: ``open()`` builds a store in this process, ``url`` names it
    for a worker process (``lagoon.storage.store_from_url``)."""

    open: Callable[[], ObjectStore]
    url: str


@pytest.fixture(params=["fs", pytest.param("s3", marks=pytest.mark.s3)])
def bucket(request: pytest.FixtureRequest, tmp_path: Path) -> Bucket:
    if request.param == "fs":
        root = tmp_path / "bucket"
        return Bucket(lambda: FsStore(root, fsync=False), str(root))
    server: S3Server = request.getfixturevalue("s3_server")
    prefix: str = request.getfixturevalue("s3_prefix")
    query = urllib.parse.urlencode({"endpoint": server.endpoint, "region": server.region})
    return Bucket(
        lambda: RetryingStore(
            S3Store(server.bucket, prefix=prefix, region=server.region, endpoint=server.endpoint)
        ),
        f"s3://{server.bucket}/{prefix}?{query}",
    )


class Monitor:
    """Checks, every few ms, that the latest manifest references only objects that exist."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.problems: list[str] = []
        self.checks = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            m = await manifest_store.read_latest(self.store, KEYS)
            missing = await dangling(self.store, KEYS, m)
            # Objects of a version that was superseded may go once a grace period has passed
            # since; a check that took less than half of it must find everything.
            if missing and time.monotonic() - started < GRACE / 2:
                self.problems += missing
            self.checks += 1
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def write_stream(db: Any, model: Model, rng: random.Random, n: int, *, truncate_at: int = -1) -> None:
    for k in range(n):
        if k == truncate_at:
            await db.delete_namespace(NS)
            model.docs.clear()
            continue
        await random_write(db, model, rng, id_range=80, most_ids=6, delete_share=0.25, top_value=10_000)
        await asyncio.sleep(rng.uniform(0, 0.01))


async def wait_quiescent(store: ObjectStore, head: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    queue = IndexingQueue(store, components("q"))
    while time.monotonic() < deadline:
        m = await manifest_store.read_latest(store, KEYS)
        if m is not None and m.indexed_through >= head and not await queue.read():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("workers did not catch up with the writes")


async def final_gc(store: ObjectStore, settings: Any) -> None:
    """After quiescence and grace: what GC must have left is exactly the latest version's data."""
    await asyncio.sleep(GRACE + 0.3)
    for _ in range(2):
        await collect_garbage(store, KEYS, settings, components("final-gc"), retain_versions=1)
    latest = await manifest_store.read_latest(store, KEYS)
    assert latest is not None and latest.pending_delete == ()
    assert await segment_ids_in_store(store) == {s.id for s in latest.segments}  # no orphans
    assert [s for s in await wal_seqs(store) if s <= latest.indexed_through] == []
    assert await dangling(store) == []


async def test_three_workers_in_process(bucket: Bucket) -> None:
    settings = make_settings(gc_grace_secs=GRACE, compaction_fanin=2, poll_interval_secs=0.03)
    writer_store = bucket.open()
    db = db_on(writer_store, settings)
    committed_before = metrics.COMPACTION_TOTAL.labels(outcome="committed")._value.get()
    loops = [
        IndexerLoop(bucket.open(), settings, components(f"w{i}", seed=i), concurrency=2) for i in range(3)
    ]
    for loop in loops:
        loop.start()
    monitor = Monitor(bucket.open())
    monitor.start()
    model = Model()
    await write_stream(db, model, random.Random(42), 160, truncate_at=60)
    await db.enqueuer.close()
    await wait_quiescent(writer_store, db.handle("default", NS).state.head)
    assert await live_view(writer_store) == model.docs
    await asyncio.sleep(GRACE)  # let the loops' own GC run past the grace period too
    await asyncio.gather(*(loop.stop() for loop in loops))
    await monitor.stop()
    assert monitor.problems == [] and monitor.checks > 10
    assert metrics.COMPACTION_TOTAL.labels(outcome="committed")._value.get() > committed_before
    await final_gc(writer_store, settings)
    assert await live_view(writer_store) == model.docs


def _spawn(root: str, node: str, settings: dict[str, Any], log: Path, *extra: str) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:  # the child keeps its own descriptor
        return subprocess.Popen(
            [
                sys.executable,
                str(REPO / "tests/engine/lifecycle/worker_proc.py"),
                root,
                node,
                json.dumps(settings),
                *extra,
            ],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _events(log: Path) -> list[dict[str, Any]]:
    out = []
    for line in log.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


async def run_cluster(
    tmp_path: Path, bucket: Bucket, pause_at: str, *, workers: int = 3, rounds: int = 1
) -> list[dict[str, Any]]:
    """Worker processes + this process writing; worker 0 freezes at ``pause_at`` (SIGSTOP) and is
    resumed (SIGCONT) once the others moved the manifest on by 8+ versions and two grace periods
    passed; repeated ``rounds`` times. Returns worker 0's events after its last resume."""
    root = bucket.url
    indexer = {
        "flush_interval_secs": 0.01,
        "compaction_fanin": 2,
        "gc_grace_secs": GRACE,
        "poll_interval_secs": 0.05,
    }
    settings_dict = {"indexer": indexer, "manifest": {"poll_interval_ms": 20}}
    settings = make_settings(**indexer)
    store = bucket.open()
    db = db_on(store, settings)
    model = Model()
    rng = random.Random(7)
    await write_stream(db, model, rng, 5)  # the namespace exists before the workers start
    logs = [tmp_path / f"w{i}.log" for i in range(workers)]
    procs: list[subprocess.Popen[bytes]] = []
    monitor = Monitor(bucket.open())
    monitor.start()
    try:
        for rnd in range(rounds):
            if rnd == 0:
                procs.append(_spawn(root, "zombie", settings_dict, logs[0], pause_at))
                procs += [_spawn(root, f"w{i}", settings_dict, logs[i]) for i in range(1, workers)]
            else:  # a fresh zombie for the next round
                os.kill(procs[0].pid, signal.SIGTERM)
                assert procs[0].wait(timeout=30) == 0
                logs[0] = tmp_path / f"zombie{rnd}.log"
                procs[0] = _spawn(root, f"zombie{rnd}", settings_dict, logs[0], pause_at)
            deadline = time.monotonic() + 180
            while not any(e.get("msg") == "paused" for e in _events(logs[0])):
                assert time.monotonic() < deadline, f"the zombie never reached {pause_at}"
                assert procs[0].poll() is None, logs[0].read_text()
                await write_stream(db, model, rng, 3)
            frozen_at = await manifest_store.read_latest(store, KEYS)
            # None: the zombie froze in the namespace's very first build, before any commit
            frozen_version = frozen_at.version if frozen_at is not None else 0
            paused_since = time.monotonic()
            deadline = paused_since + 180
            seen = frozen_at is not None
            while True:  # the others move on: versions, compactions, GC past the grace period
                await write_stream(db, model, rng, 3)
                m = await manifest_store.read_latest(store, KEYS)
                # No manifest yet is only possible while nobody has committed the first build (the
                # zombie froze in it and the others are still building theirs); once one existed
                # the chain must never vanish.
                assert m is not None or not seen, "the manifest chain vanished"
                seen = seen or m is not None
                version = m.version if m is not None else 0
                assert time.monotonic() < deadline, f"the others never moved past v{frozen_version}"
                if version >= frozen_version + 8 and time.monotonic() - paused_since > GRACE * 2:
                    break
            os.kill(procs[0].pid, signal.SIGCONT)
            await write_stream(db, model, rng, 20)
        await db.enqueuer.close()
        await wait_quiescent(store, db.handle("default", NS).state.head)
        assert await live_view(store) == model.docs
        await asyncio.sleep(GRACE)
    finally:
        await monitor.stop()
        for p in procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGCONT)
                p.send_signal(signal.SIGTERM)
        codes = [p.wait(timeout=30) for p in procs]
    assert codes == [0] * len(procs), [log.read_text()[-2000:] for log in logs]
    assert monitor.problems == [], monitor.problems
    await final_gc(store, settings)
    assert await live_view(store) == model.docs
    await db.close()
    events = _events(logs[0])
    return events[[e.get("msg") for e in events].index("resumed") + 1 :]


async def test_worker_processes_with_a_frozen_compactor(tmp_path: Path, bucket: Bucket) -> None:
    after = await run_cluster(tmp_path, bucket, "compactor.before_commit")
    # The zombie's frozen compaction was rejected by the manifest CAS (never rebased, never won).
    outcome = next(e for e in after if e.get("msg") in ("compaction aborted", "compaction committed"))
    assert outcome["msg"] == "compaction aborted" and outcome["reason"] == "inputs changed", outcome


@pytest.mark.parametrize(
    "bucket", ["fs", pytest.param("s3", marks=[pytest.mark.s3, pytest.mark.slow])], indirect=True
)
async def test_worker_processes_with_a_frozen_garbage_collector(tmp_path: Path, bucket: Bucket) -> None:
    """Frozen after validating a delete batch: resumed much later, it deletes only what was
    already unreachable (the monitor and the final checks see nothing live missing)."""
    after = await run_cluster(tmp_path, bucket, "gc.before_delete")
    assert not any(e.get("level") == "error" for e in after)


@pytest.mark.slow
@pytest.mark.parametrize("pause_at", ["compactor.before_commit", "gc.before_delete", "indexer.after_upload"])
async def test_worker_processes_many_zombie_rounds(tmp_path: Path, bucket: Bucket, pause_at: str) -> None:
    await run_cluster(tmp_path, bucket, pause_at, workers=4, rounds=4)
