"""Work discovery: the cluster-wide indexing queue ``_lagoon/queue/indexing.json``.

One small JSON object maps ``"org/namespace"`` to the time (ms, writer clock) the namespace was
first enqueued since it was last idle. Every update is a compare-and-swap (``lagoon.storage.cas``):
a read-modify-write guarded by ``IfMatch(etag)`` (create-if-absent when the object is missing),
retried on a lost race. Writers
add namespaces after commits; workers read it once per poll and remove namespaces whose WAL tail
is empty. Nobody lists every namespace per poll.

Why no commit is forgotten (a namespace with unindexed entries stays queued):

- Writers (``Enqueuer``) write the queue *after* each commit — batched per node to at most one
  write per poll interval, but never skipped: a commit made while a write is throttled marks the
  namespace dirty, and the next write (at the end of the interval) includes it. Every write
  changes the object's bytes (a fresh nonce), so its etag changes on every store.
- A worker removes namespaces by (1) HEAD for the etag, (2) GET the content, (3) check each
  candidate's tail is empty with a read that starts after (1), (4) PUT with ``IfMatch`` of (1).
  Take a commit C of namespace N and the writer's queue write W that follows it. If W lands
  before (1), the worker's content includes N and its check (3) — after (1), so after C — sees C's
  entry: N stays. If W lands after (1), the etag changed and (4) fails: the worker starts over.
  Either way N is not removed while C is unindexed.

A lost or corrupt queue object only costs liveness (namespaces are found again by the worker's
periodic sweep); it never affects what queries return, because queries read the WAL tail anyway.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

import orjson

from lagoon.engine.components import Components
from lagoon.format.framing import crc32c
from lagoon.format.keys import NamespaceKeys, queue_key
from lagoon.logs import log_event
from lagoon.storage import cas
from lagoon.storage.base import ObjectNotFound, ObjectStore, StorageError

log = logging.getLogger("lagoon.queue")

MAGIC = "lagoon-indexing-queue"
FORMAT_VERSION = 1
_CAS_ATTEMPTS = 32


def queue_name(keys: NamespaceKeys) -> str:
    return f"{keys.org}/{keys.namespace}"


def parse_queue_name(name: str) -> NamespaceKeys | None:
    org, sep, ns = name.partition("/")
    if not sep:
        return None
    try:
        return NamespaceKeys.of(org, ns)
    except Exception:
        return None


def encode_queue(namespaces: dict[str, int], *, nonce: str, updated_ms: int) -> bytes:
    body = {"namespaces": dict(sorted(namespaces.items())), "nonce": nonce, "updated_ms": updated_ms}
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    doc = {"magic": MAGIC, "format_version": FORMAT_VERSION, "crc32c": crc32c(canonical), "queue": body}
    return orjson.dumps(doc)


def decode_queue(data: bytes) -> dict[str, int] | None:
    """The namespace map, or None if the object is not a readable queue of this format."""
    try:
        doc = orjson.loads(data)
        body = doc["queue"]
        if doc.get("magic") != MAGIC or not isinstance(body, dict):
            return None
        if crc32c(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)) != doc.get("crc32c"):
            return None
        return {str(k): int(v) for k, v in body["namespaces"].items()}
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return None


class IndexingQueue:
    """CAS access to the queue object."""

    def __init__(self, store: ObjectStore, components: Components) -> None:
        self.store = store
        self.components = components
        self.key = queue_key()
        self.writes = 0

    async def read(self) -> dict[str, int]:
        """The queued namespaces (one GET); {} when the object is missing or unreadable."""
        try:
            data = await self.store.get(self.key)
        except ObjectNotFound:
            return {}
        got = decode_queue(data)
        if got is None:
            log_event(log, "indexing queue object unreadable; treating it as empty", level=logging.WARNING)
            return {}
        return got

    async def _update(self, change: Callable[[dict[str, int]], Awaitable[dict[str, int] | None]]) -> bool:
        """Apply ``change`` (current map -> new map, or None to leave it) by compare-and-swap
        (``lagoon.storage.cas``); True when the object was written."""

        async def step(data: bytes | None) -> cas.Keep[None] | cas.Write[None]:
            after = await change(decode_queue(data) or {} if data is not None else {})
            if after is None:
                return cas.Keep(None)
            nonce, now = self.components.nonce().hex(), self.components.clock.now_ms()
            return cas.Write(encode_queue(after, nonce=nonce, updated_ms=now), None)

        async def jitter() -> None:
            await asyncio.sleep(self.components.rng.uniform(0, 0.05))

        result = await cas.update(self.store, self.key, step, attempts=_CAS_ATTEMPTS, pause=jitter)
        if result.written:
            self.writes += 1
        return result.written

    async def add(self, names: Iterable[str]) -> None:
        """Enqueue ``names`` (keeping earlier first-enqueued times). Always writes the object.
        Raises ``CasExhausted`` (a transient storage error) when every attempt lost a race."""
        wanted = set(names)
        now = self.components.clock.now_ms()

        async def change(before: dict[str, int]) -> dict[str, int]:
            after = dict(before)
            for n in wanted:
                after.setdefault(n, now)
            return after

        await self._update(change)

    async def remove_idle(
        self, candidates: Iterable[str], idle: Callable[[set[str]], Awaitable[set[str]]]
    ) -> set[str]:
        """Remove the candidates that ``idle`` confirms have an empty tail; returns those removed.

        ``idle`` is called after the etag was read, so a commit it misses is followed by a queue
        write that makes the conditional PUT fail (see the module docstring).
        """
        wanted = set(candidates)
        gone: set[str] = set()

        async def change(before: dict[str, int]) -> dict[str, int] | None:
            nonlocal gone
            gone = set()
            present = wanted & set(before)
            if not present:
                return None
            gone = await idle(present)
            if not gone:
                return None
            return {n: t for n, t in before.items() if n not in gone}

        try:
            written = await self._update(change)
        except cas.CasExhausted:
            return set()
        return gone if written else set()


class Enqueuer:
    """A node's writer-side batching: after a commit, the namespace is written to the queue within
    ``interval`` seconds, with at most one queue write per interval for the whole node."""

    def __init__(self, queue: IndexingQueue, interval_secs: float) -> None:
        self.queue = queue
        self.interval = interval_secs
        self._dirty: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._last_write = float("-inf")
        self._closed = False
        self._flushing = False

    def notify(self, keys: NamespaceKeys) -> None:
        """A commit to ``keys`` succeeded (sync: called from the committer)."""
        self._dirty.add(queue_name(keys))
        if self._closed:
            return
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        clock = self.queue.components.clock
        while self._dirty and not self._closed:
            wait = self._last_write + self.interval - clock.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            await self._flush_once()

    async def _flush_once(self) -> None:
        batch, self._dirty = self._dirty, set()
        self._last_write = self.queue.components.clock.monotonic()
        self._flushing = True
        try:
            await self.queue.add(batch)
        except StorageError as e:
            self._dirty |= batch  # try again after the interval
            log_event(log, "could not enqueue namespaces for indexing", level=logging.WARNING, error=str(e))
        except BaseException:
            self._dirty |= batch
            raise
        finally:
            self._flushing = False

    async def close(self) -> None:
        """Flush what is dirty now (best effort) and stop."""
        self._closed = True
        task = self._task
        if task is not None and not task.done():
            if not self._flushing:
                task.cancel()  # it is only waiting for the interval
            await asyncio.gather(task, return_exceptions=True)
        if self._dirty:
            await self._flush_once()


__all__ = [
    "Enqueuer",
    "IndexingQueue",
    "decode_queue",
    "encode_queue",
    "parse_queue_name",
    "queue_name",
]
