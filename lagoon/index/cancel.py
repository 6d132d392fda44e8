"""Cooperative cancellation of query evaluation: a per-query ``Budget`` and cheap checkpoints.

A query is evaluated in a worker thread that Python cannot interrupt, so long loops check, between
steps, whether the query may go on: ``checkpoint()`` raises ``QueryStopped`` once the query's
budget is cancelled (the request ended: deadline, client gone, shutdown) or its deadline passed.
The budget travels in a context variable, which ``asyncio.to_thread`` and the engine's query
executor copy into the evaluating thread; code that runs without one (tests, the indexer) pays a
single context-variable read per checkpoint and is never stopped.

Where the checkpoints are (keep them small: they sit in hot loops):
- between the children of ``And``/``Or`` (an ``Or`` of thousands of patterns);
- between slices of a string column in pattern matching (``match_in_slices``: Regex, Glob, IGlob
  run over at most ``SLICE_BYTES`` of text per call, so a pathological pattern is interrupted
  within one slice's work — a single document longer than a slice is one call);
- between the parts (segments, WAL runs) a query visits.

This module reads the monotonic clock and nothing else; evaluation stays deterministic for any
query that is not stopped.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pyarrow as pa

from lagoon.errors import Unavailable

SLICE_BYTES = 64 * 1024
"""Text bytes one pattern-matching call scans at most (whole documents; one is never split)."""


class QueryStopped(Unavailable):
    """Evaluation stopped because its request ended or its deadline passed (503, retryable: the
    same query may succeed on a less busy node or with a longer deadline)."""


class Budget:
    """Whether one query may continue: a deadline (``time.monotonic()`` seconds) and a flag that
    another thread sets to stop it. Thread-safe: ``cancel`` may be called from any thread."""

    __slots__ = ("_stopped", "deadline", "reason", "timeout")

    def __init__(self, deadline: float | None = None, *, timeout: float | None = None) -> None:
        self.deadline = deadline
        self.timeout = timeout
        self.reason = ""
        self._stopped = threading.Event()

    def cancel(self, reason: str) -> None:
        if not self._stopped.is_set():
            self.reason = reason
            self._stopped.set()

    @property
    def cancelled(self) -> bool:
        return self._stopped.is_set()

    def check(self) -> None:
        if self._stopped.is_set():
            raise QueryStopped(f"query evaluation stopped: {self.reason}", retry_after=1.0)
        if self.deadline is not None and time.monotonic() > self.deadline:
            shown = f"{self.timeout:g}s " if self.timeout is not None else ""
            self.cancel(f"the request deadline {shown}(server.request_timeout_secs) passed")
            raise QueryStopped(f"query evaluation stopped: {self.reason}", retry_after=1.0)

    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()


_current: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("lagoon_query_budget", default=None)


def current() -> Budget | None:
    return _current.get()


def checkpoint() -> None:
    """Raise ``QueryStopped`` if the current query must stop; a no-op outside a query."""
    b = _current.get()
    if b is not None:
        b.check()


@contextmanager
def budget_scope(budget: Budget | None) -> Iterator[Budget | None]:
    """Make ``budget`` the current one for this context (and the threads it hands work to)."""
    token = _current.set(budget)
    try:
        yield budget
    finally:
        _current.reset(token)


def _slices(arr: Any, max_bytes: int) -> Iterator[Any]:
    """Consecutive row slices of a string array, each holding at most ``max_bytes`` of text
    (a single longer row is a slice of its own)."""
    n = len(arr)
    if n == 0:
        return
    buffers = arr.buffers()
    if len(buffers) < 2 or buffers[1] is None:  # not an offsets-based string array
        yield arr
        return
    width = np.int64 if pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type) else np.int32
    offsets = np.frombuffer(buffers[1], dtype=width, count=arr.offset + n + 1)[arr.offset :]
    start = 0
    while start < n:
        base = offsets[start]
        # the first row whose end is beyond base + max_bytes; at least one row per slice
        stop = int(np.searchsorted(offsets, base + max_bytes, side="right")) - 1
        stop = max(start + 1, min(n, stop))
        yield arr.slice(start, stop - start)
        start = stop


def match_in_slices(strings: Any, match: Callable[[Any], Any], max_bytes: int = SLICE_BYTES) -> Any:
    """``match(strings)`` (an Arrow kernel returning one value per row) computed slice by slice,
    with a checkpoint before each slice. Without a current budget it is one call."""
    if _current.get() is None:
        return match(strings)
    chunks = strings.chunks if isinstance(strings, pa.ChunkedArray) else [strings]
    total = sum(c.nbytes for c in chunks)
    if total <= max_bytes:
        checkpoint()
        return match(strings)
    out = []
    for chunk in chunks:
        for piece in _slices(chunk, max_bytes):
            checkpoint()
            out.append(match(piece))
    checkpoint()
    if not out:
        return match(strings)
    return pa.chunked_array(out)


__all__ = [
    "SLICE_BYTES",
    "Budget",
    "QueryStopped",
    "budget_scope",
    "checkpoint",
    "current",
    "match_in_slices",
]
