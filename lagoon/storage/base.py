"""The object-store interface: the only I/O seam of Lagoon's durable state.

Every backend (fs, s3, memory) and every wrapper (retrying, instrumented, faulty) implements
``ObjectStore``. The interface knows nothing about Lagoon's formats or keys: it moves bytes.

Semantics every backend must honour (the conformance suite in tests/storage checks them):
- ``put(mode=CREATE)`` is create-if-absent and atomic: of many concurrent creates of one key exactly
  one succeeds, the others raise ``AlreadyExists``.
- ``put(mode=IfMatch(etag))`` replaces the object only if its current etag matches, else raises
  ``PreconditionFailed`` (also when the object is missing).
- an object is never visible torn: a reader sees all of a put or none of it.
- ``get`` of a missing key raises ``ObjectNotFound``; ``list`` is consistent with completed puts.
- ``list`` yields keys in the store's order: ascending UTF-8 bytes (fs, memory, AWS S3, MinIO, R2,
  GCS) or folder by folder with '/' first (SeaweedFS); the two differ only between sibling names
  where one is the other plus a character below '/'. ``start_after`` is exclusive in that order.
- ``now()`` is the store's clock (used for garbage-collection grace periods), not the local clock.
- keys follow ``validate_key`` on every backend (``InvalidKey`` otherwise); byte ranges read like
  Python slices, clamped at the object's end (``check_range``).
"""

from __future__ import annotations

import builtins
import datetime as dt
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


class StorageError(Exception):
    """Base of the storage layer's errors. ``transient`` errors may succeed when retried."""

    transient: bool = False


class ObjectNotFound(StorageError):
    """The key does not exist."""


class AlreadyExists(StorageError):
    """A create-if-absent put found the key taken (S3 412 on If-None-Match)."""


class PreconditionFailed(StorageError):
    """An if-match put found a different etag, or no object (S3 412 on If-Match)."""


class ConditionalConflict(StorageError):
    """A concurrent conditional write raced this one (S3 409); nothing was written. Retry."""

    transient = True


class StoreUnavailable(StorageError):
    """Timeout, connection error, throttling or 5xx. May or may not have been applied for puts."""

    transient = True


class CorruptRead(StorageError):
    """The store returned fewer (or other) bytes than the object holds; retrying may help."""

    transient = True


class AccessDenied(StorageError):
    """The store refused our credentials (HTTP 401/403). A configuration problem: not retried."""


class InvalidKey(StorageError, ValueError):
    """A key or prefix the storage layer refuses (see ``validate_key``). A caller bug: never retried."""


@dataclass(frozen=True, slots=True)
class ObjectMeta:
    key: str
    size: int
    etag: str | None
    last_modified: dt.datetime


@dataclass(frozen=True, slots=True)
class IfMatch:
    etag: str


class PutMode:
    OVERWRITE = "overwrite"
    CREATE = "create"


PutModeT = str | IfMatch

MAX_KEY_BYTES = 1024
"""S3's limit on a key's UTF-8 length (store prefix included); applied to every backend."""

RESERVED_SEGMENT_PREFIXES = (".tmp-", ".lagoon")
"""Path segments starting with these are the backends' own (fs temp and lock files): never keys."""


def _check_chars(what: str, value: str) -> None:
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise InvalidKey(f"{what} {value!r} contains a control character")
    if value.startswith("/"):
        raise InvalidKey(f"{what} {value!r} starts with '/'")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidKey(f"{what} {value[:40]!r}... is longer than {MAX_KEY_BYTES} bytes")


def validate_key(key: str) -> str:
    """Return ``key`` if every backend can store it unchanged, else raise ``InvalidKey``.

    A key is non-empty '/'-separated segments: no leading or trailing '/', no empty, '.' or '..'
    segment, no control character, at most ``MAX_KEY_BYTES`` UTF-8 bytes, and no segment starting
    with a reserved prefix (``.tmp-``, ``.lagoon``). These are the rules under which S3 (via
    obstore), the local filesystem and memory all store the same key the same way.
    """
    if not isinstance(key, str) or not key:
        raise InvalidKey(f"key must be a non-empty string, got {key!r}")
    _check_chars("key", key)
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidKey(f"key {key!r} has an empty, '.' or '..' segment")
        if segment.startswith(RESERVED_SEGMENT_PREFIXES):
            raise InvalidKey(f"key {key!r} has a reserved segment {segment!r}")
    return key


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` if it is a valid listing prefix (any start of a valid key), else raise.

    "" lists everything; a prefix may end with '/' ("wal/") or inside a segment ("wal/0000").
    """
    if not isinstance(prefix, str):
        raise InvalidKey(f"prefix must be a string, got {prefix!r}")
    if prefix:
        _check_chars("prefix", prefix)
        segments = prefix.split("/")
        for segment in segments[:-1]:
            if segment in ("", ".", ".."):
                raise InvalidKey(f"prefix {prefix!r} has an empty, '.' or '..' segment")
    return prefix


def check_range(start: int, end: int) -> None:
    """Validate a byte range [start, end): ``0 <= start <= end`` (ValueError otherwise).

    Every backend reads ranges like Python slices: bytes past the object's end are simply not
    returned, and a range starting at or past the end reads as b"".
    """
    if start < 0 or end < start:
        raise ValueError(f"invalid byte range [{start}, {end})")


@runtime_checkable
class ObjectStore(Protocol):
    """Async object store. Keys are '/'-separated strings without a leading '/'."""

    async def get(self, key: str) -> bytes:
        """Whole object. Raises ObjectNotFound."""
        ...

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of the object. Raises ObjectNotFound."""
        ...

    async def get_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """Several [start, end) ranges of one object, fetched in one parallel round."""
        ...

    async def head(self, key: str) -> ObjectMeta:
        """Size, etag and modification time (store clock). Raises ObjectNotFound."""
        ...

    async def put(self, key: str, data: bytes, mode: PutModeT = PutMode.OVERWRITE) -> ObjectMeta:
        """Write the object. CREATE raises AlreadyExists; IfMatch raises PreconditionFailed."""
        ...

    def list(self, prefix: str, start_after: str | None = None) -> AsyncIterator[ObjectMeta]:
        """Objects whose key starts with prefix, in ascending key order, after start_after."""
        ...

    async def list_prefixes(
        self, prefix: str, start_after: str | None = None, limit: int | None = None
    ) -> builtins.list[str]:
        """The distinct next path segments under prefix ("a/" for "prefix/a/x"), ascending.

        Returned values are full prefixes ending in '/', e.g. "default/docs/" for prefix "default/".
        A prefix whose objects were all deleted may still be returned (SeaweedFS keeps emptied
        folders listed): a returned prefix is no proof that any object is under it.
        """
        ...

    async def delete(self, key: str) -> None:
        """Delete the key; deleting a missing key is not an error."""
        ...

    async def now(self) -> dt.datetime:
        """The store's current time (UTC), comparable with ObjectMeta.last_modified."""
        ...

    async def close(self) -> None: ...
