"""The background scheduler: indexing, compaction and garbage collection, on a poll loop.

``IndexerLoop`` is an engine component: ``lagoon-worker`` (``lagoon.worker.run``) runs one until
SIGTERM or SIGINT; ``lagoon-server --embedded-indexer`` and the embedded API run the same loop in
their own event loop: ``IndexerLoop(store, settings, components).start()`` at startup and
``await loop.stop()`` at shutdown.

Every ``indexer.poll_interval_secs`` a pass:

1. reads the indexing queue (one GET, engine/queue.py) — plus, at start and then hourly, a sweep
   that lists every namespace once, to find work whose enqueue was lost (e.g. a writer crashed
   between its commit and its queue write);
2. for each queued namespace (at most ``concurrency`` at a time): runs the indexer; after a commit,
   the compactor until no level is full; a namespace whose tail is empty is removed from the
   queue (conditional write, re-checked: see engine/queue.py);
3. runs GC (and compaction) for the namespaces this worker touched recently, every
   ``max(poll interval, gc_grace_secs / 4)``, until GC reports nothing left to wait for.

Any number of workers may run: duplicates race on the manifest's create-if-absent and the loser
aborts (engine/indexer.py, compactor.py); nothing here needs a lease. Errors of one namespace are
logged and retried on a later pass; they never stop the loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from functools import partial

from lagoon import metrics
from lagoon.config import Settings
from lagoon.engine import manifest_store
from lagoon.engine.catalog import Catalog, namespace_exists
from lagoon.engine.compactor import compact_namespace, pick_inputs
from lagoon.engine.components import Components
from lagoon.engine.gc import DEFAULT_RETAIN_VERSIONS, ManifestCache, collect_garbage
from lagoon.engine.indexer import IndexOutcome, index_namespace, indexing_state
from lagoon.engine.queue import IndexingQueue, parse_queue_name, queue_name
from lagoon.engine.segment_io import SegmentIO
from lagoon.engine.state import NamespaceState
from lagoon.format.keys import CLUSTER_PREFIX, ORG_RE, NamespaceKeys, namespace_from_prefix
from lagoon.logs import log_event
from lagoon.storage.base import ObjectStore

log = logging.getLogger("lagoon.worker")

DEFAULT_CONCURRENCY = 4
SWEEP_INTERVAL_SECS = 3600.0
MAX_COMPACTIONS_PER_PASS = 8
STOP_GRACE_SECS = 10.0
_LIST_PAGE = 1000


@dataclass
class PassReport:
    """What one pass did (for tests and logs)."""

    queued: int = 0
    indexed: dict[str, IndexOutcome] = field(default_factory=dict)
    compactions: int = 0
    compactions_aborted: int = 0
    gc_deleted: int = 0
    removed: set[str] = field(default_factory=set)
    errors: int = 0


class IndexerLoop:
    """Indexer + compactor + GC for every namespace of one store. Use from one event loop."""

    def __init__(
        self,
        store: ObjectStore,
        settings: Settings,
        components: Components | None = None,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        retain_versions: int = DEFAULT_RETAIN_VERSIONS,
        sweep_interval_secs: float = SWEEP_INTERVAL_SECS,
        segment_io: SegmentIO | None = None,
    ) -> None:
        """``segment_io``: the serving ``Database``'s, when the loop runs in a serving process (its
        memory cache, ``cache.memory_bytes``, then holds what the indexer builds and compacts
        too: one budget per process); without it the loop has a cache of its own, bounded by
        ``indexer.memory_bytes`` and exported as ``lagoon_cache_bytes{layer="indexer"}``."""
        self.store = store
        self.settings = settings
        self.components = components or Components()
        self.concurrency = concurrency
        self.retain_versions = retain_versions
        self.sweep_interval = sweep_interval_secs
        self.queue = IndexingQueue(store, self.components)
        self.catalog = Catalog(store, self.components)
        if segment_io is None:
            own = settings.cache.model_copy(update={"memory_bytes": settings.indexer.memory_bytes})
            segment_io = SegmentIO(store, own)
            segment_io.report_metrics("indexer")
        self.segment_io = segment_io
        self.manifests = ManifestCache()
        self.states: dict[str, NamespaceState] = {}
        self.maintenance: dict[str, float] = {}  # "org/ns" -> monotonic time the next GC is due
        # "org/ns" -> time (ms, writer clock) of its oldest unindexed entry as last known: the lag
        # gauge keeps growing from it while indexing the namespace fails
        self.oldest_ms: dict[str, int] = {}
        self.known: set[str] = set()  # namespaces with exported series (metrics.know_namespace)
        self._next_sweep = float("-inf")
        self._task: asyncio.Task[None] | None = None
        self._stopping: asyncio.Event | None = None
        self.passes = 0

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> Awaitable[None]:
        """Start the loop as a task of the running event loop (idempotent). Returns an already
        finished awaitable, so ``loop.start()`` and ``await loop.start()`` both work."""
        running = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._stopping = asyncio.Event()
            self._task = running.create_task(self._run(self._stopping), name="lagoon-indexer-loop")
            log_event(log, "indexer loop started", node=self.components.node_id)
        done: asyncio.Future[None] = running.create_future()
        done.set_result(None)
        return done

    def stop(self) -> Awaitable[None]:
        """Ask the loop to stop after its current pass (cancelled after ``STOP_GRACE_SECS``);
        await the result to wait until it has."""
        return asyncio.get_running_loop().create_task(self._stop())

    async def _stop(self) -> None:
        task = self._task
        if task is None:
            return
        if self._stopping is not None:
            self._stopping.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), STOP_GRACE_SECS)
        except TimeoutError:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            self._task = None
        log_event(log, "indexer loop stopped", node=self.components.node_id, passes=self.passes)

    async def _run(self, stopping: asyncio.Event) -> None:
        poll = self.settings.indexer.poll_interval_secs
        while not stopping.is_set():
            started = self.components.clock.monotonic()
            try:
                await self.run_once()
            except Exception as e:  # a bug or the store is down: log, keep polling
                log_event(log, "indexer pass failed", level=logging.ERROR, error=repr(e))
            wait = poll - (self.components.clock.monotonic() - started)
            if wait > 0:
                try:
                    await asyncio.wait_for(stopping.wait(), wait)
                except TimeoutError:
                    pass

    # -- one pass ------------------------------------------------------------------------------------

    async def run_once(self, *, force: bool = False) -> PassReport:
        """One poll: queue -> index/compact -> dequeue idle -> GC what is due. ``force`` indexes
        every queued tail now, whatever its age and size."""
        self.passes += 1
        report = PassReport()
        clock = self.components.clock
        try:
            queued = await self.queue.read()
        except Exception as e:  # the store is down: GC and compaction can still be due
            report.errors += 1
            log_event(log, "could not read the indexing queue", level=logging.WARNING, error=repr(e))
            queued = {}
        names = set(queued)
        for name, enqueued_ms in queued.items():
            self._know(name)
            self.oldest_ms.setdefault(name, enqueued_ms)
        if clock.monotonic() >= self._next_sweep:
            try:
                names |= await self._sweep()
                self._next_sweep = clock.monotonic() + self.sweep_interval
            except Exception as e:
                report.errors += 1
                log_event(log, "namespace sweep failed", level=logging.WARNING, error=repr(e))
        report.queued = len(names)
        sem = asyncio.Semaphore(self.concurrency)

        async def work(name: str) -> None:
            async with sem:
                await self._work_on(name, report, force=force)

        await asyncio.gather(*(work(n) for n in sorted(names)))
        idle = {n for n, o in report.indexed.items() if o.status == "idle" and n in queued}
        if idle:
            try:
                report.removed = await self.queue.remove_idle(idle, self._confirm_idle)
            except Exception as e:  # they stay queued: the next pass tries again
                report.errors += 1
                log_event(log, "could not update the indexing queue", level=logging.WARNING, error=repr(e))
            for n in report.removed:
                self.states.pop(n, None)
                self.oldest_ms.pop(n, None)
        now = clock.monotonic()
        due = sorted(n for n, t in self.maintenance.items() if t <= now)
        await asyncio.gather(*(self._maintain_guarded(n, report, sem) for n in due))
        return report

    async def _work_on(self, name: str, report: PassReport, *, force: bool) -> None:
        keys = parse_queue_name(name)
        if keys is None:
            return
        try:
            state = self.states.get(name)
            if state is None:
                state = self.states[name] = indexing_state(keys, self.store, self.settings, self.components)
            outcome = await index_namespace(
                self.store,
                keys,
                self.settings,
                self.components,
                state=state,
                segment_io=self.segment_io,
                force=force,
            )
            report.indexed[name] = outcome
            metrics.observe_namespace(
                name,
                lag_seconds=outcome.lag_seconds,
                tail_bytes=outcome.tail_bytes,
                segments=outcome.segments,
            )
            if outcome.status == "idle" and outcome.head <= outcome.indexed_through:
                self.oldest_ms.pop(name, None)
            elif outcome.lag_seconds > 0:
                self.oldest_ms[name] = self.components.clock.now_ms() - int(outcome.lag_seconds * 1000)
            if outcome.status in ("committed", "aborted"):
                # Our view is behind the manifest now: start from the bucket next time.
                self.states.pop(name, None)
                self.maintenance.setdefault(name, self.components.clock.monotonic())
            if outcome.status == "committed":
                await self._compact(keys, name, report)
                fresh = self.states[name] = indexing_state(keys, self.store, self.settings, self.components)
                await fresh.refresh()
                segments = len(fresh.manifest.segments) if fresh.manifest else 0
                metrics.observe_namespace(name, lag_seconds=None, tail_bytes=None, segments=segments)
                oldest = fresh.tail.oldest_unindexed_ms
                if fresh.head > fresh.indexed_through and oldest is not None:
                    self.oldest_ms[name] = oldest
                    lag = (self.components.clock.now_ms() - oldest) / 1000
                    metrics.observe_namespace(
                        name, lag_seconds=lag, tail_bytes=fresh.tail.unindexed_bytes, segments=None
                    )
                else:
                    self.oldest_ms.pop(name, None)
                if fresh.head == fresh.indexed_through:
                    report.indexed[name] = IndexOutcome(
                        "idle",
                        fresh.manifest.version if fresh.manifest else 0,
                        fresh.indexed_through,
                        fresh.head,
                        0,
                        0.0,
                        len(fresh.manifest.segments) if fresh.manifest else 0,
                    )
                    metrics.observe_namespace(name, lag_seconds=0.0, tail_bytes=0, segments=None)
        except Exception as e:
            report.errors += 1
            failed = self.states.pop(name, None)
            self._failed(name, failed)
            log_event(log, "indexing failed", level=logging.WARNING, namespace=name, error=repr(e))

    def _know(self, name: str) -> None:
        if name not in self.known:
            self.known.add(name)
            metrics.know_namespace(name)

    def _failed(self, name: str, state: NamespaceState | None) -> None:
        """Count the failure; the lag keeps growing from the oldest unindexed entry we know of
        (the failed view's, else the last one observed, else the time the namespace was queued)."""
        self._know(name)
        metrics.INDEXING_FAILURES.labels(namespace=name).inc()
        if state is not None and state.tail.oldest_unindexed_ms is not None:
            self.oldest_ms[name] = min(
                self.oldest_ms.get(name, state.tail.oldest_unindexed_ms), state.tail.oldest_unindexed_ms
            )
        oldest = self.oldest_ms.get(name)
        if oldest is not None:
            lag = (self.components.clock.now_ms() - oldest) / 1000
            metrics.observe_namespace(name, lag_seconds=lag, tail_bytes=None, segments=None)

    async def _compact(self, keys: NamespaceKeys, name: str, report: PassReport) -> None:
        for _ in range(MAX_COMPACTIONS_PER_PASS):
            out = await compact_namespace(
                self.store, keys, self.settings, self.components, segment_io=self.segment_io
            )
            if out.status == "committed":
                report.compactions += 1
                continue
            if out.status == "aborted":
                report.compactions_aborted += 1
            return

    async def _confirm_idle(self, names: set[str]) -> set[str]:
        """Of ``names``, those whose WAL tail is empty, by a read that starts now."""
        idle = set()
        for name in names:
            keys = parse_queue_name(name)
            if keys is None:
                idle.add(name)
                continue
            state = self.states.get(name)
            if state is None:
                state = self.states[name] = indexing_state(keys, self.store, self.settings, self.components)
            try:
                await state.refresh()
            except Exception:
                continue
            if state.head == state.indexed_through:
                idle.add(name)
        return idle

    async def _maintain_guarded(self, name: str, report: PassReport, sem: asyncio.Semaphore) -> None:
        async with sem:
            try:
                await self._maintain(name, report)
            except Exception as e:
                report.errors += 1
                self.maintenance[name] = self.components.clock.monotonic() + self._gc_interval()
                log_event(log, "maintenance failed", level=logging.WARNING, namespace=name, error=repr(e))

    def _gc_interval(self) -> float:
        return max(self.settings.indexer.poll_interval_secs, self.settings.indexer.gc_grace_secs / 4)

    async def _maintain(self, name: str, report: PassReport) -> None:
        keys = parse_queue_name(name)
        if keys is None:
            self.maintenance.pop(name, None)
            return
        latest = await manifest_store.read_latest(self.store, keys)
        if latest is not None and pick_inputs(latest.segments, self.settings.indexer.compaction_fanin):
            await self._compact(keys, name, report)
        out = await collect_garbage(
            self.store,
            keys,
            self.settings,
            self.components,
            retain_versions=self.retain_versions,
            cache=self.manifests,
        )
        report.gc_deleted += out.deleted
        if out.more_later or out.version is not None:
            self.maintenance[name] = self.components.clock.monotonic() + self._gc_interval()
        else:
            self.maintenance.pop(name, None)

    # -- discovery sweep -----------------------------------------------------------------------------

    async def _sweep(self) -> set[str]:
        """List every namespace once: queue those with an unindexed tail, schedule a GC pass for
        all of them (orphans and pending deletes survive worker restarts), and reconcile each
        org's namespace catalog with the namespaces that exist (engine/catalog.py)."""
        found: set[str] = set()
        with_tail: set[str] = set()
        orgs = await self._list_prefixes("")
        for org_prefix in orgs:
            org = org_prefix.rstrip("/")
            if org_prefix == CLUSTER_PREFIX or not ORG_RE.fullmatch(org):
                continue
            existing: list[str] = []
            for ns_prefix in await self._list_prefixes(org_prefix):
                try:
                    keys = NamespaceKeys.of(org_prefix.rstrip("/"), namespace_from_prefix(ns_prefix))
                except Exception:
                    continue
                name = queue_name(keys)
                found.add(name)
                if await self._exists(keys):
                    existing.append(keys.namespace)
                try:
                    tail = await self._has_tail(keys, name)
                except Exception as e:  # one unreadable namespace must not end the sweep
                    self._failed(name, None)
                    log_event(
                        log,
                        "sweep could not read a namespace",
                        level=logging.WARNING,
                        namespace=name,
                        error=repr(e),
                    )
                    continue
                if tail:
                    with_tail.add(name)
            try:
                await self.catalog.reconcile(org, existing, still_exists=partial(self._exists_in, org))
            except Exception as e:
                log_event(
                    log,
                    "could not reconcile the namespace catalog",
                    level=logging.WARNING,
                    org=org,
                    error=repr(e),
                )
        now = self.components.clock.monotonic()
        for name in found:
            self.maintenance.setdefault(name, now)
        for gone in self.known - found - set(self.oldest_ms):
            metrics.forget_namespace(gone)
            self.known.discard(gone)
        if with_tail:
            await self.queue.add(with_tail)
        log_event(log, "namespace sweep", namespaces=len(found), with_tail=len(with_tail))
        return with_tail

    async def _list_prefixes(self, prefix: str) -> list[str]:
        out: list[str] = []
        after: str | None = None
        while True:
            page = await self.store.list_prefixes(prefix, start_after=after, limit=_LIST_PAGE)
            out += page
            if len(page) < _LIST_PAGE:
                return out
            after = page[-1]

    async def _exists_in(self, org: str, namespace: str) -> bool:
        return await self._exists(NamespaceKeys.of(org, namespace))

    async def _exists(self, keys: NamespaceKeys) -> bool:
        return await namespace_exists(self.store, self.settings, self.components, keys)

    async def _has_tail(self, keys: NamespaceKeys, name: str) -> bool:
        """Does the namespace have unindexed entries? Exports its series on the way: the segment
        count of its latest manifest, and for a tail the age of its first entry (store clock)."""
        latest = await manifest_store.read_latest(self.store, keys)
        self._know(name)
        metrics.observe_namespace(
            name, lag_seconds=None, tail_bytes=None, segments=len(latest.segments) if latest else 0
        )
        start = latest.indexed_through if latest else 0
        if latest is not None and latest.branch is not None and latest.branch.wal:
            return True  # a branch's fork range, read from its parent's WAL, awaits its indexer
        async for meta in self.store.list(keys.wal_prefix, start_after=keys.wal(start)):
            first_ms = int(meta.last_modified.timestamp() * 1000)
            self.oldest_ms[name] = min(self.oldest_ms.get(name, first_ms), first_ms)
            return True
        if name not in self.oldest_ms:
            metrics.observe_namespace(name, lag_seconds=0.0, tail_bytes=0, segments=None)
        return False


__all__ = ["IndexerLoop", "PassReport"]
