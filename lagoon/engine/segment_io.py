"""Moving segment files between the store and memory: parallel upload, cached and verified fetch.

Segments are immutable and their ids are never reused, so a segment's files can be cached by
``(org, namespace, segment id, file name)`` forever; the org in the key keeps tenants apart.

- Upload: every file is created with create-if-absent, in parallel. A fresh segment id cannot
  exist, so ``AlreadyExists`` only happens when an ambiguous attempt of ours landed: the bytes are
  read back and compared.
- Fetch: memory LRU (``cache.memory_bytes``) -> disk cache (``cache.dir``, ``cache.disk_bytes``)
  -> store. The memory LRU keeps each segment as this node opened it: its non-vector files'
  bytes and the reader decoded from them, reused while the schema is the same. An entry is
  charged at what it holds in memory — the bytes, plus the reader's decoded documents (Arrow
  ``nbytes`` of the columns and batches decompressed from a version 2 ``docs`` file) and
  vectors (numpy ``nbytes``) — recomputed when the segment is opened, after each query over it
  and when a file arrives in the background, so the charged total (``lagoon_cache_bytes``)
  stays within the budget. Open namespaces refer to their segments by handle
  (``engine/segment_handle.py``), so the LRU is the only long-lived holder of a reader: an
  evicted segment's memory is freed although its namespace stays open, and it is opened again
  through the caches on its next query. Queries pin the entries they use (never evicted while
  pinned: the charge exceeds the budget by at most the running queries' segments), and what a
  snapshot built over a reader (its document source) is dropped when the reader leaves.
  Every file is checked against the size and CRC-32C the manifest lists before it is used or
  cached; a disk entry that fails the check is deleted and refetched, never served. Disk fills write a temp file and rename it, so a crash never leaves a torn entry
  under its final name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import tempfile
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from lagoon import metrics
from lagoon.config import CacheSettings, Settings
from lagoon.errors import DataCorruption, InternalError
from lagoon.format.framing import TRAILER_LEN
from lagoon.format.keys import NamespaceKeys
from lagoon.format.manifest import SegmentRef
from lagoon.format.segment import DOCS_FILE, DOCS_FORMAT_VERSION, crc32c_of, head_length
from lagoon.index.segment.build import BuiltSegment
from lagoon.index.segment.read import LazyFile, SegmentReader
from lagoon.schema import Schema
from lagoon.storage.base import AlreadyExists, ObjectStore, PutMode

_PARALLELISM = 8
_TMP = ".tmp-"
LAZY_MIN_BYTES = 1 << 20  # smaller vec and fts files are fetched whole
# smaller (version 2) docs files are fetched whole: their batches cost one more round trip after
# the query, which only pays when the file would take longer than that to transfer
DOCS_LAZY_MIN_BYTES = 4 << 20
HEAD_GUESS_BYTES = 64 << 10  # first ranged read of a vec file whose head length is not recorded
log = logging.getLogger("lagoon.segments")
_T = TypeVar("_T")

Files = dict[str, bytes]
CacheKey = tuple[str, str, str]


def verify_file(ref: SegmentRef, name: str, data: bytes) -> bool:
    """Does ``data`` match the size and checksum the manifest lists for this file? The checksum
    is the frame's: CRC-32C of every byte but the 4-byte trailer (docs/formats/segment.md)."""
    meta = ref.files.get(name)
    if meta is None or len(data) < TRAILER_LEN:
        return False
    if "size" in meta and len(data) != meta["size"]:
        return False
    if "crc32c" not in meta:
        return True
    return crc32c_of(np.frombuffer(data, np.uint8, count=len(data) - TRAILER_LEN)) == meta["crc32c"]


class SourceHolder(Protocol):
    """Something that keeps a document source built over cached readers (a snapshot): told to
    drop it when one of those readers leaves the memory LRU, so the reader's memory is freed."""

    def drop_source(self) -> None: ...


@dataclass(eq=False)
class _Entry:
    """One segment in the memory LRU: its non-vector files and the reader opened from them.

    ``pins``: segment handles whose queries use the reader now (a pinned entry is never
    evicted; counted on the event loop); ``holders``: what keeps a source built over the reader,
    told when the entry leaves the LRU."""

    files: Files
    reader: SegmentReader | None
    size: int = 0  # as last charged
    pins: int = 0
    holders: weakref.WeakSet[SourceHolder] = field(default_factory=weakref.WeakSet)

    def __post_init__(self) -> None:
        self.file_bytes = sum(len(v) for v in self.files.values())

    def resident_bytes(self) -> int:
        """What the entry holds in memory: the files' bytes and the reader's decoded data."""
        return self.file_bytes + (self.reader.resident_bytes() if self.reader is not None else 0)

    def release(self) -> None:
        """The entry left the LRU: whatever holds a source over its reader drops it."""
        for holder in list(self.holders):
            holder.drop_source()
        self.holders.clear()


class _MemoryLru:
    """Segments by cache key, charged at their resident bytes and bounded by ``budget``
    (least recently used first out; pinned entries stay, so ``used`` exceeds the budget by at
    most what running queries use). Thread-safe; an entry that leaves is ``release``d."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.used = 0
        self._items: OrderedDict[CacheKey, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self.report: Callable[[float], None] | None = None  # told ``used`` after every change

    def get(self, key: CacheKey) -> _Entry | None:
        with self._lock:
            entry = self._items.get(key)
            if entry is not None:
                self._items.move_to_end(key)
            return entry

    def put(self, key: CacheKey, files: Files, reader: SegmentReader | None) -> None:
        self._charge(key, _Entry(files, reader))

    def add_file(self, key: CacheKey, name: str, data: bytes) -> None:
        """Add a whole file to the segment's entry (a new entry when it has none; the same entry,
        with its pins and holders, when it has one)."""
        with self._lock:
            entry = self._items.get(key)
            if entry is not None:
                entry.files = {**entry.files, name: data}
                entry.file_bytes += len(data)
        self._charge(key, entry or _Entry({name: data}, None))

    def unpinned(self) -> None:
        """An entry's last pin went (``_Entry.pins``, counted on the event loop by the segment
        handles): an LRU left over budget meanwhile evicts now."""
        if self.used <= self.budget:
            return
        with self._lock:
            gone = self._shrink()
            if gone and self.report is not None:
                self.report(self.used)
        self._released(gone)

    def hold(self, key: CacheKey, reader: SegmentReader, holder: SourceHolder) -> bool:
        """Tell ``holder`` to drop its source when ``reader`` leaves the LRU. False when the LRU
        does not hold ``reader`` under ``key`` (then the holder must not keep the source)."""
        with self._lock:
            entry = self._items.get(key)
            if entry is None or entry.reader is not reader:
                return False
            entry.holders.add(holder)
            return True

    def recharge(self, key: CacheKey) -> None:
        """Charge the segment's entry (if cached) at what it holds now (its reader decodes more
        batches as queries ask for them)."""
        entry = self._items.get(key)  # (one dict read: atomic; _charge re-checks under the lock)
        if entry is not None and entry.resident_bytes() != entry.size:  # (mostly unchanged)
            self._charge(key, entry, touch=False)

    def _charge(self, key: CacheKey, entry: _Entry, *, touch: bool = True) -> None:
        """(Re)charge ``entry`` under ``key``: ``touch`` makes it the most recently used;
        without it (a recharge) it keeps its place, and nothing happens if it left meanwhile."""
        size = entry.resident_bytes()  # outside the lock: sums over the reader's batches
        gone: list[_Entry] = []
        with self._lock:
            old = self._items.get(key)
            if not touch and old is not entry:
                return
            if old is not None:
                self.used -= old.size
                if touch or size > self.budget:
                    del self._items[key]
                    if old is not entry:
                        gone.append(old)
            if size > self.budget:
                gone.append(entry)
            else:
                entry.size = size
                self._items[key] = entry  # a key still present (a recharge) keeps its place
                self.used += size
                gone += self._shrink()
            if self.report is not None:
                self.report(self.used)
        self._released(gone)

    def _shrink(self) -> list[_Entry]:
        """Evict least recently used unpinned entries until ``used`` fits the budget (under the
        lock); returns them, to be released outside it."""
        if self.used <= self.budget:
            return []
        victims: list[CacheKey] = []
        freed = 0
        for key, entry in self._items.items():
            if self.used - freed <= self.budget:
                break
            if entry.pins == 0:
                victims.append(key)
                freed += entry.size
        self.used -= freed
        return [self._items.pop(key) for key in victims]

    @staticmethod
    def _released(gone: list[_Entry]) -> None:
        for entry in gone:
            entry.release()


class _DiskCache:
    """Files under ``root/org/ns/segment/name``; LRU by mtime (touched on use), bounded by bytes.

    Segments of pinned namespaces (``pin``) are exempt from eviction while their sizes, in the
    order they were pinned, fit ``pinned_budget``; they do not count against ``budget``."""

    def __init__(self, root: str, budget: int, pinned_budget: int = 0) -> None:
        self.root = Path(root) / "segments"
        self.budget = budget
        self.pinned_budget = pinned_budget
        self._used: int | None = None
        self._lock = threading.Lock()
        self._pinned: dict[CacheKey, int] = {}  # segment -> its bytes, in pin order
        self.corrupt = 0

    def pin(self, key: CacheKey, nbytes: int) -> None:
        with self._lock:
            self._pinned.setdefault(key, nbytes)

    def unpin(self, key: CacheKey) -> None:
        with self._lock:
            self._pinned.pop(key, None)

    def pinned_of(self, org: str, ns: str) -> list[CacheKey]:
        with self._lock:
            return [k for k in self._pinned if k[0] == org and k[1] == ns]

    def _protected(self) -> tuple[set[Path], int]:
        """Folders of the pinned segments that fit the pinned budget, and their bytes."""
        dirs: set[Path] = set()
        total = 0
        for (org, ns, seg), nbytes in self._pinned.items():
            if total + nbytes > self.pinned_budget:
                continue
            total += nbytes
            dirs.add(self.root / org / ns / seg)
        return dirs, total

    def _path(self, key: CacheKey, name: str) -> Path:
        org, ns, seg = key
        return self.root / org / ns / seg / name

    def load(self, key: CacheKey, ref: SegmentRef, name: str) -> bytes | None:
        path = self._path(key, name)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        if not verify_file(ref, name, data):
            self.corrupt += 1
            with contextlib.suppress(OSError):
                path.unlink()
            with self._lock:
                if self._used is not None:
                    self._used -= len(data)
            return None
        with contextlib.suppress(OSError):
            os.utime(path)
        return data

    def store(self, key: CacheKey, name: str, data: bytes) -> None:
        if len(data) > self.budget and not (key in self._pinned and len(data) <= self.pinned_budget):
            return
        path = self._path(key, name)
        tmp = path.parent / f"{_TMP}{secrets.token_hex(8)}"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError:  # disk full or unwritable: caching is best effort
            with contextlib.suppress(OSError):
                tmp.unlink()
            return
        with self._lock:
            used = self._scan() if self._used is None else self._used + len(data)
            self._used = used
            protected, protected_bytes = self._protected()
            if used > self.budget + protected_bytes:
                self._used = self._evict(protected)

    def _files(self) -> list[tuple[float, int, Path]]:
        out = []
        for dirpath, _, names in os.walk(self.root):
            for n in names:
                p = Path(dirpath) / n
                try:
                    st = p.stat()
                except OSError:
                    continue
                out.append((st.st_mtime, st.st_size, p))
        return out

    def _scan(self) -> int:
        return sum(size for _, size, _ in self._files())

    def _evict(self, protected: set[Path]) -> int:
        """Delete the least recently used unprotected files down to 90 % of the budget; returns
        the bytes left on disk (protected ones included)."""
        files = sorted(self._files())
        used = sum(size for _, size, _ in files)
        kept = sum(size for _, size, path in files if path.parent in protected)
        unprotected = used - kept
        target = self.budget * 0.9
        for _, size, path in files:
            if unprotected <= target:
                break
            if path.parent in protected:
                continue
            with contextlib.suppress(OSError):
                path.unlink()
                unprotected -= size
        return unprotected + kept


class SegmentIO:
    """Upload and fetch segment files of any namespace of one store."""

    def __init__(
        self, store: ObjectStore, cache: CacheSettings | None = None, *, cache_dir: str | None = None
    ) -> None:
        """``cache_dir`` (default ``cache.dir``; ``resolve_cache_dir`` gives the documented
        default for a whole configuration) enables the disk cache."""
        cache = cache or CacheSettings()
        self.store = store
        self.memory = _MemoryLru(cache.memory_bytes)
        disk_dir = cache.dir if cache_dir is None else cache_dir
        self.disk = _DiskCache(disk_dir, cache.disk_bytes, cache.max_pinned_bytes) if disk_dir else None
        self._warming: set[CacheKey] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.hydrate = True  # fetch lazily opened vec files whole in the background
        self.lazy_min_bytes = LAZY_MIN_BYTES
        self.docs_lazy_min_bytes = DOCS_LAZY_MIN_BYTES
        self._inflight: dict[tuple[str, str, str, str], asyncio.Future[bytes]] = {}

    def report_metrics(self, layer: str = "memory") -> None:
        """Export the memory cache's charged bytes and budget (``lagoon_cache_bytes``,
        ``lagoon_cache_budget_bytes``) under ``layer``: the serving ``Database`` calls it
        (``memory``), as does an indexer loop with a cache of its own (``indexer``); short-lived
        instances (repair, one-off index builds) do not."""
        self.memory.report = metrics.cache_reporter(layer, self.memory.budget)
        self.memory.report(self.memory.used)

    @staticmethod
    def cache_key(keys: NamespaceKeys, segment_id: str) -> CacheKey:
        return (keys.org, keys.namespace, segment_id)

    async def upload(self, keys: NamespaceKeys, built: BuiltSegment) -> None:
        """Create every file of ``built`` (in parallel); then keep it in the memory cache."""
        sem = asyncio.Semaphore(_PARALLELISM)
        ref: SegmentRef = built.ref

        async def put(name: str, data: bytes) -> None:
            key = keys.segment_file(ref.id, name)
            async with sem:
                try:
                    await self.store.put(key, data, PutMode.CREATE)
                except AlreadyExists:
                    if await self.store.get(key) != data:
                        raise DataCorruption(
                            f"{key}: segment id collision (the key holds other bytes)"
                        ) from None

        await asyncio.gather(*(put(n, d) for n, d in built.files.items()))
        ckey = self.cache_key(keys, ref.id)
        self.memory.put(ckey, _memory_files(built.files), None)
        if self.disk is not None:  # this node built it: likely the next to read it
            for name, data in built.files.items():
                await asyncio.to_thread(self.disk.store, ckey, name, data)

    async def _file(self, keys: NamespaceKeys, ref: SegmentRef, name: str) -> bytes:
        """One whole file: disk cache, else the store (then filled into the disk cache)."""
        keys = keys.sibling(ref.owner)  # a branch reads its parent's segments where they are
        ckey = self.cache_key(keys, ref.id)
        if self.disk is not None:
            data = await asyncio.to_thread(self.disk.load, ckey, ref, name)
            if data is not None:
                metrics.CACHE_HITS.labels(layer="disk").inc()
                return data
            metrics.CACHE_MISSES.labels(layer="disk").inc()
        key = keys.segment_file(ref.id, name)
        data = await self.store.get(key)
        if not verify_file(ref, name, data):
            raise DataCorruption(f"{key}: size or checksum differs from the manifest")
        if self.disk is not None:
            await asyncio.to_thread(self.disk.store, ckey, name, data)
        return data

    async def open(
        self, keys: NamespaceKeys, ref: SegmentRef, schema: Schema, *, lazy: bool = False
    ) -> SegmentReader:
        """Open a segment, its files verified against the manifest's sizes and checksums.

        Files come from the memory LRU (which keeps a segment's non-vector files: the reader
        uses them without copying), the disk cache, or the store. Vector files are never kept in
        the memory LRU: the index holds them decoded. With ``lazy`` (the query path), a large
        ``vec``, (version 2) ``fts`` or (version 2) ``docs`` file that no cache holds is opened from
        its head (one ranged GET, in parallel with the other files): queries then fetch only the
        cluster blocks they probe, the postings pages of their terms, or the batches of the rows
        they return, while the whole file is fetched in the background and handed to the reader
        (and the disk cache)."""
        keys = keys.sibling(ref.owner)  # a branch reads its parent's segments where they are
        ckey = self.cache_key(keys, ref.id)
        entry = self.memory.get(ckey)
        if entry is not None:
            metrics.CACHE_HITS.labels(layer="memory").inc()
            reader = entry.reader
            if reader is not None and reader.schema == schema and (lazy or not reader.reads_store):
                self.memory.recharge(ckey)
                return reader  # opened for this schema already (whole, when asked so): nothing to decode
        else:
            metrics.CACHE_MISSES.labels(layer="memory").inc()
        cached = entry.files if entry is not None else {}
        loop = asyncio.get_running_loop()

        async def one(name: str) -> tuple[str, bytes | LazyFile]:
            if name in cached:
                return name, cached[name]
            size = ref.files[name].get("size")
            if lazy and isinstance(size, int) and size >= self._lazy_threshold(ref, name):
                if self.disk is not None:
                    data = await asyncio.to_thread(self.disk.load, ckey, ref, name)
                    if data is not None:
                        metrics.CACHE_HITS.labels(layer="disk").inc()
                        return name, data
                    metrics.CACHE_MISSES.labels(layer="disk").inc()
                head = await self._head(keys, ref, name, size)
                if head is not None:  # (vec files before heads, v1 fts files: read whole)
                    return name, LazyFile(head, _Blocks(self, loop, keys, ref, name))
            return name, await self._file(keys, ref, name)

        opened: dict[str, bytes | LazyFile] = dict(await asyncio.gather(*(one(n) for n in ref.files)))
        reader = await asyncio.to_thread(SegmentReader.from_files, ref, opened, schema)
        self.memory.put(ckey, _memory_files(opened), reader)
        if (reader.lazy_vector_files() or reader.lazy_text_files() or reader.lazy_docs()) and self.hydrate:
            self._background(self._hydrate(keys, ref, reader))
        return reader

    def _lazy_threshold(self, ref: SegmentRef, name: str) -> float:
        """The size from which a file is opened from its head: vec and fts files, and docs files
        of version 2 (the manifest's ``info.files.docs.format``; version 1 has no head)."""
        if name.startswith(("vec.", "fts.")):
            return self.lazy_min_bytes
        info = ((ref.info or {}).get("files") or {}).get(name) or {}
        if name == DOCS_FILE and info.get("format") == DOCS_FORMAT_VERSION:
            return self.docs_lazy_min_bytes
        return float("inf")

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` as a task this object tracks (``pending``) and cancels on ``close``."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _head(self, keys: NamespaceKeys, ref: SegmentRef, name: str, size: int) -> bytes | None:
        """The checksummed head of a ``vec`` or ``fts`` file: one ranged GET when the manifest records its
        length (``info.files[name].head_bytes``), else a 64 KiB read and, if the head is longer,
        a second one. None when the file has no such head."""
        keys = keys.sibling(ref.owner)  # a branch reads its parent's segments where they are
        key = keys.segment_file(ref.id, name)
        hint = ((ref.info or {}).get("files") or {}).get(name, {}).get("head_bytes")
        first = hint if isinstance(hint, int) and 0 < hint <= size else min(size, HEAD_GUESS_BYTES)
        head = await self.store.get_range(key, 0, first)
        n = head_length(head, what=f"{key} (head)")
        if n is None:
            return None
        if n > len(head):
            if n > size:
                raise DataCorruption(f"{key}: head length {n} exceeds the file's {size} bytes")
            head += await self.store.get_range(key, len(head), n)
        return head

    async def whole(self, keys: NamespaceKeys, ref: SegmentRef, name: str) -> bytes:
        """One whole file (verified); concurrent callers share one fetch."""
        keys = keys.sibling(ref.owner)  # a branch reads its parent's segments where they are
        fkey = (*self.cache_key(keys, ref.id), name)
        fut = self._inflight.get(fkey)
        if fut is None:
            fut = self._inflight[fkey] = asyncio.ensure_future(self._file(keys, ref, name))
            fut.add_done_callback(lambda _f: self._inflight.pop(fkey, None))
        return await asyncio.shield(fut)

    async def ranges(
        self, keys: NamespaceKeys, name: str, ref: SegmentRef, ranges: list[tuple[int, int]]
    ) -> list[bytes]:
        keys = keys.sibling(ref.owner)  # a branch reads its parent's segments where they are
        key = keys.segment_file(ref.id, name)
        return await self.store.get_ranges(key, ranges)

    async def _hydrate(self, keys: NamespaceKeys, ref: SegmentRef, reader: SegmentReader) -> None:
        """Fetch the whole of every lazily opened vector and text file (through the disk cache)
        and hand it to its index. Failures are logged; queries keep using ranged reads."""
        keys = keys.sibling(ref.owner)  # a branch reads its parent's segments where they are
        try:
            for name, vi in reader.lazy_vector_files().items():
                data = await self.whole(keys, ref, name)
                await asyncio.to_thread(vi.hydrate, data)
            for name in reader.lazy_text_files():
                data = await self.whole(keys, ref, name)
                await asyncio.to_thread(reader.hydrate_text, name, data)
                self._remember(keys, ref, name, data)
            if reader.lazy_docs():
                data = await self.whole(keys, ref, DOCS_FILE)
                await asyncio.to_thread(reader.hydrate_docs, data)
                self._remember(keys, ref, DOCS_FILE, data)
            self.memory.recharge(self.cache_key(keys, ref.id))  # its vectors are whole now too
        except asyncio.CancelledError:
            raise
        except Exception as e:  # background work: log it, never crash the node
            log.warning("segment_hydrate_failed", extra={"segment": ref.id, "error": repr(e)})

    def _remember(self, keys: NamespaceKeys, ref: SegmentRef, name: str, data: bytes) -> None:
        """Add a whole file that arrived in the background to the segment's memory LRU entry."""
        self.memory.add_file(self.cache_key(keys, ref.id), name, data)

    def recharge(self, keys: NamespaceKeys, refs: Sequence[SegmentRef]) -> None:
        """Charge these segments' memory LRU entries at what they hold now (after a query: their
        readers may have decoded more document batches)."""
        for ref in refs:
            self.memory.recharge(self.cache_key(keys.sibling(ref.owner), ref.id))

    def pin(self, keys: NamespaceKeys, refs: Sequence[SegmentRef], pinned: bool) -> None:
        """Keep (or stop keeping) these segments of a pinned namespace on disk: they are exempt
        from eviction up to ``cache.max_pinned_bytes``, and files not yet on disk are fetched in
        the background. Without a disk cache this does nothing."""
        disk = self.disk
        if disk is None:
            return
        current = {self.cache_key(keys.sibling(ref.owner), ref.id) for ref in refs}
        for stale in disk.pinned_of(keys.org, keys.namespace):
            if stale not in current or not pinned:  # compacted away, or unpinned
                disk.unpin(stale)
                self._warming.discard(stale)
        for ref in refs:
            ckey = self.cache_key(keys.sibling(ref.owner), ref.id)
            if not pinned:
                disk.unpin(ckey)
                self._warming.discard(ckey)
                continue
            disk.pin(ckey, ref.bytes)
            if ckey in self._warming:
                continue
            self._warming.add(ckey)
            self._background(self._warm(keys, ref))

    async def _warm(self, keys: NamespaceKeys, ref: SegmentRef) -> None:
        """Every file of a pinned segment into the disk cache (already there: just verified)."""
        keys = keys.sibling(ref.owner)  # a branch reads its parent's segments where they are
        try:
            for name in ref.files:
                await self._file(keys, ref, name)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # background work: log it; the next manifest version retries
            self._warming.discard(self.cache_key(keys, ref.id))
            log.warning("segment_warm_failed", extra={"segment": ref.id, "error": repr(e)})

    @property
    def pending(self) -> int:
        """Background whole-file fetches still running."""
        return len(self._tasks)

    async def close(self) -> None:
        """Stop background fetches."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _memory_files(files: Mapping[str, bytes | LazyFile]) -> Files:
    """What the memory LRU keeps of a segment: its whole non-vector files (a reader's docs, fts
    and flt structures are views over these bytes; vectors are held decoded by the index)."""
    return {n: d for n, d in files.items() if isinstance(d, bytes) and not n.startswith("vec.")}


def resolve_cache_dir(settings: Settings) -> str | None:
    """The disk cache folder of a configuration: ``cache.dir``, or when empty
    ``<system temp dir>/lagoon-cache`` for object-store backends and none for ``fs`` and
    ``memory`` (their files are already local or in memory)."""
    if settings.cache.dir:
        return settings.cache.dir
    if settings.storage.backend == "s3":
        return str(Path(tempfile.gettempdir()) / "lagoon-cache")
    return None


class _Blocks:
    """``BlockSource`` of a lazily opened ``vec``, ``fts`` or ``docs`` file: blocking calls from a query thread,
    served by the node's event loop."""

    def __init__(
        self, io: SegmentIO, loop: asyncio.AbstractEventLoop, keys: NamespaceKeys, ref: SegmentRef, name: str
    ) -> None:
        self._io, self._loop, self._keys, self._ref, self._name = io, loop, keys, ref, name

    def ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        return self._call(self._io.ranges(self._keys, self._name, self._ref, list(ranges)))

    def whole(self) -> bytes:
        return self._call(self._io.whole(self._keys, self._ref, self._name))

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            coro.close()
            raise InternalError("segment blocks must be fetched from a query thread, not the event loop")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()


__all__ = ["SegmentIO", "resolve_cache_dir", "verify_file"]
