"""The engine facade: every namespace operation, by (org, namespace), over one object store.

The HTTP server and the embedded Python API are thin shells over ``Database``; both get the same
results and the same error classes. One ``Database`` per process: it holds each namespace's
state (latest manifest + folded WAL tail) and its group committer, for at most
``cache.max_open_namespaces`` namespaces (least recently used idle ones are dropped and reloaded
from the store when used again), and the query executor (``engine/executor.py``) every query's
CPU work runs on: parsing against the schema, the up-front cost check (``query/cost.py``) and
evaluation, under the caller's cancellation budget (``index/cancel.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from lagoon.config import Settings
from lagoon.engine import branch as branches
from lagoon.engine.catalog import Catalog
from lagoon.engine.components import Components
from lagoon.engine.copy import Copies
from lagoon.engine.errors import at_boundary, translate
from lagoon.engine.executor import QueryExecutor
from lagoon.engine.indexer import store_time_ms
from lagoon.engine.nodelock import NodeCommitLocks
from lagoon.engine.queue import Enqueuer, IndexingQueue
from lagoon.engine.recall_monitor import RecallMonitor
from lagoon.engine.routing import CommitRouter, Fallback, Stale
from lagoon.engine.segment_handle import SegmentHandle, in_use
from lagoon.engine.segment_io import SegmentIO, resolve_cache_dir
from lagoon.engine.state import NamespaceState
from lagoon.engine.tail import SegmentLike, Snapshot
from lagoon.engine.writer import COMMIT_WATCH, Committer, Op, SchemaMoved, copying
from lagoon.errors import DataCorruption, InvalidRequest, NamespaceDamaged, NotFound, TooManyRequests
from lagoon.format.keys import (
    DEFAULT_ORG,
    NAMESPACE_RE,
    NamespaceKeys,
    check_namespace,
    namespace_from_prefix,
    org_prefix,
)
from lagoon.format.manifest import SegmentRef
from lagoon.index import cancel
from lagoon.index.fanout import Fanout
from lagoon.index.sources.composite import CompositeSource
from lagoon.index.sources.protocol import DocSource
from lagoon.index.vector.plan import MAX_RECALL_TARGET, MIN_RECALL_TARGET
from lagoon.logs import log_event
from lagoon.query.cost import check_work
from lagoon.query.execute import execute_query
from lagoon.query.explain import explain_query
from lagoon.schema import Schema
from lagoon.storage.base import ObjectStore, StorageError
from lagoon.tracing import tracer
from lagoon.wire.query import MultiQueryRequest, QueryRequest, parse_request
from lagoon.wire.write import ValidatedWrite, embeds, parse_write

log = logging.getLogger("lagoon.engine")

NamespaceRepair = Callable[[ObjectStore, str, str], Awaitable[int]]
"""Repair ``(store, org, namespace)`` in place; returns the number of findings."""

_LIST_PARALLELISM = 16
MAX_STALE_ROUNDS = 3
"""A routed write validated again this often (the owner's schema kept changing) is committed by
the process that received it."""


@dataclass
class NamespaceHandle:
    state: NamespaceState
    committer: Committer
    # writes between taking the handle and submitting to its committer: such a handle is kept
    # (dropping it would let the next request open a second committer of the namespace)
    writes_in_flight: int = 0
    # its tail's unindexed bytes as last counted in ``Database._tails``
    tail_bytes: int = 0
    # (WAL head, schema) the namespace's owning process last reported (engine/routing.py): the
    # schema writes are validated against while it is newer than this process's own view
    route_schema: tuple[int, Schema] | None = None


def _traced_execute(
    req: QueryRequest | MultiQueryRequest, src: DocSource, max_returned_bytes: int = 0
) -> dict[str, Any]:
    with tracer.start_as_current_span("lagoon.execute", attributes={"lagoon.documents": src.num_docs}):
        return execute_query(req, src, max_returned_bytes)


class Database:
    """All namespaces of a store. Async; use from one event loop."""

    def __init__(
        self,
        store: ObjectStore,
        settings: Settings,
        components: Components | None = None,
        *,
        repair: NamespaceRepair | None = None,
    ) -> None:
        """``repair``: how a namespace whose manifest chain cannot be read is repaired before an
        admin delete (``lagoon.engine.ops.repair.repair_for_delete``; ops sit above this module,
        so the shells pass it in); without it such a delete is refused, naming ``lagoon repair``."""
        self.store = store
        self.repair = repair
        self.settings = settings
        self.components = components or Components()
        self._handles: OrderedDict[tuple[str, str], NamespaceHandle] = OrderedDict()
        self._tails = 0  # the open namespaces' unindexed tail bytes, as last counted (_tail_grew)
        # Namespaces whose data this node found unreadable at its last read: flagged in listings.
        self._damaged: set[tuple[str, str]] = set()
        self._closed = False
        # the serving processes of one node commit a namespace in turn (engine/nodelock.py)
        self.turns: NodeCommitLocks | None = None
        # ... and hand each namespace's validated writes to the one that owns it (engine/routing.py)
        self.router: CommitRouter | None = None
        server = settings.server
        self.executor = QueryExecutor(
            server.query_threads, server.query_threads_per_org, server.max_queued_queries
        )
        # Commits enqueue their namespace for the indexer (engine/queue.py), batched per node.
        self.enqueuer = Enqueuer(IndexingQueue(store, self.components), settings.indexer.poll_interval_secs)
        # Segment files for queries go through the node's memory LRU and disk cache (cache.*).
        # A query's reads of several cold segments run at once (server.segment_fetch_parallelism).
        width = server.segment_fetch_parallelism
        self._fanout = Fanout(width, pool_threads=server.query_threads * max(1, width - 1))
        self.segment_io = SegmentIO(store, settings.cache, cache_dir=resolve_cache_dir(settings) or "")
        self.segment_io.report_metrics()
        # A sample of ANN queries is re-run exactly in the background: lagoon_ann_recall{namespace}.
        self.recall = RecallMonitor(settings.ann)
        # Namespace markers and per-org counts: listing in O(page), the namespace limit by CAS.
        self.catalog = Catalog(store, self.components)
        # Copies between namespaces: operations whose state lives in the bucket (engine/copy.py).
        self.copies = Copies(self)

    # -- plumbing --------------------------------------------------------------------------------

    def handle(self, org: str, namespace: str) -> NamespaceHandle:
        key = (org, namespace)
        h = self._handles.get(key)
        if h is not None:
            self._handles.move_to_end(key)
        else:
            keys = NamespaceKeys.of(org, check_namespace(namespace))
            state = NamespaceState(keys, self.store, self.settings, self.components)
            state.segment_loader = self._open_segment
            committer = Committer(
                state,
                self.components,
                commit_window_ms=self.settings.server.commit_window_ms,
                on_commit=lambda _entry, _size: self.enqueuer.notify(keys),
                turns=self.turns,
            )
            h = self._handles[key] = NamespaceHandle(state, committer)
            self._trim_handles()
        return h

    def _trim_handles(self) -> None:
        """Drop least recently used handles beyond ``cache.max_open_namespaces``, and while the
        open namespaces' WAL tails together exceed ``cache.max_open_tail_bytes`` (idle ones only:
        a namespace with a write being validated, queued or committing keeps its handle; the
        newest stays). Runs when a namespace is opened and when an open one's tail grew past
        the bound (``_tail_grew``)."""
        cache = self.settings.cache
        excess = len(self._handles) - cache.max_open_namespaces
        tails = 0
        for h in self._handles.values():
            h.tail_bytes = h.state.tail.unindexed_bytes
            tails += h.tail_bytes
        if excess > 0 or tails > cache.max_open_tail_bytes:
            for key in list(self._handles)[:-1]:
                if excess <= 0 and tails <= cache.max_open_tail_bytes:
                    break
                h = self._handles[key]
                if h.committer.idle and not h.writes_in_flight:
                    del self._handles[key]
                    excess -= 1
                    tails -= h.tail_bytes
        self._tails = tails

    def _tail_grew(self, h: NamespaceHandle) -> None:
        """Count ``h``'s tail as it is now (after a commit or a refresh: it may have grown while
        the namespace stayed open) and close idle namespaces if the open tails together exceed
        ``cache.max_open_tail_bytes``. O(1) unless they do."""
        now = h.state.tail.unindexed_bytes
        if now == h.tail_bytes or self._handles.get((h.state.keys.org, h.state.keys.namespace)) is not h:
            return  # (unchanged, or closed meanwhile: no longer counted)
        self._tails += now - h.tail_bytes
        h.tail_bytes = now
        if self._tails > self.settings.cache.max_open_tail_bytes:
            self._trim_handles()

    async def _open_segment(self, state: NamespaceState, ref: SegmentRef, schema: Schema) -> SegmentLike:
        """Open the segment (its files verified: a damaged one is known now) and give the state a
        handle to it: the memory cache alone keeps its reader (engine/segment_handle.py)."""
        await self.segment_io.open(state.keys, ref, schema, lazy=True)
        return SegmentHandle(self.segment_io, state.keys, ref, schema)

    @at_boundary
    async def snapshot(self, org: str, namespace: str, *, strong: bool = True) -> Snapshot:
        h = self.handle(org, namespace)
        state = h.state
        try:
            snap = await state.snapshot(strong=strong)
        except DataCorruption:
            self._damaged.add((org, namespace))  # listing flags it (a later good read clears it)
            raise
        finally:
            self._tail_grew(h)  # (a refresh may have read more entries)
        self._damaged.discard((org, namespace))
        if not snap.exists:
            raise NotFound(f"namespace '{namespace}' was not found")
        pinned = bool(snap.settings.get("pinning"))
        m = state.manifest
        if m is not None and (pinned or state.pinned) and state.pinned_at != (pinned, m.version):
            self.segment_io.pin(state.keys, m.segments, pinned)  # keep (or release) them on disk
            state.pinned_at = (pinned, m.version)
        state.pinned = pinned
        return snap

    async def close(self) -> None:
        self._closed = True
        # (first, off the loop: a sample being measured unpins its segments on the loop)
        await asyncio.to_thread(self.recall.close)
        if self.router is not None:  # writes forwarded to this process are committed and answered
            await self.router.close()
        await self.copies.close()
        await asyncio.gather(*(h.committer.drain() for h in self._handles.values()))
        self.executor.close()
        self._fanout.close()
        await self.enqueuer.close()
        await self.segment_io.close()
        await self.store.close()

    # -- writes ------------------------------------------------------------------------------------

    @at_boundary
    async def write(
        self, namespace: str, body: Any, *, org: str = DEFAULT_ORG, offload: bool = False
    ) -> dict[str, Any]:
        """Validate and commit one write request. ``offload``: validate in a worker thread (the
        HTTP layer asks for it for large bodies, so the event loop keeps routing meanwhile);
        small bodies are validated inline, which keeps concurrent small writes in one group."""
        started = time.perf_counter()
        h = self.handle(org, namespace)
        h.writes_in_flight += 1
        try:
            return await self._write(h, org, namespace, body, offload, started)
        finally:
            h.writes_in_flight -= 1
            self._tail_grew(h)

    async def _write(
        self, h: NamespaceHandle, org: str, namespace: str, body: Any, offload: bool, started: float
    ) -> dict[str, Any]:
        await h.state.ensure_loaded()
        if isinstance(body, dict) and body.get("copy_from_namespace"):
            return await self._copy_now(org, namespace, body, started)
        if isinstance(body, dict) and body.get("branch_from_namespace"):
            return await self.branch(namespace, _branch_source(body), org=org)
        if copying(h.state.current().settings):  # a dead copy is removed before the write is refused
            await self.copies.settle_destination(org, namespace, h.state.current().settings)
        await self._check_backpressure(h)
        schema = self._write_schema(h)
        offload = offload or embeds(body, schema)  # the embedding model runs while validating
        op = await self._validated(body, schema, offload)
        creates = op.request is not None and bool(op.request.upserts or op.request.create_namespace)
        creates = creates and schema.id_type is None
        if creates:
            await self.catalog.before_create(
                org,
                namespace,
                limit=self.settings.limits.max_namespaces,
                count_existing=lambda: self._count_namespaces(org, namespace),
            )
        result = await self._submit_write(h, org, namespace, op, offload)
        if creates:
            await self.catalog.after_create(org, namespace)
        result.setdefault("performance", {})["server_total_ms"] = round(
            (time.perf_counter() - started) * 1000
        )
        return result

    async def _validated(self, body: Any, schema: Schema, offload: bool) -> Op:
        req = await asyncio.to_thread(parse_write, body, schema) if offload else parse_write(body, schema)
        if req.encryption is not None and req.encryption.get("mode") == "customer-managed":
            self._check_cmek(req.encryption["key_name"])
        return Op(kind="write", body=body, request=req, parsed_against=schema)

    def _write_schema(self, h: NamespaceHandle) -> Schema:
        """The schema a write is validated against: this process's view, or what the namespace's
        owning process last reported when that is newer (this process does not read the entries
        the owner commits until a read needs them)."""
        hint = h.route_schema
        if hint is not None and hint[0] > h.state.head:
            return hint[1]
        return h.state.current().schema

    async def _submit_write(
        self, h: NamespaceHandle, org: str, namespace: str, op: Op, offload: bool
    ) -> dict[str, Any]:
        """Commit a validated write: through the namespace's owning process when another serving
        process owns it (engine/routing.py), else (or when the owner does not take it) here."""
        router = self.router
        if router is None or router.owns(org, namespace):
            return await h.committer.submit(op)
        for _ in range(MAX_STALE_ROUNDS):
            request, schema = op.request, op.parsed_against
            assert request is not None and schema is not None
            try:
                result = await self._forward(router, org, namespace, request, schema)
            except Fallback:
                break
            except Stale as e:  # the owner commits on another schema: validate against it
                h.route_schema = (e.head, e.schema)
                op = await self._validated(op.body, e.schema, offload)
                continue
            h.route_schema = (int(result.get("version", 0)), request.schema)
            return result
        return await h.committer.submit(op)

    @staticmethod
    async def _forward(
        router: CommitRouter, org: str, namespace: str, request: ValidatedWrite, schema: Schema
    ) -> dict[str, Any]:
        """``router.forward``, carried on when the caller stops waiting (the owner may commit it
        all the same), with the commit watch (audit) told of its acknowledgement."""
        task = asyncio.ensure_future(router.forward(org, namespace, request, schema))
        watch = COMMIT_WATCH.get()
        if watch is not None:

            def done(t: asyncio.Future[dict[str, Any]]) -> None:
                if not t.cancelled() and t.exception() is None:
                    watch(t.result())

            task.add_done_callback(done)
        return await asyncio.shield(task)

    async def commit_forwarded(
        self, org: str, namespace: str, request: ValidatedWrite, schema: Schema
    ) -> dict[str, Any]:
        """The owner's side of routing: commit a write another serving process validated against
        ``schema``, in this process's group for the namespace."""
        h = self.handle(org, namespace)
        h.writes_in_flight += 1
        try:
            await h.state.ensure_loaded()
            await self._check_backpressure(h)
            current = h.state.current()
            if current.schema != schema:
                raise Stale(current.schema, current.head)
            op = Op(kind="write", body=None, request=request, parsed_against=schema)
            try:
                return await h.committer.submit(op)
            except SchemaMoved as e:
                raise Stale(e.schema, e.head) from None
        finally:
            h.writes_in_flight -= 1
            self._tail_grew(h)

    async def start_routing(self, router: CommitRouter) -> None:
        self.router = router
        await router.start(self.commit_forwarded)

    async def _copy_now(
        self, org: str, namespace: str, body: dict[str, Any], started: float
    ) -> dict[str, Any]:
        """``copy_from_namespace``: a copy operation, awaited (engine/copy.py)."""
        others = set(body) - {"copy_from_namespace"}
        if others:
            raise InvalidRequest(f"copy_from_namespace cannot be combined with {', '.join(sorted(others))}")
        op = await self.copies.start(org, namespace, body["copy_from_namespace"], "copy_from_namespace")
        result = await self.copies.wait(op)
        result.setdefault("performance", {})["server_total_ms"] = round(
            (time.perf_counter() - started) * 1000
        )
        return result

    @at_boundary
    async def start_copy(self, namespace: str, body: Any, *, org: str = DEFAULT_ORG) -> dict[str, Any]:
        """``start_copy_from``: start copying another namespace into ``namespace``; the operation
        token to poll (``poll_copy``)."""
        check_namespace(namespace)
        spec = body  # the SDKs nest the parameters under copy_from_namespace, as for copy_from
        if isinstance(body, dict) and "copy_from_namespace" in body:
            others = set(body) - {"copy_from_namespace"}
            if others:
                raise InvalidRequest(f"start_copy_from: unknown field(s) {', '.join(sorted(others))}")
            spec = body["copy_from_namespace"]
        op = await self.copies.start(org, namespace, spec, "start_copy_from")
        return {"token": op.token}

    @at_boundary
    async def poll_copy(self, namespace: str, token: str, *, org: str = DEFAULT_ORG) -> dict[str, Any]:
        """``poll_copy_from``: the copy operation's status (any node answers; engine/copy.py)."""
        check_namespace(namespace)
        return await self.copies.poll(org, namespace, token)

    async def check_create(self, org: str, namespace: str, encryption: dict[str, str] | None) -> None:
        """What a write that creates ``namespace`` checks first: the encryption it asks for, the
        org's namespace limit."""
        if encryption is not None and encryption.get("mode") == "customer-managed":
            self._check_cmek(encryption["key_name"])
        await self.catalog.before_create(
            org,
            namespace,
            limit=self.settings.limits.max_namespaces,
            count_existing=lambda: self._count_namespaces(org, namespace),
        )

    async def created(self, org: str, namespace: str) -> None:
        await self.catalog.after_create(org, namespace)

    async def deleted(self, org: str, namespace: str) -> None:
        state = self.handle(org, namespace).state

        async def exists() -> bool:
            return (await state.snapshot(strong=True)).exists

        await self.catalog.after_delete(org, namespace, exists=exists)

    def _check_cmek(self, key_name: str) -> None:
        """A customer-managed key is honoured when this server already encrypts every object it
        writes with that KMS key (storage.sse = aws:kms, storage.sse_kms_key_id = the key): every
        object of the namespace is then encrypted with it. Anything else is a 400 saying why,
        before anything is written (per-namespace keys are not implemented; docs/compatibility.md)."""
        st = self.settings.storage
        if st.backend != "s3":
            raise InvalidRequest(
                f"encryption: a customer-managed key needs the s3 storage backend with SSE-KMS; this "
                f"server stores on the {st.backend} backend, which cannot encrypt with a KMS key"
            )
        if st.sse != "aws:kms" or st.sse_kms_key_id != key_name:
            current = (
                f"SSE-KMS with key {st.sse_kms_key_id!r}"
                if st.sse == "aws:kms"
                else (f"SSE {st.sse}" if st.sse else "no server-side encryption")
            )
            raise InvalidRequest(
                f"encryption: key {key_name!r} cannot be used: this server writes every object with "
                f"{current}; a namespace can name only the server's own KMS key (storage.sse = "
                "'aws:kms' with storage.sse_kms_key_id = that key); per-namespace keys are not implemented"
            )

    async def _count_namespaces(self, org: str, namespace: str) -> int:
        """The namespaces of ``org`` other than ``namespace``, the slow way (every folder read):
        only while the org's catalog is not complete (engine/catalog.py), up to the limit."""
        limit = self.settings.limits.max_namespaces or 0
        count, cursor = 0, None
        while count < limit:
            page = await self._list_by_folders(org, "", cursor, 1000)
            count += sum(1 for n in page["namespaces"] if n["id"] != namespace)
            cursor = page.get("next_cursor")
            if not cursor:
                break
        return count

    async def _check_backpressure(self, h: NamespaceHandle) -> None:
        """429 while the namespace's unindexed WAL tail exceeds ``indexer.max_unindexed_bytes``
        (after one refresh: the indexer may have advanced the manifest since this node looked)."""
        limit = self.settings.indexer.max_unindexed_bytes
        if h.state.tail.unindexed_bytes <= limit:
            return
        await h.state.refresh()
        if h.state.tail.unindexed_bytes > limit:
            raise TooManyRequests(
                f"namespace is {h.state.tail.unindexed_bytes} bytes behind indexing (limit {limit}); "
                "retry after the indexer catches up",
                retry_after=max(1.0, self.settings.indexer.poll_interval_secs),
            )

    @at_boundary
    async def branch(
        self, namespace: str, source: str, *, at_version: int | None = None, org: str = DEFAULT_ORG
    ) -> dict[str, Any]:
        """Create ``namespace`` as a copy-on-write branch of ``source`` at ``at_version`` (default:
        its current version): one manifest and a few small markers, whatever the source's size
        (docs/rfcs/0007-branches.md)."""
        started = time.perf_counter()
        if check_namespace(source) == namespace:
            raise InvalidRequest("branch: a namespace cannot be branched from itself")
        src = await self.snapshot(org, source, strong=True)
        if at_version is not None and at_version > src.head:
            raise InvalidRequest(f"at_version {at_version}: namespace '{source}' is at version {src.head}")
        version = src.head if at_version is None else at_version
        # The documents the branch starts with (known for a branch at the current version), read
        # before anything is written: a source with a damaged segment refuses the branch whole.
        async with in_use(src.segments):
            rows_at_fork = src.source().num_docs if version == src.head else 0
        h = self.handle(org, namespace)
        if (await h.state.snapshot(strong=True)).exists:
            raise InvalidRequest(f"branch: the destination namespace '{namespace}' must not exist")
        await self.catalog.before_create(
            org,
            namespace,
            limit=self.settings.limits.max_namespaces,
            count_existing=lambda: self._count_namespaces(org, namespace),
        )
        src_keys = self.handle(org, source).state.keys
        try:
            at = await branches.create_branch(
                self.store, self.settings, self.components, src_keys, h.state.keys, version, src.head
            )
        except BaseException:
            await self.catalog.after_delete(org, namespace, exists=lambda: h.state.exists())
            raise
        await self.catalog.after_create(org, namespace)
        await h.state.refresh_manifest()
        if at.version > at.indexed_through:
            self.enqueuer.notify(h.state.keys)  # the inherited tail is indexed like any other
        return {
            "status": "OK",
            "message": f"branched from '{source}' at version {at.version} ({len(at.segments())} segments shared)",
            "rows_affected": rows_at_fork,
            "billing": {"billable_logical_bytes_written": 0},
            "version": at.version,
            "performance": {"server_total_ms": round((time.perf_counter() - started) * 1000)},
        }

    async def snapshot_at(self, org: str, namespace: str, version: int, *, strong: bool = True) -> Snapshot:
        """The namespace as of ``version`` (a Lagoon extension: ``at_version`` on queries), read
        into a view of its own; the node's live view is not touched."""
        snap = await self.snapshot(org, namespace, strong=strong)
        if version == snap.head:
            return snap
        keys = self.handle(org, namespace).state.keys
        now = await store_time_ms(self.store)
        at = await branches.resolve_version(self.store, keys, version, snap.head, self.settings, now)
        past = NamespaceState(keys, self.store, self.settings, self.components)
        past.segment_loader = self._open_segment
        await past.load_at(at.manifest(), version)
        return past.current()

    @at_boundary
    async def delete_namespace(self, namespace: str, *, org: str = DEFAULT_ORG) -> dict[str, Any]:
        """Delete the namespace: ``{"status": "OK", "rows_deleted": N}``, N the documents it held
        (left out when its data could not be read). A namespace whose manifest cannot be read
        cannot be deleted (where its WAL ends is only known from the manifest): ``NamespaceDamaged``
        (409) saying so; ``lagoon repair`` makes it readable, and then deletable, again."""
        try:
            await self.snapshot(org, namespace, strong=True)
        except NamespaceDamaged:
            return await self._delete_damaged(org, namespace)
        h = self.handle(org, namespace)
        done = await h.committer.submit(Op(kind="truncate"))

        async def exists() -> bool:
            return (await h.state.snapshot(strong=True)).exists

        await self.catalog.after_delete(org, namespace, exists=exists)
        out: dict[str, Any] = {"status": "OK"}
        if "rows_deleted" in done:
            out["rows_deleted"] = done["rows_deleted"]
        return out

    async def _delete_damaged(self, org: str, namespace: str) -> dict[str, Any]:
        """Delete a namespace whose data cannot be read. Its documents are not needed to delete
        it, only where its WAL ends: known from a readable manifest chain (a damaged segment or
        WAL entry), the truncating entry is committed as for any namespace and the damaged
        objects go with the rest (the indexer lists them for deletion, GC removes them). When
        the chain itself cannot be read, the namespace's repair (``lagoon repair --namespace``,
        the same compare-and-swap fixes, safe beside other nodes) runs first."""
        h = self.handle(org, namespace)
        try:
            await h.committer.submit(Op(kind="truncate"))
        except (DataCorruption, NamespaceDamaged) as e:
            if self.repair is None:  # (an engine built without it: repair by hand, then delete)
                raise NamespaceDamaged(
                    f"cannot delete namespace '{namespace}' before it is repaired: {e}"
                ) from e
            findings = await self.repair(self.store, org, namespace)
            log_event(
                log,
                "repaired a damaged namespace to delete it",
                level=logging.WARNING,
                namespace=f"{org}/{namespace}",
                findings=findings,
            )
            self._handles.pop((org, namespace), None)  # (its view predates the repair)
            h = self.handle(org, namespace)
            await h.committer.submit(Op(kind="truncate"))

        async def exists() -> bool:
            return (await h.state.snapshot(strong=True)).exists

        await self.catalog.after_delete(org, namespace, exists=exists)
        return {"status": "OK"}

    @at_boundary
    async def update_schema(self, namespace: str, schema: Any, *, org: str = DEFAULT_ORG) -> dict[str, Any]:
        if not isinstance(schema, dict):
            raise InvalidRequest("schema: expected an object mapping attribute names to types")
        await self.snapshot(org, namespace, strong=True)
        await self.write(namespace, {"schema": schema, "create_namespace": False}, org=org)
        return await self.get_schema(namespace, org=org)

    @at_boundary
    async def update_metadata(self, namespace: str, body: Any, *, org: str = DEFAULT_ORG) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise InvalidRequest("metadata: expected an object")
        unknown = set(body) - {"pinning", "read_only", "ann_recall_target"}
        if unknown:
            raise InvalidRequest(f"metadata: unknown field(s) {', '.join(sorted(unknown))}")
        changes: dict[str, Any] = {}
        if "pinning" in body:
            p = body["pinning"]
            if p is True:
                p = {"replicas": 1}
            elif p is False:
                p = None
            elif p is not None and not (
                isinstance(p, dict)
                and set(p) <= {"replicas"}
                and isinstance(p.get("replicas", 1), int)
                and not isinstance(p.get("replicas", 1), bool)
                and p.get("replicas", 1) >= 1
            ):
                raise InvalidRequest("pinning: expected true, false, null or {'replicas': N} with N >= 1")
            changes["pinning"] = p
        if "read_only" in body:
            if not isinstance(body["read_only"], bool):
                raise InvalidRequest("read_only: expected true or false")
            changes["read_only"] = body["read_only"]
        if "ann_recall_target" in body:
            t = body["ann_recall_target"]
            if t is not None and (
                isinstance(t, bool)
                or not isinstance(t, int | float)
                or not MIN_RECALL_TARGET <= float(t) <= MAX_RECALL_TARGET
            ):
                raise InvalidRequest(
                    f"ann_recall_target: expected null or a number between {MIN_RECALL_TARGET} "
                    f"and {MAX_RECALL_TARGET}"
                )
            changes["ann_recall_target"] = None if t is None else float(t)
        # The answer is read before the change commits (a damaged segment refuses the request with
        # nothing written, never after it committed), then again with the change in it.
        current = await self.metadata(namespace, org=org)
        if not changes:
            return current
        await self.handle(org, namespace).committer.submit(Op(kind="settings", settings=changes))
        return await self.metadata(namespace, org=org)

    # -- reads -----------------------------------------------------------------------------------

    @at_boundary
    async def query(self, namespace: str, body: Any, *, org: str = DEFAULT_ORG) -> dict[str, Any]:
        started = time.perf_counter()
        consistency = body.get("consistency") if isinstance(body, dict) else None
        strong = not (isinstance(consistency, dict) and consistency.get("level") == "eventual")
        limit = int(self.settings.limits.max_query_work)
        with tracer.start_as_current_span(
            "lagoon.query",
            attributes={"lagoon.namespace": namespace, "lagoon.org": org, "lagoon.strong": strong},
        ):
            at_version, body = _at_version(body)
            with tracer.start_as_current_span("lagoon.snapshot"):
                snap = (
                    await self.snapshot(org, namespace, strong=strong)
                    if at_version is None
                    else await self.snapshot_at(org, namespace, at_version, strong=strong)
                )
            async with in_use(snap.segments):  # (no segment evicted while the query runs)
                src = self._query_source(snap)
                lease = functools.partial(self._pinned_source, snap, asyncio.get_running_loop())

                def work() -> dict[str, Any]:
                    with tracer.start_as_current_span("lagoon.plan"):
                        req = parse_request(body, snap.schema)
                        check_work(req, lambda attr: src.logical_bytes([attr]), limit)
                    out = _traced_execute(req, src, self.settings.limits.max_returned_bytes)
                    self.recall.offer(f"{org}/{namespace}", req, src, out, lease)  # maybe measured later
                    return out

                try:
                    result = await self.executor.run(
                        work, org=org, namespace=namespace, budget=cancel.current()
                    )
                finally:  # the query may have decoded more of its segments: charged once it has answered
                    refs = [s.ref for s in snap.segments]
                    keys = NamespaceKeys.of(org, namespace)
                    asyncio.get_running_loop().call_soon(self.segment_io.recharge, keys, refs)
        perf = result.setdefault("performance", {})
        perf["exhaustive_search_count"] = snap.unindexed_rows
        if snap.damage:
            perf["damage"] = list(snap.damage)
        if not strong:
            state = self.handle(org, namespace).state
            perf["staleness_ms"] = state.staleness_ms()
            if state.unreachable_since is not None:
                perf["store_unreachable"] = True
        perf["cache_hit_ratio"] = 1.0
        perf["cache_temperature"] = "hot"
        perf["server_total_ms"] = round((time.perf_counter() - started) * 1000)
        perf.setdefault("query_execution_ms", perf["server_total_ms"])
        return result

    @contextlib.contextmanager
    def _pinned_source(self, snap: Snapshot, loop: asyncio.AbstractEventLoop) -> Iterator[CompositeSource]:
        """From a thread other than ``loop``'s (the recall monitor's): the snapshot's source, its
        segments pinned on the loop as a query pins them, for the duration of the block."""

        async def enter() -> tuple[contextlib.AsyncExitStack, CompositeSource]:
            stack = contextlib.AsyncExitStack()
            await stack.enter_async_context(in_use(snap.segments))
            try:
                return stack, self._query_source(snap)
            except BaseException:
                await stack.aclose()
                raise

        stack, src = asyncio.run_coroutine_threadsafe(enter(), loop).result()
        try:
            yield src
        finally:
            del src  # (the source over the pinned readers goes with the pins)
            asyncio.run_coroutine_threadsafe(stack.aclose(), loop).result()

    def _query_source(self, snap: Snapshot) -> CompositeSource:
        """The snapshot's documents as a query reads them: with the node's default recall target
        (unless the namespace sets one) and its cold segments read at once (``_fanout``)."""
        src = snap.source()
        if snap.settings.get("ann_recall_target") is None:  # the node's default target
            src.recall_target = self.settings.ann.recall_target
        src.fanout = self._fanout if self._fanout.width > 1 else None
        return src

    @at_boundary
    async def explain(self, namespace: str, body: Any, *, org: str = DEFAULT_ORG) -> dict[str, Any]:
        consistency = body.get("consistency") if isinstance(body, dict) else None
        strong = not (isinstance(consistency, dict) and consistency.get("level") == "eventual")
        snap = await self.snapshot(org, namespace, strong=strong)
        async with in_use(snap.segments):
            src = self._query_source(snap)

            def work() -> str:  # may read segment data
                return explain_query(parse_request(body, snap.schema), src)

            text = await self.executor.run(work, org=org, namespace=namespace, budget=cancel.current())
        header = (
            f"snapshot: manifest v{snap.manifest_version}, WAL through seq {snap.head} "
            f"({snap.head - snap.indexed_through} unindexed entries)\n"
        )
        return {"plan_text": header + text}

    @at_boundary
    async def get_schema(self, namespace: str, *, org: str = DEFAULT_ORG) -> dict[str, Any]:
        snap = await self.snapshot(org, namespace, strong=True)
        return snap.schema.to_json()

    @at_boundary
    async def metadata(self, namespace: str, *, org: str = DEFAULT_ORG) -> dict[str, Any]:
        snap = await self.snapshot(org, namespace, strong=True)
        async with in_use(snap.segments):
            src = snap.source()
        unindexed = snap.unindexed_bytes
        out: dict[str, Any] = {
            "approx_logical_bytes": src.logical_bytes(list(snap.schema.attributes)),
            "approx_row_count": src.num_docs,
            "created_at": _iso(snap.created_at_ms),
            "updated_at": _iso(snap.updated_at_ms),
            "encryption": dict(snap.settings.get("encryption") or {"mode": "default"}),
            "index": {
                "status": "updating",
                "unindexed_bytes": unindexed,
                "unindexed_rows": snap.unindexed_rows,
            }
            if unindexed
            else {"status": "up-to-date"},
            "schema": snap.schema.to_json(),
            # The commit version: the WAL seq of the latest write (docs/http-api.md, Versions).
            "version": snap.head,
        }
        lineage = branches.branching(self.handle(org, namespace).state.manifest)
        if lineage is not None:
            out["branching"] = lineage
        pinning = snap.settings.get("pinning")
        if pinning:
            out["pinning"] = {"replicas": pinning.get("replicas", 1)}
        if snap.settings.get("read_only"):
            out["read_only"] = True
        target = snap.settings.get("ann_recall_target")
        measured, samples = self.recall.recall(f"{org}/{namespace}")
        out["ann_recall"] = {
            "target": self.settings.ann.recall_target if target is None else target,
            "measured": measured,
            "samples": samples,
        }
        return out

    @at_boundary
    async def hint_cache_warm(self, namespace: str, *, org: str = DEFAULT_ORG) -> dict[str, Any]:
        """Start loading the namespace in the background (202); 404 if it does not exist (checked
        without loading it: CURRENT, a manifest probe and the WAL tail's schema fields)."""
        h = self.handle(org, namespace)
        if not await h.state.exists():
            raise NotFound(f"namespace '{namespace}' was not found")
        task = asyncio.create_task(h.state.snapshot(strong=True))
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)
        return {"status": "ACCEPTED", "message": "cache warming started"}

    @at_boundary
    async def list_namespaces(
        self, *, org: str = DEFAULT_ORG, prefix: str = "", cursor: str | None = None, page_size: int = 100
    ) -> dict[str, Any]:
        """Namespaces of ``org`` whose name starts with ``prefix``, in name order.

        The cursor is the last name of the previous page. From the org's catalog (one GET of its
        record, one LIST of its markers: engine/catalog.py), whatever the org holds; in an org
        whose catalog is not complete yet (it predates the catalog and no sweep or repair has
        reconciled it), from its namespace folders, each checked to exist.
        """
        if not 1 <= page_size <= 1000:
            raise InvalidRequest("page_size: expected 1..1000")
        if cursor is not None:
            check_namespace(cursor)
        if prefix and not _valid_prefix(prefix):
            return {"namespaces": []}
        try:
            names = await self.catalog.page(org, prefix=prefix, after=cursor, limit=page_size + 1)
        except StorageError as e:
            raise translate(e, "listing namespaces") from e
        if names is None:
            return await self._list_by_folders(org, prefix, cursor, page_size)
        page = names[:page_size]
        out: dict[str, Any] = {"namespaces": [self._entry(org, n) for n in page]}
        if len(names) > page_size:
            out["next_cursor"] = page[-1]
        return out

    def _entry(self, org: str, name: str, damaged: bool = False) -> dict[str, Any]:
        """A listing entry: ``{"id"}``, plus ``"damaged": true`` for a namespace whose data could
        not be read (it stays listed and deletable; `lagoon repair` fixes it)."""
        if damaged or (org, name) in self._damaged:
            return {"id": name, "damaged": True}
        return {"id": name}

    async def _list_by_folders(
        self, org: str, prefix: str, cursor: str | None, page_size: int
    ) -> dict[str, Any]:
        """The listing of an org without a complete catalog: namespace folders in key order
        ("name/"), each checked to exist (deleted ones are skipped): for a candidate this node
        has not loaded, that costs CURRENT, a manifest probe and a WAL listing
        (``NamespaceState.exists``), never its segments."""
        base = org_prefix(org)
        after = base + cursor + "/" if cursor else None
        names: list[str] = []
        sem = asyncio.Semaphore(_LIST_PARALLELISM)

        damaged: set[str] = set()

        async def alive(name: str) -> bool:
            async with sem:
                try:
                    h = self._handles.get((org, name))
                    if h is not None:
                        return await h.state.exists()
                    keys = NamespaceKeys.of(org, name)  # not kept: listing must not load namespaces
                    return await NamespaceState(keys, self.store, self.settings, self.components).exists()
                except DataCorruption:  # one unreadable namespace must not fail the org's listing
                    damaged.add(name)
                    return True

        batch_size = max(page_size, 100)
        more = True
        while len(names) <= page_size and more:
            try:
                batch = await self.store.list_prefixes(base, start_after=after, limit=batch_size)
            except StorageError as e:
                raise translate(e, "listing namespaces") from e
            more = len(batch) >= batch_size
            if not batch:
                break
            after = batch[-1]
            candidates = [namespace_from_prefix(p) for p in batch]
            candidates = [c for c in candidates if c.startswith(prefix) and _valid_name(c)]
            flags = await asyncio.gather(*(alive(c) for c in candidates))
            names += [c for c, ok in zip(candidates, flags, strict=True) if ok]
        page = names[:page_size]
        out: dict[str, Any] = {"namespaces": [self._entry(org, n, n in damaged) for n in page]}
        if len(names) > page_size or (more and page):
            out["next_cursor"] = page[-1]
        return out


def _valid_prefix(prefix: str) -> bool:
    """Could a namespace name start with ``prefix``?"""
    return len(prefix) <= 128 and NAMESPACE_RE.fullmatch(prefix) is not None


def _valid_name(name: str) -> bool:
    try:
        check_namespace(name)
    except InvalidRequest:
        return False
    return True


def _iso(ms: int | None) -> str:
    from lagoon.values import format_datetime

    return format_datetime(ms or 0)


def _branch_source(body: dict[str, Any]) -> str:
    """The source of the write route's ``branch_from_namespace`` (a name or {"source_namespace"})."""
    spec = body["branch_from_namespace"]
    if isinstance(spec, dict):
        extra = set(spec) - {"source_namespace"}
        if extra:
            raise InvalidRequest(f"branch_from_namespace: {', '.join(sorted(extra))} not supported")
        spec = spec.get("source_namespace")
    if not isinstance(spec, str):
        raise InvalidRequest("branch_from_namespace: expected a source namespace name")
    others = set(body) - {"branch_from_namespace"}
    if others:
        raise InvalidRequest(f"branch_from_namespace cannot be combined with {', '.join(sorted(others))}")
    return spec


def parse_at_version(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidRequest(
            f"at_version: expected a positive integer (a namespace version), got {value!r:.40}"
        )
    return value


def _at_version(body: Any) -> tuple[int | None, Any]:
    """A query's ``at_version`` (Lagoon extension) and the body without it."""
    if not isinstance(body, dict) or body.get("at_version") is None:
        return None, body
    return parse_at_version(body["at_version"]), {k: v for k, v in body.items() if k != "at_version"}
