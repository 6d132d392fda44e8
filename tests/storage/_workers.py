"""Process entry points for the multi-process fs race tests (importable under ``spawn``)."""

from __future__ import annotations

import asyncio
from typing import Any

from lagoon.storage import AlreadyExists, FsStore, IfMatch, ObjectStore, PreconditionFailed, PutMode


async def cas_increment(store: ObjectStore, key: str, times: int) -> int:
    """Add 1 to the integer at ``key`` ``times`` times by head/get/IfMatch; return CAS failures."""
    conflicts = 0
    done = 0
    while done < times:
        meta = await store.head(key)  # etag first: a later get sees this version or a newer one
        value = int(await store.get(key))
        try:
            await store.put(key, str(value + 1).encode(), IfMatch(meta.etag or ""))
            done += 1
        except PreconditionFailed:
            conflicts += 1
    return conflicts


def fs_race_worker(root: str, worker: int, rounds: int, increments: int, barrier: Any, results: Any) -> None:
    """Race CREATE on ``race/<round>`` in lockstep with the other processes, then CAS-increment."""

    async def main() -> tuple[list[int], int]:
        store = FsStore(root, sweep_grace_secs=3600)
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
