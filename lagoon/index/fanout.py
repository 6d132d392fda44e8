"""Running one query's per-part work at once, so a cold query's reads do not queue up.

A cold segment serves its query's posting pages, probed cluster blocks and document batches by
blocking ranged reads (``LazyFile``): done one part after another, a query over ``n`` cold
segments waits ``n`` sequential object-store round trips at each of those stages. ``Fanout.map``
runs the per-part calls of one stage at once — at most ``width`` of them (the setting
``server.segment_fetch_parallelism``), one in the calling thread and the others in a thread pool
that the node's queries share — and returns their results in order, so the stage costs one round
trip whatever the number of segments.

Each worker runs in a copy of the caller's context (``contextvars``): the query's cancellation
budget (``index/cancel.py``) and its tracing span travel with the work. The first exception (in
call order) is raised once every call has ended. Calls must be independent of each other; the
composite source (``sources/composite.py``) only fans out calls on distinct parts, and only when
at least two of them may read the store (warm parts cost no thread hand-off).
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import TypeVar

T = TypeVar("T")


class Fanout:
    """A bounded way to run independent calls at once (see the module docstring). Thread-safe."""

    def __init__(self, width: int, *, pool_threads: int | None = None) -> None:
        """``width``: calls of one ``map`` running at once (1: one after another, in the caller's
        thread); ``pool_threads``: the shared pool's size (default ``width - 1``: one caller)."""
        self.width = max(1, int(width))
        self._threads = max(1, self.width - 1 if pool_threads is None else int(pool_threads))
        self._pool: ThreadPoolExecutor | None = None
        self._closed = False
        self._lock = threading.Lock()

    def map(self, calls: Sequence[Callable[[], T]]) -> list[T]:
        """The results of ``calls``, in order, computed at most ``width`` at a time."""
        n = len(calls)
        if n <= 1 or self.width <= 1:
            return [call() for call in calls]
        results: list[T | None] = [None] * n
        errors: list[BaseException | None] = [None] * n
        pending = iter(range(n))
        take = threading.Lock()

        def work() -> None:
            while True:
                with take:
                    i = next(pending, None)
                if i is None:
                    return
                try:
                    results[i] = calls[i]()
                except BaseException as e:  # re-raised in the caller, in call order
                    errors[i] = e

        helpers = [self._submit(contextvars.copy_context(), work) for _ in range(min(self.width, n) - 1)]
        contextvars.copy_context().run(work)
        wait([f for f in helpers if f is not None])  # a helper cancelled by close ran nothing
        for e in errors:
            if e is not None:
                raise e
        return results  # type: ignore[return-value]  # every slot is filled when none failed

    def _submit(self, ctx: contextvars.Context, fn: Callable[[], None]) -> Future[None] | None:
        """``fn`` in a pool thread, or None once closed (the caller's thread then does it all)."""
        with self._lock:
            if self._closed:
                return None
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="lagoon-part")
            return self._pool.submit(ctx.run, fn)

    def close(self) -> None:
        """Stop the pool without waiting (a helper may be waiting for the event loop that calls
        this): helpers not started are cancelled, their callers do their share themselves."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


__all__ = ["Fanout"]
