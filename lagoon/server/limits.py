"""Admission limits of the HTTP API: concurrent query slots per namespace and per-key rate limits.

``QueryLimiter`` bounds the queries one node runs at once on a namespace (waiting briefly, then
429); ``RateLimiter`` holds the ``[limits]`` token buckets per API key. Both are per node and in
memory, shared by every request through ``ServerState``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from lagoon.config import LimitsSettings
from lagoon.errors import TooManyRequests


class QueryLimiter:
    """At most ``limit`` concurrent query slots per namespace on this node.

    A query that finds no free slot waits up to ``wait_secs`` (turbopuffer waits 800 ms) for one,
    then gets 429 with ``Retry-After``. A multi-query takes one slot per sub-query (capped at
    ``limit``, so it can always run alone). Waiters are woken in arrival order.
    """

    def __init__(self, limit: int, wait_secs: float = 0.8) -> None:
        self.limit = limit
        self.wait_secs = wait_secs
        self._active: dict[tuple[str, str], int] = {}
        self._waiters: dict[tuple[str, str], list[asyncio.Future[None]]] = {}

    def active(self, key: tuple[str, str]) -> int:
        return self._active.get(key, 0)

    @asynccontextmanager
    async def slot(
        self, key: tuple[str, str], slots: int = 1, *, deadline: float | None = None
    ) -> AsyncIterator[None]:
        n = max(1, min(slots, self.limit))
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.wait_secs
        if deadline is not None:
            give_up = min(give_up, deadline)
        while self._active.get(key, 0) + n > self.limit:
            remaining = give_up - loop.time()
            if remaining <= 0:
                raise TooManyRequests(
                    f"too many concurrent queries on namespace '{key[1]}' "
                    f"(limit {self.limit} per node, server.max_concurrent_queries); retry shortly",
                    retry_after=1.0,
                )
            fut: asyncio.Future[None] = loop.create_future()
            waiters = self._waiters.setdefault(key, [])
            waiters.append(fut)
            try:
                await asyncio.wait({fut}, timeout=remaining)
            finally:
                if fut in waiters:
                    waiters.remove(fut)
                if not waiters:
                    self._waiters.pop(key, None)
        self._active[key] = self._active.get(key, 0) + n
        try:
            yield
        finally:
            left = self._active[key] - n
            if left:
                self._active[key] = left
            else:
                del self._active[key]
            for fut in self._waiters.get(key, ()):
                if not fut.done():
                    fut.set_result(None)


@dataclass
class _Bucket:
    rate: float
    capacity: float
    tokens: float
    updated: float

    def refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now


class RateLimiter:
    """Per-key token buckets of ``[limits]`` (absent = unlimited).

    - ``requests_per_second`` R: a bucket of 2·R tokens (at least 1) refilled at R/s; one per request.
    - ``write_bytes_per_minute`` W: a bucket of W bytes refilled at W/60 per second; a write is
      admitted while the bucket is positive and then debited its body size (it may go negative, so
      one request larger than W still gets through once the bucket has refilled).
    Refusals are 429 with ``Retry-After`` = the time until the bucket admits again.
    """

    def __init__(self, limits: LimitsSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.rps = limits.requests_per_second
        self.write_bpm = limits.write_bytes_per_minute
        self.clock = clock
        self._requests: dict[str, _Bucket] = {}
        self._bytes: dict[str, _Bucket] = {}

    def check_request(self, key: str) -> None:
        if self.rps is None:
            return
        now = self.clock()
        b = self._requests.get(key)
        if b is None:
            cap = max(1.0, 2.0 * self.rps)
            b = self._requests[key] = _Bucket(self.rps, cap, cap, now)
        b.refill(now)
        if b.tokens < 1.0:
            wait = (1.0 - b.tokens) / b.rate
            raise TooManyRequests(
                f"request rate limit of {self.rps:g}/s for this API key exceeded (limits.requests_per_second)",
                retry_after=wait,
            )
        b.tokens -= 1.0

    def check_write_bytes(self, key: str, nbytes: int) -> None:
        if self.write_bpm is None:
            return
        now = self.clock()
        b = self._bytes.get(key)
        if b is None:
            b = self._bytes[key] = _Bucket(
                self.write_bpm / 60.0, float(self.write_bpm), float(self.write_bpm), now
            )
        b.refill(now)
        if b.tokens <= 0:
            wait = (-b.tokens + 1.0) / b.rate
            raise TooManyRequests(
                f"write volume limit of {self.write_bpm} bytes/minute for this API key exceeded "
                "(limits.write_bytes_per_minute)",
                retry_after=wait,
            )
        b.tokens -= nbytes


__all__ = ["QueryLimiter", "RateLimiter"]
