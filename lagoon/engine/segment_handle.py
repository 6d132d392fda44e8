"""Segments as a namespace's state and snapshots refer to them: by handle, not by reader.

A node's memory for segments is the memory LRU's budget (``cache.memory_bytes``,
``engine/segment_io.py``). If an open namespace's state held its segments' readers, an evicted
segment would stay in memory as long as the namespace stays open, and with many namespaces open
(or one large one and a stream of others) the process would grow past the budget. So the state
and its snapshots hold a ``SegmentHandle`` per segment: the segment's reference, the schema it is
opened for and the cache key. The reader itself lives in the memory LRU only:

- ``reader()`` finds it there (one dict lookup); an evicted segment is opened again through the
  cache (the disk cache, else the store; lazily, as a query opens it) on use.
- A query pins its snapshot's segments first (``in_use``, on the event loop, reopening evicted
  ones in parallel): a pinned entry is never evicted, and the handle keeps the reader while any
  query uses it, so eviction never takes a segment from under a running query, and a segment
  larger than the whole budget (never cached) is opened once per query, not once per call.
- A snapshot keeps the document source it built over the readers only while the LRU holds each
  of them (``hold``): when one is evicted the snapshot drops the source, so no idle snapshot keeps
  an evicted reader alive. A warm query reuses the source as before and pays only the pins.

Reopening from a thread that is not the event loop (a copy's batches) blocks that thread on the
loop, as lazily opened files do; on the event loop itself a reopen cannot wait, so code there pins
first (``in_use``). So does a write before resolving its group in a default-executor thread: the
reopen itself runs in such threads, and writes waiting in all of them would wait forever.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable

import numpy as np
import pyarrow as pa

from lagoon.engine.segment_io import SegmentIO, SourceHolder, _Entry
from lagoon.errors import InternalError
from lagoon.format.keys import NamespaceKeys
from lagoon.format.manifest import SegmentRef
from lagoon.index.segment.read import SegmentReader
from lagoon.schema import Schema


class SegmentHandle:
    """One segment of a namespace's manifest, opened for one schema; a ``SegmentLike`` whose
    reader the memory LRU holds (see the module docstring)."""

    def __init__(self, io: SegmentIO, keys: NamespaceKeys, ref: SegmentRef, schema: Schema) -> None:
        self.ref = ref
        self.schema = schema
        self._io = io
        self._keys = keys
        self._key = io.cache_key(keys.sibling(ref.owner), ref.id)
        self._loop = asyncio.get_running_loop()
        self._held: SegmentReader | None = None  # while queries pin it
        self._entry: _Entry | None = None  # its LRU entry, pinned with it
        self._pins = 0
        self._opening: asyncio.Future[SegmentReader] | None = None

    def ids(self) -> pa.Array:
        return self.reader().ids()

    def tombstones(self) -> np.ndarray:
        return self.reader().tombstones()

    def lookup(self, ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
        return self.reader().lookup(ids)

    def _lookup(self) -> tuple[SegmentReader | None, _Entry | None]:
        """The memory LRU's reader (for this schema) and its entry, or (None, None)."""
        entry = self._io.memory.get(self._key)
        reader = entry.reader if entry is not None else None
        if reader is None or (reader.schema is not self.schema and reader.schema != self.schema):
            return None, None
        return reader, entry

    def cached(self) -> SegmentReader | None:
        """The reader a running query holds, else the memory LRU's (for this schema), else None."""
        held = self._held
        return held if held is not None else self._lookup()[0]

    def reader(self) -> SegmentReader:
        """The segment's reader, opened again through the cache if it was evicted (from a thread
        other than the event loop: the loop pins first, ``in_use``)."""
        reader = self.cached()
        if reader is not None:
            return reader
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            raise InternalError(f"segment {self.ref.id} was evicted: pin it (in_use) before using it here")
        return asyncio.run_coroutine_threadsafe(self.open(), self._loop).result()

    async def open(self) -> SegmentReader:
        """The reader, opened again (once for concurrent callers) if no cache holds it."""
        reader = self.cached()
        if reader is not None:
            return reader
        if self._opening is None:
            opening = asyncio.ensure_future(self._io.open(self._keys, self.ref, self.schema, lazy=True))
            opening.add_done_callback(self._opened)
            self._opening = opening
        return await asyncio.shield(self._opening)

    def _opened(self, done: asyncio.Future[SegmentReader]) -> None:
        self._opening = None
        if not done.cancelled():
            done.exception()  # (retrieved: an awaiter that left would leave it unreported)

    def try_pin(self) -> bool:
        """``pin`` without waiting: False (nothing pinned) when no cache holds the reader."""
        if self._held is not None:  # (another query uses it now)
            self._pins += 1
            return True
        reader, entry = self._lookup()
        if reader is None:
            return False
        self._pin(reader, entry)
        return True

    async def pin(self) -> None:
        """Keep the reader while a query uses it (the LRU does not evict it meanwhile)."""
        if self.try_pin():
            return
        reader = await self.open()
        if self._held is not None:  # pinned by another query meanwhile
            self._pins += 1
            return
        entry = self._io.memory.get(self._key)
        self._pin(reader, entry if entry is not None and entry.reader is reader else None)

    def _pin(self, reader: SegmentReader, entry: _Entry | None) -> None:
        """The first pin: hold the reader, and pin its LRU entry (None: the LRU does not hold
        it, a segment larger than the budget)."""
        self._pins, self._held, self._entry = 1, reader, entry
        if entry is not None:
            entry.pins += 1

    def unpin(self) -> None:
        self._pins -= 1
        if self._pins > 0:
            return
        entry, self._held, self._entry = self._entry, None, None
        if entry is not None:
            entry.pins -= 1
            if entry.pins == 0:
                self._io.memory.unpinned()

    def hold(self, reader: SegmentReader, holder: SourceHolder) -> bool:
        """Tell ``holder`` to drop what it built over ``reader`` when the LRU evicts it. False
        when the LRU does not hold ``reader`` (then ``holder`` must not keep it)."""
        return self._io.memory.hold(self._key, reader, holder)


@contextlib.asynccontextmanager
async def in_use(segments: Iterable[object]) -> AsyncIterator[None]:
    """Pin every handle among ``segments`` (opening evicted ones again, in parallel) for the
    duration of the block; other segments (readers, damaged stand-ins) are left as they are."""
    pinned: list[SegmentHandle] = []
    evicted: list[SegmentHandle] = []
    for h in (s for s in segments if isinstance(s, SegmentHandle)):
        (pinned if h.try_pin() else evicted).append(h)  # (warm: no task, no wait)
    results: list[BaseException | None] = []
    if evicted:
        results = await asyncio.gather(*(h.pin() for h in evicted), return_exceptions=True)
        pinned += [h for h, r in zip(evicted, results, strict=True) if not isinstance(r, BaseException)]
    try:
        for r in results:
            if isinstance(r, BaseException):
                raise r
        yield
    finally:
        for h in pinned:
            h.unpin()


__all__ = ["SegmentHandle", "in_use"]
