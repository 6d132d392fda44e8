"""Shared parts of the cold-read tests (test_cold_reads, test_cold_text, test_cold_docs): a store
that adds a round-trip latency and records every request, the longest chain of sequential round
trips in a record, a node with empty caches over a store, the wait for its background hydration,
and the indexed full-text namespace two of them query."""

from __future__ import annotations

import asyncio
import builtins
import datetime as dt
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from lagoon.config import Settings
from lagoon.engine.database import Database
from lagoon.engine.indexer import index_namespace
from lagoon.index.text.corpus import corpus
from lagoon.storage.base import ObjectMeta, ObjectStore, PutMode, PutModeT
from lagoon.storage.memory import MemoryStore

from .helpers import KEYS, NS, components, make_settings

LATENCY = 0.03
TEXT_N = 12_000
TEXT_SCHEMA = {"text": {"type": "string", "full_text_search": True}, "tag": {"type": "int"}}
SMALL_LAZY_BYTES = 64 << 10
"""The lazy-open threshold the cold tests set, so their test-sized files open from their heads."""


@dataclass
class Call:
    op: str
    key: str
    start: float
    end: float
    nbytes: int


class TimedStore:
    """Delegates to ``inner`` after ``LATENCY`` seconds per request, recording every request."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.calls: list[Call] = []

    async def _timed(self, op: str, key: str, coro_fn, size=lambda r: 0):  # type: ignore[no-untyped-def]
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.sleep(LATENCY)
        try:
            result = await coro_fn()
        except Exception:  # a 404 is a round trip too
            self.calls.append(Call(op, key, start, loop.time(), 0))
            raise
        self.calls.append(Call(op, key, start, loop.time(), size(result)))
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
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.sleep(LATENCY)
        out = [m async for m in self.inner.list(prefix, start_after)]
        self.calls.append(Call("list", prefix, start, loop.time(), 0))
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


def round_trips(calls: list[Call]) -> int:
    """Length of the longest chain of requests each started after the previous one ended: the
    number of sequential round trips a caller waited for."""
    depth: list[int] = []
    ordered = sorted(calls, key=lambda c: c.end)
    for i, c in enumerate(ordered):
        before = [depth[j] for j in range(i) if ordered[j].end <= c.start]
        depth.append(1 + max(before, default=0))
    return max(depth, default=0)


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
    db = Database(timed, settings or make_settings(), components("cold"))  # type: ignore[arg-type]
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
