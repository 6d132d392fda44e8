"""Create-if-absent and if-match races: exactly one winner per round, no lost update.

Run on memory and fs only. moto's conditional PUT is not atomic under concurrency (its handler
checks for the object, then writes it, with no lock between: check-then-act), so a race test on
raw moto tests moto. The s3 test here goes through ``FaultyStore``, whose per-key lock serialises
conditional PUTs, which is how simulations get a linearizable CAS over moto.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from lagoon.storage import (
    AlreadyExists,
    FaultyStore,
    FsStore,
    IfMatch,
    MemoryStore,
    ObjectStore,
    PreconditionFailed,
    PutMode,
)
from tests.conftest import MotoS3
from tests.storage._workers import cas_increment, fs_race_worker
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


def make_store(kind: str, tmp_path: Path) -> ObjectStore:
    return MemoryStore() if kind == "memory" else FsStore(tmp_path / "store")


async def create_race(store: ObjectStore, key: str, writers: int) -> list[int]:
    async def attempt(i: int) -> int | None:
        try:
            await store.put(key, f"writer {i}".encode(), PutMode.CREATE)
            return i
        except AlreadyExists:
            return None

    return [i for i in await asyncio.gather(*(attempt(i) for i in range(writers))) if i is not None]


async def if_match_race(store: ObjectStore, key: str, writers: int) -> list[int]:
    etag = (await store.head(key)).etag or ""

    async def attempt(i: int) -> int | None:
        try:
            await store.put(key, f"writer {i}".encode(), IfMatch(etag))
            return i
        except PreconditionFailed:
            return None

    return [i for i in await asyncio.gather(*(attempt(i) for i in range(writers))) if i is not None]


@pytest.mark.parametrize("kind", ["memory", "fs"])
async def test_create_race_coroutines(kind: str, tmp_path: Path, fast_switching: None) -> None:
    store = make_store(kind, tmp_path)
    for r in range(300):
        winners = await create_race(store, f"race/{r:04d}", 16)
        assert len(winners) == 1, f"round {r}: winners {winners}"
        assert await store.get(f"race/{r:04d}") == f"writer {winners[0]}".encode()
    await store.close()


ROUNDS = [100, pytest.param(300, marks=pytest.mark.slow)]


@pytest.mark.parametrize("rounds", ROUNDS)
@pytest.mark.parametrize("kind", ["memory", "fs"])
async def test_if_match_race_coroutines(kind: str, rounds: int, tmp_path: Path, fast_switching: None) -> None:
    store = make_store(kind, tmp_path)
    await store.put("cas", b"start")
    for r in range(rounds):
        winners = await if_match_race(store, "cas", 16)
        assert len(winners) == 1, f"round {r}: winners {winners}"
        assert await store.get("cas") == f"writer {winners[0]}".encode()
    await store.close()


@pytest.mark.parametrize("kind", ["memory", "fs"])
async def test_cas_counter_has_no_lost_update(kind: str, tmp_path: Path) -> None:
    store = make_store(kind, tmp_path)
    await store.put("counter", b"0")
    await asyncio.gather(*(cas_increment(store, "counter", 25) for _ in range(8)))
    assert await store.get("counter") == b"200"
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
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(procs, timeout=60)  # a dead worker breaks the barrier, not the suite
    results = ctx.Queue()
    workers = [
        ctx.Process(target=fs_race_worker, args=(root, w, rounds, increments, barrier, results))
        for w in range(procs)
    ]
    for p in workers:
        p.start()
    try:
        outcome = [results.get(timeout=120) for _ in workers]
        for p in workers:
            p.join(timeout=30)
            assert p.exitcode == 0
    finally:
        for p in workers:
            if p.is_alive():
                p.kill()
                p.join()
    winners_per_round = [0] * rounds
    for _worker, wins, _conflicts in outcome:
        for r in wins:
            winners_per_round[r] += 1
    assert winners_per_round == [1] * rounds
    assert asyncio.run(store.get("counter")) == str(procs * increments).encode()
    for worker, wins, _ in outcome:
        for r in wins:
            assert asyncio.run(store.get(f"race/{r:04d}")) == f"worker {worker}".encode()


@pytest.mark.s3
async def test_s3_create_race_serialised_by_faulty_store(moto_s3: MotoS3, s3_prefix: str) -> None:
    store = FaultyStore(make_s3_store(moto_s3, s3_prefix))  # no faults: only the per-key lock
    for r in range(30):
        winners = await create_race(store, f"race/{r:04d}", 8)
        assert len(winners) == 1, f"round {r}: winners {winners}"
    await store.close()
