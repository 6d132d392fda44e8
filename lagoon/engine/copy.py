"""Copies between namespaces (``copy_from_namespace``, ``start_copy_from`` / ``poll_copy_from``).

A copy is an *operation* whose state lives in the bucket (``format/operation.py``,
docs/formats/operations.md), so it does not depend on the node that started it:

1. **Start** (any node): check the request (400s before anything is written), take one strong
   snapshot of the source, create the operation record (create-if-absent under a random token),
   then *claim* the destination with one commit that creates it (the source's schema, distance
   metric, encryption) and stores the copy's marker in its settings:
   ``{"copy": {"operation": token, "source": name, "running": true}}``. The claim is
   conditional on the destination not existing (checked at commit time, so two copies into one
   destination cannot both win). While the marker says running, the destination refuses every
   other write with 409 (``writer.copying``): the copy is its only writer.
2. **Run** (the starting node, in the background): the snapshot's documents are read in batches
   of at most ``BATCH_BYTES`` (and ``MAX_BATCH_ROWS``) on the query executor's threads (never on
   the event loop; segment blocks are fetched there), validated there too, and committed one
   batch per WAL entry, each conditional on the marker still naming this operation. Memory is
   bounded by one batch plus the destination's unindexed tail, which waits for the indexer like
   any writer (``indexer.max_unindexed_bytes``). A heartbeat task rewrites the record with the
   progress every ``HEARTBEAT_SECS`` (compare-and-swap on its etag).
3. **Finish**: one commit sets the marker's ``running`` to false (the copy is then visible as
   complete and the destination takes writes), then the record is set ``finished`` with the
   result. A copy that fails deletes what it wrote (a truncate conditional on its marker) and
   records the error: a failed copy leaves no destination behind.

A node that dies mid-copy stops its heartbeat. Whoever next looks at the operation (a poll on any
node, a retry of the copy, a write to the destination) and finds the heartbeat older than
``LEASE_SECS`` *settles* it: the record becomes ``finished`` with a 503 error ("start the copy
again") and the partial destination is removed. A copy is never resumed by another node: a copy
that crashed its node must not crash the next one. A zombie (a paused node that wakes up after
being settled) stops at its next batch or heartbeat: its marker is gone and the record finished.

The synchronous ``copy_from_namespace`` is the same operation, awaited. If the request's deadline
passes first, the request answers 503 while the copy goes on; the SDK's retry of the same request
joins the running operation (same source, same destination) and, once it has finished, is
answered with its result as long as the destination has not been written since. So a copy that
answered a failure has either not landed or completes idempotently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from lagoon.engine.components import Components
from lagoon.engine.errors import translate
from lagoon.engine.executor import QueryExecutor
from lagoon.engine.state import NamespaceState
from lagoon.engine.tail import Snapshot
from lagoon.engine.writer import Committer, Op
from lagoon.errors import (
    Conflict,
    InternalError,
    InvalidRequest,
    LagoonError,
    NotFound,
    TooManyRequests,
    Unavailable,
)
from lagoon.format.keys import OPERATION_TOKEN_RE, check_namespace, operation_key
from lagoon.format.operation import COPY, FINISHED, Operation, decode_operation, encode_operation
from lagoon.schema import Schema, unstored
from lagoon.storage.base import ObjectNotFound, ObjectStore, PutMode, StorageError
from lagoon.storage.cas import Keep, Write, update
from lagoon.values import Id, canonical_from_arrow, format_datetime
from lagoon.wire.write import ValidatedWrite, canonical_upserts, parse_encryption, parse_write

log = logging.getLogger("lagoon.engine.copy")

BATCH_BYTES = 8 * 1024 * 1024
"""Logical bytes of documents per batch (one WAL entry of the destination)."""
MAX_BATCH_ROWS = 10_000
HEARTBEAT_SECS = 2.0
LEASE_SECS = 60.0
"""A running operation whose heartbeat is older than this (writer clocks) is settled as failed."""
POLL_SECS = 0.25
START_KEYS = frozenset({"source_namespace", "dest_encryption", "source_api_key", "source_region"})
CAS_ATTEMPTS = 8


class _Handle(Protocol):
    state: NamespaceState
    committer: Committer


class CopyHost(Protocol):
    """What a copy needs from the engine facade (``Database``)."""

    store: ObjectStore
    components: Components
    executor: QueryExecutor

    def handle(self, org: str, namespace: str) -> _Handle: ...

    async def snapshot(self, org: str, namespace: str, *, strong: bool = True) -> Snapshot: ...

    async def check_create(self, org: str, namespace: str, encryption: dict[str, str] | None) -> None: ...

    async def created(self, org: str, namespace: str) -> None: ...

    async def deleted(self, org: str, namespace: str) -> None: ...


class _Superseded(Conflict):
    """This operation no longer owns its destination (deleted, or settled by another node)."""


@dataclass(frozen=True)
class CopyRequest:
    source: str
    encryption: dict[str, str] | None


def parse_copy_request(spec: Any, what: str) -> CopyRequest:
    """``copy_from_namespace`` (a name or ``{source_namespace, ...}``) or a ``start_copy_from``
    body; 400 naming the field for anything Lagoon cannot do."""
    if isinstance(spec, str):
        spec = {"source_namespace": spec}
    if not isinstance(spec, dict):
        raise InvalidRequest(f"{what}: expected a source namespace name or an object with source_namespace")
    unknown = set(spec) - START_KEYS
    if unknown:
        raise InvalidRequest(f"{what}: unknown field(s) {', '.join(sorted(unknown))}")
    foreign = sorted(k for k in ("source_api_key", "source_region") if spec.get(k) is not None)
    if foreign:
        raise InvalidRequest(
            f"{what}: {', '.join(foreign)} not supported; Lagoon copies within one deployment "
            "(docs/compatibility.md)"
        )
    source = spec.get("source_namespace")
    if not isinstance(source, str):
        raise InvalidRequest(f"{what}: source_namespace: expected a namespace name")
    check_namespace(source)
    return CopyRequest(source, parse_encryption(spec.get("dest_encryption")))


def _iso(ms: int) -> str:
    return format_datetime(ms)


def describe(op: Operation) -> dict[str, Any]:
    """The operation as ``poll_copy_from`` answers it (the SDKs' ``CopyFromNamespaceOperation``)."""
    out: dict[str, Any] = {"status": op.status, "start_time": _iso(op.start_ms)}
    if not op.finished:
        total = "?" if op.documents_total is None else str(op.documents_total)
        out["progress"] = f"{op.documents_copied} of {total} documents copied"
        return out
    out["finish_time"] = _iso(op.finish_ms or op.heartbeat_ms)
    out["result"] = op.result
    return out


def error_result(e: BaseException) -> dict[str, Any]:
    """A failed operation's ``result``: ``{"error": {"status_code", "detail"}}``."""
    if isinstance(e, StorageError):
        e = translate(e, "while copying")
    if not isinstance(e, LagoonError):
        log.error("copy failed", exc_info=e)
        e = InternalError("the copy failed with an internal error (see the server log)")
    return {"error": {"status_code": e.status, "detail": {"status": "error", "error": e.message}}}


def raise_result(result: dict[str, Any] | None) -> dict[str, Any]:
    """A finished operation's success result, or its error raised as the same status."""
    if isinstance(result, dict) and isinstance(result.get("success"), dict):
        return dict(result["success"])
    err = (result or {}).get("error") or {}
    status, detail = err.get("status_code"), err.get("detail") or {}
    message = str(detail.get("error") or "the copy failed")
    for cls in (InvalidRequest, NotFound, Conflict, TooManyRequests, Unavailable):
        if cls.status == status:
            raise cls(message)
    raise InternalError(message)


def _marker(settings: dict[str, Any]) -> dict[str, Any]:
    mark = settings.get("copy")
    return mark if isinstance(mark, dict) else {}


def _owned(token: str, *, running: bool = True) -> Callable[[dict[str, Any], bool], None]:
    """An ``Op.expect``: the destination still carries this operation's marker."""

    def check(settings: dict[str, Any], exists: bool) -> None:
        mark = _marker(settings)
        if not exists or mark.get("operation") != token or (running and mark.get("running") is not True):
            raise _Superseded("the destination was deleted or taken over during the copy")

    return check


def _absent(settings: dict[str, Any], exists: bool) -> None:
    if exists:
        raise InvalidRequest("copy_from_namespace: the destination namespace must be empty")


def read_batch(src: Snapshot, start: int, stop: int, schema: Schema, target: Schema) -> ValidatedWrite:
    """The upsert of the snapshot's documents at positions [start, stop), canonical values read
    straight from the columns of ``schema`` (no JSON round trip, no re-validation, embeddings
    copied as stored), for the destination's ``target`` schema (the same attributes and types)."""
    table = src.source().fetch_rows(np.arange(start, stop, dtype=np.int64), list(schema.attributes))
    upserts: list[tuple[Id, dict[str, Any]]] = []
    attrs = schema.attributes
    for r in table.to_pylist():
        ident = r.pop("id")
        upserts.append(
            (ident, {k: canonical_from_arrow(v, attrs[k].type) for k, v in r.items() if v is not None})
        )
    return canonical_upserts(upserts, target)


def batch_rows(src: Snapshot) -> int:
    """Rows per batch: about ``BATCH_BYTES`` of the source's average document."""
    s = src.source()
    if s.num_docs == 0:
        return 1
    per_row = max(1, s.logical_bytes(list(src.schema.attributes)) // s.num_docs)
    return int(min(MAX_BATCH_ROWS, max(1, BATCH_BYTES // per_row)))


class Copies:
    """The copy operations of one node: starting, running, waiting for, polling, settling."""

    def __init__(self, host: CopyHost) -> None:
        self.host = host
        self._tasks: dict[str, asyncio.Task[None]] = {}

    # -- the record ------------------------------------------------------------------------------

    def _now(self) -> int:
        return self.host.components.clock.now_ms()

    async def read(self, org: str, namespace: str, token: str) -> Operation:
        if not OPERATION_TOKEN_RE.fullmatch(token):
            raise NotFound(f"operation {token!r:.80} was not found")
        key = operation_key(org, namespace, token)
        try:
            data = await self.host.store.get(key)
        except ObjectNotFound:
            raise NotFound(f"operation {token!r} was not found") from None
        return decode_operation(data, key)

    async def _update(self, op: Operation, change: Callable[[Operation], bool]) -> Operation:
        """Apply ``change`` to the stored record (CAS); ``change`` returns False to leave it.
        Returns the record as stored afterwards."""
        key = operation_key(op.org, op.namespace, op.token)

        async def step(data: bytes | None) -> Keep[Operation] | Write[Operation]:
            if data is None:
                raise NotFound(f"operation {op.token} was not found")
            cur = decode_operation(data, key)
            if not change(cur):
                return Keep(cur)
            return Write(encode_operation(cur), cur)

        return (await update(self.host.store, key, step, attempts=CAS_ATTEMPTS)).value

    async def _finish(self, op: Operation, result: dict[str, Any]) -> Operation:
        """Record the outcome unless the operation already has one (the first one stays)."""

        def change(cur: Operation) -> bool:
            if cur.finished:
                return False
            cur.status, cur.result, cur.finish_ms = FINISHED, result, self._now()
            cur.documents_copied = op.documents_copied
            return True

        return await self._update(op, change)

    # -- starting ----------------------------------------------------------------------------------

    async def start(self, org: str, namespace: str, spec: Any, what: str) -> Operation:
        """Check, claim the destination, start the copy in the background; the operation (an
        already running copy of the same source into the same destination is joined)."""
        req = parse_copy_request(spec, what)
        dest = await self.host.handle(org, namespace).state.snapshot(strong=True)
        if dest.exists:
            return await self._join(org, namespace, req, dest, what)
        src = await self.host.snapshot(org, req.source, strong=True)
        if unstored(src.schema):
            raise InvalidRequest(
                f"{what}: the source namespace has attributes with store: false "
                f"({', '.join(map(repr, unstored(src.schema)))}); their values are not kept, so it cannot be copied"
            )
        total = await self.host.executor.run(lambda: src.source().num_docs, org=org, namespace=req.source)
        await self.host.check_create(org, namespace, req.encryption)
        now = self._now()
        op = Operation(
            token=self.host.components.nonce().hex(),
            kind=COPY,
            org=org,
            namespace=namespace,
            source_namespace=req.source,
            start_ms=now,
            node=self.host.components.node_id,
            heartbeat_ms=now,
            documents_total=total,
        )
        key = operation_key(org, namespace, op.token)
        await self.host.store.put(key, encode_operation(op), PutMode.CREATE)
        try:
            await self._claim(op, src, req)
        except BaseException:
            with contextlib.suppress(StorageError):
                await self.host.store.delete(key)
            raise
        await self.host.created(org, namespace)
        self._tasks[op.token] = asyncio.create_task(self._run(op, src), name=f"copy-{op.token}")
        return op

    async def _join(self, org: str, namespace: str, req: CopyRequest, dest: Snapshot, what: str) -> Operation:
        """The destination exists: the operation that copies (or copied) ``req.source`` into it,
        if it is this very copy and nothing else has been written there since; else 400."""
        mark = _marker(dest.settings)
        token = mark.get("operation")
        if mark.get("source") == req.source and isinstance(token, str):
            op = await self.settle(await self.read(org, namespace, token))
            ok = op.succeeded and (op.result or {}).get("success", {}).get("version") == dest.head
            if not op.finished or ok:
                return op
        raise InvalidRequest(f"{what}: the destination namespace '{namespace}' must be empty")

    async def _claim(self, op: Operation, src: Snapshot, req: CopyRequest) -> None:
        body: dict[str, Any] = {"schema": src.schema.to_json(), "create_namespace": True}
        if src.schema.distance_metric:
            body["distance_metric"] = src.schema.distance_metric
        if req.encryption is not None:
            body["encryption"] = req.encryption
        mark = {"operation": op.token, "source": op.source_namespace, "running": True}
        await self._commit(op, body, expect=_absent, settings={"copy": mark})

    async def _commit(
        self,
        op: Operation,
        body: dict[str, Any],
        *,
        expect: Callable[[dict[str, Any], bool], None],
        settings: dict[str, Any] | None = None,
        kind: str = "write",
        parsed: tuple[ValidatedWrite, Schema] | None = None,
    ) -> dict[str, Any]:
        h = self.host.handle(op.org, op.namespace)
        if parsed is None and kind == "write":
            schema = h.state.current().schema
            parsed = parse_write(body, schema), schema
        request, against = parsed if parsed is not None else (None, None)
        wop = Op(
            kind=kind, body=body, request=request, parsed_against=against, settings=settings, expect=expect
        )
        return await h.committer.submit(wop)

    # -- running -----------------------------------------------------------------------------------

    async def _run(self, op: Operation, src: Snapshot) -> None:
        beat = asyncio.create_task(self._heartbeat(op, asyncio.current_task()))
        try:
            result = await self._copy_all(op, src)
            await self._commit(
                op,
                {},
                kind="settings",
                expect=_owned(op.token),
                settings={"copy": {"operation": op.token, "source": op.source_namespace, "running": False}},
            )
            result["version"] = self.host.handle(op.org, op.namespace).state.head
            await self._finish(op, {"success": result})
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._fail(op, Unavailable(_STOPPED)), 5.0)
            raise
        except _Superseded as e:
            with contextlib.suppress(Exception):
                await self._finish(op, error_result(Conflict(f"copy abandoned: {e}")))
        except Exception as e:  # every failure is recorded; nothing escapes a background task
            with contextlib.suppress(Exception):
                await self._fail(op, e)
        finally:
            beat.cancel()
            self._tasks.pop(op.token, None)

    async def _copy_all(self, op: Operation, src: Snapshot) -> dict[str, Any]:
        total, step = await self.host.executor.run(
            lambda: (src.source().num_docs, batch_rows(src)), org=op.org, namespace=op.namespace
        )
        schema = src.schema
        claimed = self.host.handle(op.org, op.namespace).state.current().schema  # as the claim set it
        billed = 0
        for start in range(0, total, step):
            stop = min(total, start + step)
            await self._wait_for_indexer(op)
            target = self.host.handle(op.org, op.namespace).state.current().schema

            def work(start: int = start, stop: int = stop) -> ValidatedWrite:
                return read_batch(src, start, stop, schema, claimed)

            if target != claimed:  # nobody else writes the destination during the copy
                raise _Superseded("the destination's schema changed during the copy")
            parsed = await self.host.executor.run(work, org=op.org, namespace=op.namespace)
            out = await self._commit(op, {}, expect=_owned(op.token), parsed=(parsed, target))
            billed += int(out.get("billing", {}).get("billable_logical_bytes_written", 0))
            op.documents_copied = stop
        return {
            "status": "OK",
            "message": f"copied {total} documents from '{op.source_namespace}'",
            "rows_affected": total,
            "rows_upserted": total,
            "billing": {"billable_logical_bytes_written": billed},
        }

    async def _wait_for_indexer(self, op: Operation) -> None:
        """Hold the next batch while the destination's unindexed tail is over the limit (the
        tail is in memory on this node until the indexer folds it into segments)."""
        state = self.host.handle(op.org, op.namespace).state
        limit = state.settings.indexer.max_unindexed_bytes
        while state.tail.unindexed_bytes > limit:
            await asyncio.sleep(state.settings.indexer.poll_interval_secs)
            await state.refresh()

    async def _heartbeat(self, op: Operation, runner: asyncio.Task[Any] | None) -> None:
        """Every ``HEARTBEAT_SECS``: progress and a fresh heartbeat into the record; stop the
        runner if the record was finished by someone else (it was settled as stale)."""
        while True:
            await asyncio.sleep(HEARTBEAT_SECS)

            def change(cur: Operation) -> bool:
                if cur.finished:
                    return False
                cur.heartbeat_ms, cur.documents_copied = self._now(), op.documents_copied
                return True

            try:
                cur = await self._update(op, change)
            except (LagoonError, StorageError):
                continue  # the store is unwell: the next beat tries again
            if cur.finished and runner is not None:
                runner.cancel()
                return

    async def _fail(self, op: Operation, e: BaseException) -> None:
        """Remove what the copy wrote (conditional on its marker), then record the error."""
        try:
            await self._commit(op, {}, kind="truncate", expect=_owned(op.token))
        except (_Superseded, NotFound):
            pass
        else:
            await self.host.deleted(op.org, op.namespace)
        await self._finish(op, error_result(e))

    # -- waiting, polling, settling ----------------------------------------------------------------

    async def settle(self, op: Operation) -> Operation:
        """``op`` as it stands; a running operation whose heartbeat is older than
        ``LEASE_SECS`` (its node died or hangs) is finished here as failed, and its partial
        destination removed (see the module docstring)."""
        if op.finished or op.token in self._tasks:
            return op
        if self._now() - op.heartbeat_ms <= LEASE_SECS * 1000:
            return op
        dest = await self.host.handle(op.org, op.namespace).state.snapshot(strong=True)
        mark = _marker(dest.settings)
        if mark.get("operation") == op.token and mark.get("running") is False:
            return await self._finish(op, {"success": _completed(op, dest)})
        stale = Unavailable(
            f"the node running the copy ({op.node}) stopped: no heartbeat since {_iso(op.heartbeat_ms)}; "
            "the partial destination was removed; start the copy again"
        )
        await self._fail(op, stale)
        return await self.read(op.org, op.namespace, op.token)

    async def settle_destination(self, org: str, namespace: str, settings: dict[str, Any]) -> None:
        """A write found the namespace under copy: settle the copy if it is stale (so the write
        can go ahead once the dead copy is removed)."""
        token = _marker(settings).get("operation")
        if isinstance(token, str) and OPERATION_TOKEN_RE.fullmatch(token):
            with contextlib.suppress(NotFound):
                await self.settle(await self.read(org, namespace, token))

    async def wait(self, op: Operation) -> dict[str, Any]:
        """The copy's result once it has finished (its error raised); the copy itself is not
        cancelled if the caller stops waiting."""
        task = self._tasks.get(op.token)
        if task is not None:
            await asyncio.wait({task})  # being cancelled here does not cancel the copy
        while True:
            op = await self.settle(await self.read(op.org, op.namespace, op.token))
            if op.finished:
                return raise_result(op.result)
            await asyncio.sleep(POLL_SECS)

    async def poll(self, org: str, namespace: str, token: str) -> dict[str, Any]:
        return describe(await self.settle(await self.read(org, namespace, token)))

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


_STOPPED = "the node running the copy shut down; the partial destination was removed; start the copy again"


def _completed(op: Operation, dest: Snapshot) -> dict[str, Any]:
    n = op.documents_total or 0
    return {
        "status": "OK",
        "message": f"copied {n} documents from '{op.source_namespace}'",
        "rows_affected": n,
        "rows_upserted": n,
        "billing": {"billable_logical_bytes_written": 0},
        "version": dest.head,
    }


__all__ = [
    "BATCH_BYTES",
    "HEARTBEAT_SECS",
    "LEASE_SECS",
    "Copies",
    "CopyHost",
    "CopyRequest",
    "describe",
    "error_result",
    "parse_copy_request",
    "raise_result",
]
