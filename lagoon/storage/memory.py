"""In-memory object store: the reference semantics, for unit tests and simulations.

Objects live in a dict. Etags are a store-wide counter, so every write gets a new etag even when
the bytes are the same (S3 would give equal content the same etag; no caller may rely on either).

Invariants:
- every mutation runs check-and-set with no ``await`` in between and under a ``threading.Lock``,
  so CREATE and IfMatch are atomic across coroutines and across threads;
- each operation first yields to the event loop once (``asyncio.sleep(0)``), so concurrent
  coroutines really interleave between operations, as they would against a network store;
- the clock is injectable (a callable returning an aware UTC datetime); ``now()`` and every
  ``last_modified`` come from it, so a simulation can drive time.
"""

from __future__ import annotations

import asyncio
import builtins
import datetime as dt
import itertools
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from lagoon.storage.base import (
    AlreadyExists,
    IfMatch,
    ObjectMeta,
    ObjectNotFound,
    PreconditionFailed,
    PutMode,
    PutModeT,
    check_range,
    validate_key,
    validate_prefix,
)

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True, slots=True)
class _Object:
    data: bytes
    meta: ObjectMeta


class MemoryStore:
    """Dict-backed ``ObjectStore``. Thread-safe; contents vanish with the instance."""

    def __init__(self, *, clock: Clock | None = None) -> None:
        self._clock: Clock = clock or utc_now
        self._objects: dict[str, _Object] = {}
        self._lock = threading.Lock()
        self._etags = itertools.count(1)

    def _find(self, key: str) -> _Object:
        obj = self._objects.get(validate_key(key))
        if obj is None:
            raise ObjectNotFound(key)
        return obj

    async def get(self, key: str) -> bytes:
        await asyncio.sleep(0)
        return self._find(key).data

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        check_range(start, end)
        await asyncio.sleep(0)
        return self._find(key).data[start:end]

    async def get_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        for start, end in ranges:
            check_range(start, end)
        await asyncio.sleep(0)
        data = self._find(key).data
        return [data[start:end] for start, end in ranges]

    async def head(self, key: str) -> ObjectMeta:
        await asyncio.sleep(0)
        return self._find(key).meta

    async def put(self, key: str, data: bytes, mode: PutModeT = PutMode.OVERWRITE) -> ObjectMeta:
        validate_key(key)
        data = bytes(data)
        await asyncio.sleep(0)
        with self._lock:  # check and set without an await in between
            current = self._objects.get(key)
            if mode == PutMode.CREATE:
                if current is not None:
                    raise AlreadyExists(key)
            elif isinstance(mode, IfMatch):
                if current is None or current.meta.etag != mode.etag:
                    raise PreconditionFailed(key)
            elif mode != PutMode.OVERWRITE:
                raise ValueError(f"unknown put mode {mode!r}")
            meta = ObjectMeta(
                key=key, size=len(data), etag=f'"{next(self._etags)}"', last_modified=self._clock()
            )
            self._objects[key] = _Object(data, meta)
            return meta

    async def list(self, prefix: str, start_after: str | None = None) -> AsyncIterator[ObjectMeta]:
        validate_prefix(prefix)
        await asyncio.sleep(0)
        with self._lock:
            snapshot = sorted(
                (obj.meta for k, obj in self._objects.items() if k.startswith(prefix)), key=lambda m: m.key
            )
        for meta in snapshot:
            if start_after is None or meta.key > start_after:
                yield meta

    async def list_prefixes(
        self, prefix: str, start_after: str | None = None, limit: int | None = None
    ) -> builtins.list[str]:
        validate_prefix(prefix)
        await asyncio.sleep(0)
        with self._lock:
            keys = [k for k in self._objects if k.startswith(prefix)]
        found: set[str] = set()
        for key in keys:
            rest = key[len(prefix) :]
            slash = rest.find("/")
            if slash >= 0:
                found.add(prefix + rest[: slash + 1])
        out = sorted(p for p in found if start_after is None or p > start_after)
        return out if limit is None else out[:limit]

    async def delete(self, key: str) -> None:
        validate_key(key)
        await asyncio.sleep(0)
        with self._lock:
            self._objects.pop(key, None)

    async def now(self) -> dt.datetime:
        return self._clock()

    async def close(self) -> None:
        return None
