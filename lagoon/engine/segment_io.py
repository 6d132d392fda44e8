"""Moving segment files between the store and memory: parallel upload, cached and verified fetch.

Segments are immutable and their ids are never reused, so a segment's files can be cached by
``(org, namespace, segment id, file name)`` forever; the org in the key keeps tenants apart.

- Upload: every file is created with create-if-absent, in parallel. A fresh segment id cannot
  exist, so ``AlreadyExists`` only happens when an ambiguous attempt of ours landed: the bytes are
  read back and compared.
- Fetch: memory LRU (``cache.memory_bytes``) -> disk cache (only when ``cache.dir`` is set,
  ``cache.disk_bytes``) -> store. Every file is checked against the size and CRC-32C the manifest
  lists before it is used or cached; a disk entry that fails the check is deleted and refetched,
  never served. Disk fills write a temp file and rename it, so a crash never leaves a torn entry
  under its final name.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from lagoon import metrics
from lagoon.config import CacheSettings
from lagoon.errors import DataCorruption
from lagoon.format.framing import TRAILER_LEN
from lagoon.format.keys import NamespaceKeys
from lagoon.format.manifest import SegmentRef
from lagoon.schema import Schema
from lagoon.segment.build import BuiltSegment
from lagoon.segment.format import crc32c_of
from lagoon.segment.read import SegmentReader
from lagoon.storage.base import AlreadyExists, ObjectStore, PutMode

_PARALLELISM = 8
_TMP = ".tmp-"

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


class _MemoryLru:
    """Whole segments (all files) by cache key, bounded by total bytes. Thread-safe."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.used = 0
        self._items: OrderedDict[CacheKey, tuple[Files, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: CacheKey) -> Files | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: CacheKey, files: Files) -> None:
        size = sum(len(v) for v in files.values())
        if size > self.budget:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.used -= old[1]
            self._items[key] = (files, size)
            self.used += size
            while self.used > self.budget and self._items:
                _, (_, evicted) = self._items.popitem(last=False)
                self.used -= evicted


class _DiskCache:
    """Files under ``root/org/ns/segment/name``; LRU by mtime (touched on use), bounded by bytes."""

    def __init__(self, root: str, budget: int) -> None:
        self.root = Path(root) / "segments"
        self.budget = budget
        self._used: int | None = None
        self._lock = threading.Lock()
        self.corrupt = 0

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
        if len(data) > self.budget:
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
            if used > self.budget:
                self._used = self._evict()

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

    def _evict(self) -> int:
        files = sorted(self._files())
        used = sum(size for _, size, _ in files)
        target = self.budget * 0.9
        for _, size, path in files:
            if used <= target:
                break
            with contextlib.suppress(OSError):
                path.unlink()
                used -= size
        return used


class SegmentIO:
    """Upload and fetch segment files of any namespace of one store."""

    def __init__(self, store: ObjectStore, cache: CacheSettings | None = None) -> None:
        cache = cache or CacheSettings()
        self.store = store
        self.memory = _MemoryLru(cache.memory_bytes)
        self.disk = _DiskCache(cache.dir, cache.disk_bytes) if cache.dir else None

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
        self.memory.put(self.cache_key(keys, ref.id), dict(built.files))

    async def fetch(self, keys: NamespaceKeys, ref: SegmentRef) -> Files:
        """All files of a segment, verified against the manifest's sizes and checksums."""
        ckey = self.cache_key(keys, ref.id)
        hit = self.memory.get(ckey)
        if hit is not None:
            metrics.CACHE_HITS.labels(layer="memory").inc()
            return hit
        metrics.CACHE_MISSES.labels(layer="memory").inc()
        sem = asyncio.Semaphore(_PARALLELISM)

        async def one(name: str) -> tuple[str, bytes]:
            if self.disk is not None:
                data = await asyncio.to_thread(self.disk.load, ckey, ref, name)
                if data is not None:
                    metrics.CACHE_HITS.labels(layer="disk").inc()
                    return name, data
                metrics.CACHE_MISSES.labels(layer="disk").inc()
            key = keys.segment_file(ref.id, name)
            async with sem:
                data = await self.store.get(key)
            if not verify_file(ref, name, data):
                raise DataCorruption(f"{key}: size or checksum differs from the manifest")
            if self.disk is not None:
                await asyncio.to_thread(self.disk.store, ckey, name, data)
            return name, data

        files = dict(await asyncio.gather(*(one(n) for n in ref.files)))
        self.memory.put(ckey, files)
        return files

    async def open(self, keys: NamespaceKeys, ref: SegmentRef, schema: Schema) -> SegmentReader:
        files = await self.fetch(keys, ref)
        return await asyncio.to_thread(SegmentReader.from_files, ref, files, schema)


__all__ = ["SegmentIO", "verify_file"]
