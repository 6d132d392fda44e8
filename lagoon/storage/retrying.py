"""Retries transient store errors, and resolves ambiguous conditional PUTs by reading back.

Policy: full-jitter exponential backoff (``sleep(uniform(0, min(max_delay, base_delay * 2**n)))``)
on transient errors only (``StoreUnavailable``, ``ConditionalConflict``, ``CorruptRead``), for at
most ``max_attempts`` attempts and ``budget_secs`` seconds in total; then the last error is raised.
``AlreadyExists``, ``PreconditionFailed``, ``ObjectNotFound`` and every other error pass through at
once (SlateDB #1230: a 404 is an answer, not a hiccup).

Ambiguous outcomes (docs/design.md §9.2). ``StoreUnavailable`` from a PUT means "maybe applied" (a
timeout or 5xx after the store wrote it). A blind retry of a conditional PUT then fails with 412
even though *our* first attempt won. So, once an attempt of a CREATE or IfMatch PUT has been
ambiguous, a later ``AlreadyExists`` / ``PreconditionFailed`` is checked by reading the object back:
equal bytes mean our write landed (callers put a unique nonce in every conditional write, so byte
equality is the nonce check) and the PUT succeeds; anything else re-raises the conditional error.
A 409 ``ConditionalConflict`` is not ambiguous: nothing was written.

Caveat for IfMatch: if our write landed and someone else then replaced it before the read-back, we
report ``PreconditionFailed`` although our write was applied (and superseded). CREATE keys are
written once, so for them the read-back is exact.

``list`` resumes after the last key it yielded when a page fails, so a retried listing yields no
duplicates and no gaps. Time and randomness are injectable (``sleep``, ``clock``, ``rng``).
"""

from __future__ import annotations

import asyncio
import builtins
import datetime as dt
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar

from lagoon.storage.base import (
    AlreadyExists,
    IfMatch,
    ObjectMeta,
    ObjectNotFound,
    ObjectStore,
    PreconditionFailed,
    PutMode,
    PutModeT,
    StorageError,
    StoreUnavailable,
)

T = TypeVar("T")


class RetryingStore:
    """Wraps any ``ObjectStore``; same interface, fewer transient failures."""

    def __init__(
        self,
        inner: ObjectStore,
        *,
        max_attempts: int = 8,
        base_delay: float = 0.05,
        max_delay: float = 2.0,
        budget_secs: float = 30.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.inner = inner
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.budget_secs = budget_secs
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._clock = clock
        self.retries = 0
        """Retries performed so far (for tests and benchmarks)."""

    async def _backoff(self, attempt: int, started: float, error: StorageError) -> None:
        """Sleep before attempt ``attempt + 1``, or re-raise ``error`` if out of attempts/budget."""
        if attempt >= self.max_attempts:
            raise error
        delay = self._rng.uniform(0.0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))
        if self._clock() - started + delay > self.budget_secs:
            raise error
        self.retries += 1
        await self._sleep(delay)

    async def _call(self, op: Callable[[], Awaitable[T]]) -> T:
        started = self._clock()
        attempt = 0
        while True:
            attempt += 1
            try:
                return await op()
            except StorageError as exc:
                if not exc.transient:
                    raise
                await self._backoff(attempt, started, exc)

    async def get(self, key: str) -> bytes:
        return await self._call(lambda: self.inner.get(key))

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        return await self._call(lambda: self.inner.get_range(key, start, end))

    async def get_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> builtins.list[bytes]:
        return await self._call(lambda: self.inner.get_ranges(key, ranges))

    async def head(self, key: str) -> ObjectMeta:
        return await self._call(lambda: self.inner.head(key))

    async def delete(self, key: str) -> None:
        await self._call(lambda: self.inner.delete(key))

    async def list_prefixes(
        self, prefix: str, start_after: str | None = None, limit: int | None = None
    ) -> builtins.list[str]:
        return await self._call(lambda: self.inner.list_prefixes(prefix, start_after, limit))

    async def now(self) -> dt.datetime:
        return await self._call(self.inner.now)

    async def close(self) -> None:
        await self.inner.close()

    async def put(self, key: str, data: bytes, mode: PutModeT = PutMode.OVERWRITE) -> ObjectMeta:
        conditional = mode == PutMode.CREATE or isinstance(mode, IfMatch)
        started = self._clock()
        attempt = 0
        ambiguous = False
        while True:
            attempt += 1
            try:
                return await self.inner.put(key, data, mode)
            except (AlreadyExists, PreconditionFailed) as exc:
                if ambiguous and await self._is_ours(key, data):
                    return await self.head(key)
                raise exc
            except StorageError as exc:
                if not exc.transient:
                    raise
                ambiguous = ambiguous or (conditional and isinstance(exc, StoreUnavailable))
                await self._backoff(attempt, started, exc)

    async def _is_ours(self, key: str, data: bytes) -> bool:
        """After an ambiguous attempt: does the key hold exactly our bytes (our nonce)?"""
        try:
            return await self.get(key) == data
        except ObjectNotFound:
            return False

    async def list(self, prefix: str, start_after: str | None = None) -> AsyncIterator[ObjectMeta]:
        started = self._clock()
        attempt = 0
        cursor = start_after
        while True:
            attempt += 1
            progressed = False
            try:
                async for meta in self.inner.list(prefix, cursor):
                    yield meta
                    cursor = meta.key
                    progressed = True
                return
            except StorageError as exc:
                if not exc.transient:
                    raise
                if progressed:  # a long listing may fail now and then: count failures in a row
                    started, attempt = self._clock(), 1
                await self._backoff(attempt, started, exc)
