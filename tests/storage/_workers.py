"""Process entry points for the multi-process race tests (importable under ``spawn``)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from typing import Any

from lagoon.storage import AlreadyExists, FsStore, IfMatch, ObjectStore, PreconditionFailed, PutMode, S3Store


async def cas_increment(store: ObjectStore, key: str, times: int) -> int:
    """Add 1 to the integer at ``key`` ``times`` times by head/get/IfMatch; return CAS failures.

    The value carries a nonce after the number, so no two writes have the same bytes (an S3 etag
    is a content hash: equal bytes would give an equal etag, an ABA)."""
    conflicts = 0
    done = 0
    while done < times:
        meta = await store.head(key)  # etag first: a later get sees this version or a newer one
        value = int((await store.get(key)).split()[0])
        try:
            await store.put(key, f"{value + 1} {secrets.token_hex(6)}".encode(), IfMatch(meta.etag or ""))
            done += 1
        except PreconditionFailed:
            conflicts += 1
    return conflicts


def fs_race_worker(root: str, worker: int, rounds: int, increments: int, barrier: Any, results: Any) -> None:
    """Race CREATE on ``race/<round>`` in lockstep with the other processes, then CAS-increment."""
    race_worker(lambda: FsStore(root, sweep_grace_secs=3600), worker, rounds, increments, barrier, results)


def s3_race_worker(
    target: tuple[str, str, str, str], worker: int, rounds: int, increments: int, barrier: Any, results: Any
) -> None:
    """``fs_race_worker`` on S3: target is (bucket, prefix, region, endpoint)."""
    bucket, prefix, region, endpoint = target
    race_worker(
        lambda: S3Store(bucket, prefix=prefix, region=region, endpoint=endpoint),
        worker,
        rounds,
        increments,
        barrier,
        results,
    )


def race_worker(
    open_store: Callable[[], ObjectStore],
    worker: int,
    rounds: int,
    increments: int,
    barrier: Any,
    results: Any,
) -> None:
    async def main() -> tuple[list[int], int]:
        store = open_store()
        wins = []
        for r in range(rounds):
            barrier.wait()
            try:
                await store.put(f"race/{r:04d}", f"worker {worker}".encode(), PutMode.CREATE)
                wins.append(r)
            except AlreadyExists:
                pass
        conflicts = await cas_increment(store, "counter", increments)
        await store.close()
        return wins, conflicts

    wins, conflicts = asyncio.run(main())
    results.put((worker, wins, conflicts))
