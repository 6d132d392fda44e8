"""Shared parts of the cold-read tests (test_cold_reads, test_cold_text, test_cold_docs,
test_cold_segments): a store that answers requests in rounds and records every request with its
round, the sequential round trips of a record, a node with empty caches over a store, the wait
for its background hydration, and the indexed full-text namespace two of them query."""

from __future__ import annotations

import asyncio
import builtins
import datetime as dt
import sys
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from lagoon.config import Settings
from lagoon.engine.database import Database
from lagoon.engine.indexer import index_namespace
from lagoon.index.text.corpus import corpus
from lagoon.storage.base import ObjectMeta, ObjectStore, PutMode, PutModeT
from lagoon.storage.memory import MemoryStore

from .helpers import KEYS, NS, components, make_settings

LATENCY = 0.03
"""The shortest round of a ``TimedStore`` (a round trip)."""
QUIET = 0.005
"""A round is answered once no request has joined it for this long (and every thread waits)."""
ROUND_LIMIT = 10.0
"""A round some engine thread never stops running through is answered anyway after this long."""
_LOOP_TURNS = 5
"""Loop iterations a request handed over by a thread takes to reach the store (a few awaits)."""
ENGINE_THREADS = ("lagoon-", "asyncio_")
"""Name prefixes of the threads that issue a node's requests (engine/executor.py, index/fanout.py,
``asyncio.to_thread``)."""
TEXT_N = 12_000
TEXT_SCHEMA = {"text": {"type": "string", "full_text_search": True}, "tag": {"type": "int"}}
SMALL_LAZY_BYTES = 64 << 10
"""The lazy-open threshold the cold tests set, so their test-sized files open from their heads."""


@dataclass
class Call:
    op: str
    key: str
    round: int
    """The round the store answered it in (``TimedStore``)."""
    nbytes: int


class TimedStore:
    """Delegates to ``inner``, answering requests in rounds, and records every request with the
    round that answered it.

    A round opens with the first request that finds none open and is answered once it has lasted
    ``LATENCY``, no request has joined it for ``QUIET`` and every engine thread (``ENGINE_THREADS``)
    waits (for work, or for a request or thread that has not finished: ``_waiting``). So a
    request issued before another's answer arrived shares its round (it could not depend on it),
    and one issued after the answer is in a later round, however late a loaded machine starts a
    thread: the number of rounds is the number of sequential round trips, counted by the
    requests' dependency structure rather than by wall-clock overlap. A round that finds some
    engine thread never waiting is answered after ``ROUND_LIMIT`` (``forced`` counts those).
    Background requests (manifest polls) join whichever round is open."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.calls: list[Call] = []
        self.rounds = 0
        self.forced = 0
        self._open: asyncio.Future[int] | None = None
        self._closer: asyncio.Task[None] | None = None
        self._joined = 0.0

    async def _answered(self) -> int:
        """Join the open round (or open one) and wait for it to be answered; its number."""
        loop = asyncio.get_running_loop()
        self._joined = loop.time()
        if self._open is None:
            self._open = loop.create_future()
            self._closer = loop.create_task(self._close(self._open))
        return await asyncio.shield(self._open)

    async def _close(self, round_: asyncio.Future[int]) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(LATENCY)
        limit = loop.time() + ROUND_LIMIT
        while not await self._settled():
            if loop.time() > limit:
                self.forced += 1
                break
            await asyncio.sleep(QUIET / 5)
        self._open = None
        self.rounds += 1
        round_.set_result(self.rounds)

    async def _settled(self) -> bool:
        """Quiet for ``QUIET``, every engine thread waiting, and still so once the loop has run
        what those threads handed it (a thread blocked on a request the loop has not started)."""
        loop = asyncio.get_running_loop()
        joined = self._joined
        if loop.time() - joined < QUIET or not _others_waiting():
            return False
        for _ in range(_LOOP_TURNS):
            await asyncio.sleep(0)
        return self._joined == joined and _others_waiting()

    async def _timed(self, op: str, key: str, coro_fn, size=lambda r: 0):  # type: ignore[no-untyped-def]
        answered = await self._answered()
        try:
            result = await coro_fn()
        except Exception:  # a 404 is a round trip too
            self.calls.append(Call(op, key, answered, 0))
            raise
        self.calls.append(Call(op, key, answered, size(result)))
        return result

    async def get(self, key: str) -> bytes:
        return await self._timed("get", key, lambda: self.inner.get(key), len)  # type: ignore[no-any-return]

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        return await self._timed("get_range", key, lambda: self.inner.get_range(key, start, end), len)  # type: ignore[no-any-return]

    async def get_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        return await self._timed(  # type: ignore[no-any-return]
            "get_ranges", key, lambda: self.inner.get_ranges(key, ranges), lambda r: sum(map(len, r))
        )

    async def head(self, key: str) -> ObjectMeta:
        return await self._timed("head", key, lambda: self.inner.head(key))  # type: ignore[no-any-return]

    async def put(self, key: str, data: bytes, mode: PutModeT = PutMode.OVERWRITE) -> ObjectMeta:
        return await self._timed("put", key, lambda: self.inner.put(key, data, mode))  # type: ignore[no-any-return]

    async def list(self, prefix: str, start_after: str | None = None) -> AsyncIterator[ObjectMeta]:
        answered = await self._answered()
        out = [m async for m in self.inner.list(prefix, start_after)]
        self.calls.append(Call("list", prefix, answered, 0))
        for m in out:
            yield m

    async def list_prefixes(
        self, prefix: str, start_after: str | None = None, limit: int | None = None
    ) -> builtins.list[str]:
        return await self._timed(  # type: ignore[no-any-return]
            "list_prefixes", prefix, lambda: self.inner.list_prefixes(prefix, start_after, limit)
        )

    async def delete(self, key: str) -> None:
        await self._timed("delete", key, lambda: self.inner.delete(key))

    async def now(self) -> dt.datetime:
        return await self.inner.now()

    async def close(self) -> None:
        pass


def _others_waiting() -> bool:
    """Whether every engine thread (query workers, fan-out helpers, the loop's executor) but the
    caller's is blocked (``_waiting``). Threads of other kinds never issue a node's requests."""
    me = threading.get_ident()
    engine = {t.ident for t in threading.enumerate() if t.name.startswith(ENGINE_THREADS)}
    frames = {i: f for i, f in sys._current_frames().items() if i in engine and i != me}
    return all(_waiting(f) for f in frames.values()) and not _claimed_workers(frames.values())


def _waiting(frame: FrameType) -> bool:
    """Whether the thread whose innermost frame is ``frame`` is blocked: a wait for a future or
    for futures not done yet (a parked store request, a fan-out's helpers), a pool worker between
    jobs with none queued, a query worker with no query queued, or a plain wait on a lock,
    condition or queue. Anything else runs."""
    f: FrameType | None = frame
    while f is not None:
        where = _where(f)
        if where == ("_base.py", "result"):
            return not f.f_locals["self"].done()
        if where == ("_base.py", "wait"):
            return not all(fut.done() for fut in f.f_locals["fs"])
        if where == ("executor.py", "_work"):  # idle in its condition unless a query is queued
            return frame.f_back is f and _where(frame) in _WAITS and f.f_locals["self"].queued() == 0
        f = f.f_back
    if _where(frame) == ("thread.py", "_worker"):
        return "work_item" not in frame.f_locals and frame.f_locals["work_queue"].empty()
    return _where(frame) in _WAITS


def _claimed_workers(frames: Iterable[FrameType]) -> bool:
    """Whether a pool has handed a job to a worker that still looks blocked in its queue (woken,
    not yet running): more workers wait in ``get`` than the pool counts idle."""
    blocked: Counter[ThreadPoolExecutor] = Counter()
    for f in frames:
        if _where(f) == ("thread.py", "_worker") and (pool := f.f_locals["executor_reference"]()) is not None:
            blocked[pool] += 1
    return any(n > pool._idle_semaphore._value for pool, n in blocked.items())


def _where(frame: FrameType) -> tuple[str, str]:
    return Path(frame.f_code.co_filename).name, frame.f_code.co_name


_WAITS = {("threading.py", "wait"), ("threading.py", "_wait_for_tstate_lock"), ("queue.py", "get")}
"""Innermost frames of a thread blocked in a lock, condition, event or queue (the C call itself
has no frame)."""


def round_trips(calls: list[Call]) -> int:
    """The sequential round trips behind ``calls``: the rounds that answered them."""
    return len({c.round for c in calls})


def cold_node(
    store: ObjectStore,
    *,
    settings: Settings | None = None,
    hydrate: bool = True,
    lazy_text: bool = False,
    lazy_docs: bool = False,
    lazy_bytes: int = SMALL_LAZY_BYTES,
) -> tuple[Database, TimedStore]:
    """A node with empty caches over ``store`` through a ``TimedStore`` (``settings``: the lifecycle
    tests' by default). ``hydrate``: whole files arrive in the background; ``lazy_text`` /
    ``lazy_docs``: text (and vector) files, and docs files, from ``lazy_bytes`` up open from their
    heads."""
    timed = TimedStore(store)
    db = Database(timed, settings or make_settings(), components("cold"))
    db.segment_io.hydrate = hydrate
    if lazy_text:
        db.segment_io.lazy_min_bytes = lazy_bytes
    if lazy_docs:
        db.segment_io.docs_lazy_min_bytes = lazy_bytes
    return db, timed


async def hydrated(db: Database, *, within_secs: float = 6.0) -> None:
    """Wait until the node's background fetches are done (fails past ``within_secs``)."""
    for _ in range(int(within_secs / 0.02)):
        if not db.segment_io.pending:
            return
        await asyncio.sleep(0.02)
    assert not db.segment_io.pending


async def indexed_text_store() -> tuple[MemoryStore, list[str]]:
    """``TEXT_N`` corpus documents indexed into one segment, plus an unindexed tail: a new
    document and an overwrite of an indexed one (shadowing a row)."""
    store = MemoryStore()
    settings = make_settings()
    db = Database(store, settings, components("writer"))
    texts = [d["text"] for d in corpus(TEXT_N, seed=3)]
    for lo in range(0, TEXT_N, 4000):
        rows = [{"id": i, "text": texts[i], "tag": i % 7} for i in range(lo, min(TEXT_N, lo + 4000))]
        await db.write(NS, {"upsert_rows": rows, "schema": TEXT_SCHEMA})
    await index_namespace(store, KEYS, settings, components("indexer"), force=True)
    await db.write(NS, {"upsert_rows": [{"id": TEXT_N, "text": texts[5] + " " + texts[6], "tag": 1}]})
    await db.write(NS, {"upsert_rows": [{"id": 7, "text": "replaced text", "tag": 1}]})
    await db.close()
    return store, texts
