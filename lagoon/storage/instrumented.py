"""Counts, times and sizes every object-store request (Prometheus + plain counters for tests).

Metrics (``op`` is get, get_range, get_ranges, head, put, list, list_prefixes, delete, now):

    lagoon_objstore_requests_total{op}                 calls made (a ``list`` counts once, however
                                                       many pages the backend fetches)
    lagoon_objstore_errors_total{op}                   calls that failed: transient errors and
                                                       unexpected ones. ObjectNotFound, AlreadyExists
                                                       and PreconditionFailed are answers (probing
                                                       ``ver+1`` until 404, losing a CAS race), not
                                                       failures, and are not counted here.
    lagoon_objstore_request_duration_seconds{op}       latency histogram (a ``list``: until exhausted)
    lagoon_objstore_bytes_total{op,direction}          payload bytes, direction = read | write

Metric objects are created per ``CollectorRegistry`` (``StoreMetrics.for_registry``, cached, so
several stores can share one registry); nothing is registered at import time. Without a registry
the process-wide default one is used.

``InstrumentedStore.counts`` (op -> calls), ``.error_counts`` ((op, error class) -> count,
answers included) and ``.bytes_read`` are plain in-memory counters for tests and benchmarks, e.g.
"requests per commit".
"""

from __future__ import annotations

import builtins
import collections
import datetime as dt
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Histogram

from lagoon.storage.base import (
    AlreadyExists,
    ObjectMeta,
    ObjectNotFound,
    ObjectStore,
    PreconditionFailed,
    PutMode,
    PutModeT,
)
from lagoon.tracing import tracer

T = TypeVar("T")

ANSWERS = (ObjectNotFound, AlreadyExists, PreconditionFailed)
"""Errors that are expected outcomes, not failures: not counted in errors_total."""

OPS = ("get", "get_range", "get_ranges", "head", "put", "list", "list_prefixes", "delete", "now")
"""The ``op`` label values."""

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class StoreMetrics:
    """The object-store metric family, registered in one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "lagoon_objstore_requests_total", "Object-store requests.", ["op"], registry=registry
        )
        self.errors = Counter(
            "lagoon_objstore_errors_total",
            "Object-store requests that failed (not counting not-found/exists/precondition answers).",
            ["op"],
            registry=registry,
        )
        self.duration = Histogram(
            "lagoon_objstore_request_duration_seconds",
            "Object-store request latency.",
            ["op"],
            buckets=_BUCKETS,
            registry=registry,
        )
        for op in OPS:  # every op from the start, so error-rate alerts see zeros, not no data
            self.requests.labels(op=op)
            self.errors.labels(op=op)
        self.bytes = Counter(
            "lagoon_objstore_bytes_total",
            "Object-store payload bytes.",
            ["op", "direction"],
            registry=registry,
        )

    @classmethod
    def for_registry(cls, registry: CollectorRegistry | None = None) -> StoreMetrics:
        """The metrics of ``registry`` (default: the process-wide one), created on first use."""
        registry = registry if registry is not None else prometheus_client.REGISTRY
        metrics = _METRICS_BY_REGISTRY.get(registry)
        if metrics is None:
            metrics = _METRICS_BY_REGISTRY[registry] = cls(registry)
        return metrics


_METRICS_BY_REGISTRY: weakref.WeakKeyDictionary[CollectorRegistry, StoreMetrics] = weakref.WeakKeyDictionary()


class InstrumentedStore:
    """Wraps any ``ObjectStore``; records every call in ``metrics`` and in ``counts``."""

    def __init__(self, inner: ObjectStore, metrics: StoreMetrics | CollectorRegistry | None = None) -> None:
        self.inner = inner
        self.metrics = metrics if isinstance(metrics, StoreMetrics) else StoreMetrics.for_registry(metrics)
        self.counts: collections.Counter[str] = collections.Counter()
        self.error_counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self.bytes_read = 0

    def reset_counts(self) -> None:
        self.counts.clear()
        self.error_counts.clear()
        self.bytes_read = 0

    def _error(self, op: str, exc: Exception) -> None:
        self.error_counts[(op, type(exc).__name__)] += 1
        if not isinstance(exc, ANSWERS):
            self.metrics.errors.labels(op).inc()

    def _bytes(self, op: str, direction: str, n: int) -> None:
        if direction == "read":
            self.bytes_read += n
        if n:
            self.metrics.bytes.labels(op, direction).inc(n)

    async def _call(self, op: str, fn: Callable[[], Awaitable[T]], key: str = "") -> T:
        self.counts[op] += 1
        self.metrics.requests.labels(op).inc()
        started = time.perf_counter()
        with tracer.start_as_current_span(f"lagoon.objstore.{op}", attributes={"lagoon.key": key}):
            try:
                return await fn()
            except Exception as exc:
                self._error(op, exc)
                raise
            finally:
                self.metrics.duration.labels(op).observe(time.perf_counter() - started)

    async def get(self, key: str) -> bytes:
        data = await self._call("get", lambda: self.inner.get(key), key)
        self._bytes("get", "read", len(data))
        return data

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        data = await self._call("get_range", lambda: self.inner.get_range(key, start, end), key)
        self._bytes("get_range", "read", len(data))
        return data

    async def get_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> builtins.list[bytes]:
        datas = await self._call("get_ranges", lambda: self.inner.get_ranges(key, ranges), key)
        self._bytes("get_ranges", "read", sum(len(d) for d in datas))
        return datas

    async def head(self, key: str) -> ObjectMeta:
        return await self._call("head", lambda: self.inner.head(key), key)

    async def put(self, key: str, data: bytes, mode: PutModeT = PutMode.OVERWRITE) -> ObjectMeta:
        meta = await self._call("put", lambda: self.inner.put(key, data, mode), key)
        self._bytes("put", "write", len(data))
        return meta

    async def delete(self, key: str) -> None:
        await self._call("delete", lambda: self.inner.delete(key), key)

    async def list_prefixes(
        self, prefix: str, start_after: str | None = None, limit: int | None = None
    ) -> builtins.list[str]:
        return await self._call(
            "list_prefixes", lambda: self.inner.list_prefixes(prefix, start_after, limit), prefix
        )

    async def list(self, prefix: str, start_after: str | None = None) -> AsyncIterator[ObjectMeta]:
        self.counts["list"] += 1
        self.metrics.requests.labels("list").inc()
        started = time.perf_counter()
        try:
            async for meta in self.inner.list(prefix, start_after):
                yield meta
        except Exception as exc:
            self._error("list", exc)
            raise
        finally:
            self.metrics.duration.labels("list").observe(time.perf_counter() - started)

    async def now(self) -> dt.datetime:
        return await self._call("now", self.inner.now)

    async def close(self) -> None:
        await self.inner.close()
