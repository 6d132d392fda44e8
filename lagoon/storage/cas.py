"""Compare-and-swap of one object: read it with its etag, decide, write back only if unchanged.

The helper knows nothing about what the bytes mean. A caller's ``step`` gets the object's current
bytes (None: there is no object) and returns ``Keep(value)`` (nothing to write) or
``Write(data, value)``. The write is create-if-absent when the object was missing and
``IfMatch(etag)`` otherwise, so any concurrent change makes it fail; the loop then reads again and
calls ``step`` on the new bytes. After ``attempts`` lost races it raises ``CasExhausted``.

Why reading HEAD before GET is safe: the etag is taken first, so bytes read afterwards are at least
as new as the etag. If they are newer, the conditional write fails and the loop starts over; it
never writes on top of a state it has not seen. A store that reports no etag for an existing
object gets a plain (best-effort) write.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from lagoon.storage.base import (
    AlreadyExists,
    IfMatch,
    ObjectNotFound,
    ObjectStore,
    PreconditionFailed,
    PutMode,
    StorageError,
)

T = TypeVar("T")


class CasExhausted(StorageError):
    """Every attempt lost the race to a concurrent writer. Retrying later may succeed."""

    transient = True


@dataclass(frozen=True, slots=True)
class Keep(Generic[T]):
    """Leave the object as it is; ``update`` returns ``value``."""

    value: T


@dataclass(frozen=True, slots=True)
class Write(Generic[T]):
    """Replace the object with ``data`` (if nobody changed it since it was read); then ``value``."""

    data: bytes
    value: T


@dataclass(frozen=True, slots=True)
class Versioned:
    """An object's bytes and the etag they were read under (both None: no object)."""

    etag: str | None
    data: bytes | None


@dataclass(frozen=True, slots=True)
class CasResult(Generic[T]):
    value: T
    written: bool


async def read_versioned(store: ObjectStore, key: str) -> Versioned:
    """The object's etag (HEAD) and then its bytes (GET); ``Versioned(None, None)`` if missing."""
    try:
        meta = await store.head(key)
        data = await store.get(key)
    except ObjectNotFound:
        return Versioned(None, None)
    return Versioned(meta.etag, data)


async def write_if_unchanged(store: ObjectStore, key: str, before: Versioned, data: bytes) -> bool:
    """Write ``data`` unless the object changed since ``before`` was read; False when it did."""
    try:
        if before.data is None:
            await store.put(key, data, PutMode.CREATE)
        elif before.etag is None:  # a store without etags: best effort
            await store.put(key, data)
        else:
            await store.put(key, data, IfMatch(before.etag))
    except (AlreadyExists, PreconditionFailed):
        return False
    return True


async def update(
    store: ObjectStore,
    key: str,
    step: Callable[[bytes | None], Awaitable[Keep[T] | Write[T]]],
    *,
    attempts: int,
    pause: Callable[[], Awaitable[None]] | None = None,
) -> CasResult[T]:
    """Read, decide with ``step``, write conditionally; retry lost races (see the module docstring).

    ``pause`` is awaited after each lost race (jitter, so racing writers spread out)."""
    for _ in range(attempts):
        before = await read_versioned(store, key)
        decision = await step(before.data)
        if isinstance(decision, Keep):
            return CasResult(decision.value, written=False)
        if await write_if_unchanged(store, key, before, decision.data):
            return CasResult(decision.value, written=True)
        if pause is not None:
            await pause()
    raise CasExhausted(f"{key}: gave up after {attempts} lost races")


__all__ = [
    "CasExhausted",
    "CasResult",
    "Keep",
    "Versioned",
    "Write",
    "read_versioned",
    "update",
    "write_if_unchanged",
]
