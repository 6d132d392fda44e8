"""Create-if-absent and if-match races: exactly one winner per round, no lost update.

Run on memory, fs and s3 (SeaweedFS, a real S3 server, with no wrapper in between). Every racer
writes a body unique to its round and itself, as Lagoon's conditional writes do (a nonce): S3
etags are content hashes, so a round whose winner rewrote the previous round's bytes would leave
the etag unchanged and let a second if-match through (ABA), on AWS as on any S3.

SeaweedFS serialises contended conditional writes to one key on a lock it retries every second:
a round of 4 racers takes about 0.7 s, of 8 about 2 s. The default suite runs a few rounds of 4;
the slow suite many rounds of 8, and separate processes.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lagoon.storage import (
    AlreadyExists,
    FsStore,
    IfMatch,
    MemoryStore,
    ObjectStore,
    PreconditionFailed,
    PutMode,
)
from tests.conftest import S3Server
from tests.storage._workers import cas_increment, fs_race_worker, s3_race_worker
from tests.storage.conftest import make_s3_store

pytestmark = pytest.mark.anyio


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Make the GIL switch threads as often as possible, to shake out check-then-act windows."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


KINDS = ["memory", "fs", pytest.param("s3", marks=pytest.mark.s3)]


def make_store(kind: str, tmp_path: Path, request: pytest.FixtureRequest | None = None) -> ObjectStore:
    if kind == "s3":
        assert request is not None
        server: S3Server = request.getfixturevalue("s3_server")
        return make_s3_store(server, request.getfixturevalue("s3_prefix"))
    return MemoryStore() if kind == "memory" else FsStore(tmp_path / "store")


def body(r: int, i: int) -> bytes:
    return f"round {r} writer {i}".encode()


async def create_race(store: ObjectStore, key: str, writers: int, r: int = 0) -> list[int]:
    async def attempt(i: int) -> int | None:
        try:
            await store.put(key, body(r, i), PutMode.CREATE)
            return i
        except AlreadyExists:
            return None

    return [i for i in await asyncio.gather(*(attempt(i) for i in range(writers))) if i is not None]


async def if_match_race(store: ObjectStore, key: str, writers: int, r: int = 0) -> list[int]:
    etag = (await store.head(key)).etag or ""

    async def attempt(i: int) -> int | None:
        try:
            await store.put(key, body(r, i), IfMatch(etag))
            return i
        except PreconditionFailed:
            return None

    return [i for i in await asyncio.gather(*(attempt(i) for i in range(writers))) if i is not None]


# (kind, writers, rounds): SeaweedFS rounds cost ~0.7 s (4 racers) to ~2 s (8 racers)
CREATE_CASES = [
    ("memory", 16, 300),
    ("fs", 16, 300),
    pytest.param("s3", 4, 8, marks=pytest.mark.s3),
    pytest.param("s3", 8, 100, marks=[pytest.mark.s3, pytest.mark.slow]),
]
MATCH_CASES = [
    ("memory", 16, 100),
    ("fs", 16, 100),
    pytest.param("memory", 16, 300, marks=pytest.mark.slow),
    pytest.param("fs", 16, 300, marks=pytest.mark.slow),
    pytest.param("s3", 4, 8, marks=pytest.mark.s3),
    pytest.param("s3", 8, 100, marks=[pytest.mark.s3, pytest.mark.slow]),
]
ROUNDS = [100, pytest.param(300, marks=pytest.mark.slow)]


@pytest.mark.parametrize(("kind", "writers", "rounds"), CREATE_CASES)
async def test_create_race_coroutines(
    kind: str, writers: int, rounds: int, tmp_path: Path, fast_switching: None, request: pytest.FixtureRequest
) -> None:
    store = make_store(kind, tmp_path, request)
    for r in range(rounds):
        winners = await create_race(store, f"race/{r:04d}", writers, r)
        assert len(winners) == 1, f"round {r}: winners {winners}"
        assert await store.get(f"race/{r:04d}") == body(r, winners[0])
    await store.close()


@pytest.mark.parametrize(("kind", "writers", "rounds"), MATCH_CASES)
async def test_if_match_race_coroutines(
    kind: str, writers: int, rounds: int, tmp_path: Path, fast_switching: None, request: pytest.FixtureRequest
) -> None:
    store = make_store(kind, tmp_path, request)
    await store.put("cas", b"start")
    for r in range(rounds):
        winners = await if_match_race(store, "cas", writers, r)
        assert len(winners) == 1, f"round {r}: winners {winners}"
        assert await store.get("cas") == body(r, winners[0])
    await store.close()


@pytest.mark.parametrize("kind", KINDS)
async def test_cas_counter_has_no_lost_update(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    store = make_store(kind, tmp_path, request)
    await store.put("counter", b"0")
    writers, times = (8, 25) if kind != "s3" else (3, 4)  # contended S3 CAS: ~1 s per collision
    await asyncio.gather(*(cas_increment(store, "counter", times) for _ in range(writers)))
    assert (await store.get("counter")).split()[0] == str(writers * times).encode()
    await store.close()


@pytest.mark.parametrize("rounds", ROUNDS)
def test_fs_create_and_if_match_race_threads(tmp_path: Path, rounds: int, fast_switching: None) -> None:
    """4 threads, each with its own FsStore and event loop, 4 writers each: 16 per round."""
    root = tmp_path / "store"
    threads, per_thread = 4, 4
    barrier = threading.Barrier(threads)
    wins: dict[str, list[list[int]]] = {
        "create": [[] for _ in range(rounds)],
        "match": [[] for _ in range(rounds)],
    }
    lock = threading.Lock()
    FsStore(root)  # create the folder before the threads race for it

    def run(t: int) -> None:
        async def main() -> None:
            store = FsStore(root, sweep_grace_secs=3600)
            for r in range(rounds):
                barrier.wait()
                got = await create_race(store, f"race/{r:04d}", per_thread)
                with lock:
                    wins["create"][r] += [t * per_thread + i for i in got]
            barrier.wait()
            if t == 0:
                await store.put("cas", b"start")
            barrier.wait()
            for r in range(rounds):
                etag = (await store.head("cas")).etag or ""
                barrier.wait()  # every thread holds the same etag before anyone writes

                async def attempt(i: int, r: int = r, etag: str = etag) -> None:
                    try:
                        await store.put("cas", f"{r} {t} {i}".encode(), IfMatch(etag))
                        with lock:
                            wins["match"][r].append(t * per_thread + i)
                    except PreconditionFailed:
                        pass

                await asyncio.gather(*(attempt(i) for i in range(per_thread)))
                barrier.wait()  # all attempts of round r done before the next head
            await store.close()

        asyncio.run(main())

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert [len(w) for w in wins["create"]] == [1] * rounds
    assert [len(w) for w in wins["match"]] == [1] * rounds


@pytest.mark.parametrize(
    ("procs", "rounds", "increments"), [(3, 50, 15), pytest.param(4, 300, 50, marks=pytest.mark.slow)]
)
def test_fs_multiprocess_race(tmp_path: Path, procs: int, rounds: int, increments: int) -> None:
    """Spawned processes race CREATE in lockstep for some rounds, then CAS-increment one counter."""
    root = str(tmp_path / "store")
    store = FsStore(root)
    asyncio.run(store.put("counter", b"0"))
    outcome = race_in_processes(
        fs_race_worker, root, procs, rounds, increments, barrier_secs=60, wait_secs=120
    )
    check_race_outcome(store, outcome, procs, rounds, increments)


@pytest.mark.slow
@pytest.mark.s3
def test_s3_multiprocess_race(s3_server: S3Server, s3_prefix: str) -> None:
    """Spawned processes, each with its own S3 client, race CREATE in lockstep, then CAS-increment."""
    procs, rounds, increments = 4, 40, 5
    target = (s3_server.bucket, s3_prefix, s3_server.region, s3_server.endpoint)
    store = make_s3_store(s3_server, s3_prefix)
    asyncio.run(store.put("counter", b"0"))
    outcome = race_in_processes(
        s3_race_worker, target, procs, rounds, increments, barrier_secs=120, wait_secs=600
    )
    check_race_outcome(store, outcome, procs, rounds, increments)


Outcome = tuple[int, list[int], int]
"""What a race worker reports: its number, the rounds it won, its CAS conflicts."""


def race_in_processes(
    worker: Callable[..., None],
    target: Any,
    procs: int,
    rounds: int,
    increments: int,
    *,
    barrier_secs: float,
    wait_secs: float,
) -> list[Outcome]:
    """Run ``procs`` spawned ``worker`` processes (``tests/storage/_workers.py``) against the store
    ``target`` names, on one barrier (a dead one breaks it, not the suite), and collect what each
    reports; every process must exit 0 and none outlives the test."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(procs, timeout=barrier_secs)
    results = ctx.Queue()
    workers = [
        ctx.Process(target=worker, args=(target, w, rounds, increments, barrier, results))
        for w in range(procs)
    ]
    for p in workers:
        p.start()
    try:
        outcome = [results.get(timeout=wait_secs) for _ in workers]
        for p in workers:
            p.join(timeout=30)
            assert p.exitcode == 0
    finally:
        for p in workers:
            if p.is_alive():
                p.kill()
                p.join()
    return outcome


def check_race_outcome(
    store: ObjectStore, outcome: list[Outcome], procs: int, rounds: int, increments: int
) -> None:
    """Exactly one winner a round, whose bytes are stored, and no lost counter increment."""
    winners_per_round = [0] * rounds
    for _worker, wins, _conflicts in outcome:
        for r in wins:
            winners_per_round[r] += 1
    assert winners_per_round == [1] * rounds
    assert asyncio.run(store.get("counter")).split()[0] == str(procs * increments).encode()
    for worker, wins, _ in outcome:
        for r in wins:
            assert asyncio.run(store.get(f"race/{r:04d}")) == f"worker {worker}".encode()
