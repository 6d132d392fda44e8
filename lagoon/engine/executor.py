"""The query executor: a bounded pool of evaluation threads shared fairly between orgs.

Every query's CPU work (parsing and planning against the schema, evaluation over the snapshot's
parts) runs here, never on the event loop. The pool has ``server.query_threads`` threads; jobs
wait in one FIFO per (org, namespace) and are started in round-robin order: over the orgs that
have waiting jobs, then over the namespaces of the chosen org. An org never runs more than
``server.query_threads_per_org`` jobs at once, even when the pool is otherwise idle, so the
remaining threads are always there for the next org's query: one org's expensive queries delay
its own next queries, not anyone else's.

The evaluation threads run at a lower CPU priority than the rest of the process
(``THREAD_NICE``, Linux per-thread niceness): when queries saturate the cores, the event loop
still gets the CPU the moment a request arrives, so routing, ``/healthz`` and admission stay
fast however expensive the running queries are.

Admission: an org may have at most ``server.max_queued_queries`` jobs waiting; one more is refused
at once with 429 + ``Retry-After``. A waiting job whose request ends (deadline, client gone) is
removed from its queue; a running one has its ``Budget`` cancelled and stops at its next
checkpoint (``lagoon.index.cancel``). Each job runs in a copy of the submitter's context, so the
query's budget and tracing span follow it into the thread.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from lagoon.errors import TooManyRequests
from lagoon.index.cancel import Budget

T = TypeVar("T")
THREAD_NICE = 5
"""Niceness added to every evaluation thread (the indexer process runs at server.indexer_nice)."""
log = logging.getLogger("lagoon.engine.executor")


@dataclass(eq=False)
class _Job:
    fn: Callable[[], Any]
    ctx: contextvars.Context
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    org: str
    namespace: str
    budget: Budget | None
    state: str = "queued"  # queued -> running -> done; or queued -> dropped


@dataclass
class _OrgQueue:
    namespaces: OrderedDict[str, deque[_Job]] = field(default_factory=OrderedDict)
    queued: int = 0
    running: int = 0


class QueryExecutor:
    """See the module docstring. Thread-safe; ``run`` is called from event loops."""

    def __init__(self, threads: int, per_org: int, max_queued: int) -> None:
        self.threads = max(1, threads)
        self.per_org = max(1, min(per_org, self.threads))
        self.max_queued = max(0, max_queued)
        self._cv = threading.Condition()
        self._orgs: OrderedDict[str, _OrgQueue] = OrderedDict()  # orgs with queued or running jobs
        self._workers: list[threading.Thread] = []
        self._closed = False

    # -- introspection (metrics, tests) ---------------------------------------------------------

    def running(self, org: str | None = None) -> int:
        with self._cv:
            if org is not None:
                q = self._orgs.get(org)
                return q.running if q else 0
            return sum(q.running for q in self._orgs.values())

    def queued(self, org: str | None = None) -> int:
        with self._cv:
            if org is not None:
                q = self._orgs.get(org)
                return q.queued if q else 0
            return sum(q.queued for q in self._orgs.values())

    # -- submitting -----------------------------------------------------------------------------

    async def run(self, fn: Callable[[], T], *, org: str, namespace: str, budget: Budget | None = None) -> T:
        """``fn()`` on an evaluation thread, in turn; see the module docstring."""
        loop = asyncio.get_running_loop()
        job = _Job(fn, contextvars.copy_context(), loop, loop.create_future(), org, namespace, budget)
        with self._cv:
            if self._closed:
                raise RuntimeError("the query executor is closed")
            q = self._orgs.get(org)
            if q is None:
                q = self._orgs[org] = _OrgQueue()
            if q.queued >= self.max_queued and q.running >= self.per_org:
                raise TooManyRequests(
                    f"too many queries waiting for this org on this node ({q.queued} queued, "
                    f"{q.running} running; server.max_queued_queries); retry shortly",
                    retry_after=1.0,
                )
            q.namespaces.setdefault(namespace, deque()).append(job)
            q.queued += 1
            self._ensure_workers()
            self._cv.notify()
        try:
            result: T = await job.future  # cancelling the request cancels this future too
            return result
        except asyncio.CancelledError:
            self._abandon(job)
            raise

    def _abandon(self, job: _Job) -> None:
        """The request gave up: drop the job if it has not started, else ask it to stop."""
        with self._cv:
            if job.state == "queued":
                q = self._orgs.get(job.org)
                jobs = q.namespaces.get(job.namespace) if q else None
                if q is not None and jobs is not None:
                    jobs.remove(job)
                    q.queued -= 1
                    if not jobs:
                        del q.namespaces[job.namespace]
                    self._forget_if_idle(job.org, q)
                job.state = "dropped"
                return
        if job.budget is not None and job.state == "running":
            job.budget.cancel("the request ended (deadline, client disconnect or shutdown)")

    # -- the pool -------------------------------------------------------------------------------

    def _ensure_workers(self) -> None:
        while len(self._workers) < self.threads:
            t = threading.Thread(target=self._work, name=f"lagoon-query-{len(self._workers)}", daemon=True)
            self._workers.append(t)
            t.start()

    def _forget_if_idle(self, org: str, q: _OrgQueue) -> None:
        if not q.queued and not q.running:
            self._orgs.pop(org, None)

    def _pick(self) -> _Job | None:
        """The next job in round-robin order over eligible orgs, then namespaces (lock held)."""
        for org in list(self._orgs):
            q = self._orgs[org]
            if not q.queued or q.running >= self.per_org:
                continue
            ns, jobs = next(iter(q.namespaces.items()))
            job = jobs.popleft()
            if jobs:
                q.namespaces.move_to_end(ns)
            else:
                del q.namespaces[ns]
            q.queued -= 1
            q.running += 1
            self._orgs.move_to_end(org)
            job.state = "running"
            return job
        return None

    def _work(self) -> None:
        try:  # this thread only (Linux): the event loop keeps its priority
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + THREAD_NICE)
        except (AttributeError, OSError):  # pragma: no cover - not Linux, or not permitted
            pass
        while True:
            with self._cv:
                job = self._pick()
                while job is None:
                    if self._closed:
                        return
                    self._cv.wait()
                    job = self._pick()
            try:
                result: Any = job.ctx.run(job.fn)
                error: BaseException | None = None
            except BaseException as e:  # delivered to the awaiting request
                result, error = None, e
            finally:
                with self._cv:
                    job.state = "done"
                    q = self._orgs.get(job.org)
                    if q is not None:
                        q.running -= 1
                        self._forget_if_idle(job.org, q)
                    self._cv.notify_all()
            try:
                job.loop.call_soon_threadsafe(_deliver, job.future, result, error)
            except RuntimeError:  # the loop closed meanwhile: nobody is waiting
                pass
            # an idle thread keeps nothing of its last job (its closure holds the query's
            # document source, whose segment readers the memory cache may have let go)
            job = result = error = None

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()


def _deliver(fut: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if fut.done():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)


__all__ = ["QueryExecutor"]
