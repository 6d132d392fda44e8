"""The HTTP routes: parse, authorize, call the engine, format. No engine logic lives here.

Every namespace route resolves the caller first (401/403 before the body is read), then validates
the namespace name (400), then reads and parses the body (413/400), then calls ``Database`` under
the request deadline. The principal's org scopes every namespace, so another org's namespace
answers exactly like a missing one (404, from the engine).

Roles (reader < writer < admin), when ``auth.keys_file`` is set:
- reader: query, explain, metadata, schema GET, list, hint_cache_warm;
- writer: + writes (upserts, patches, deletes, copy/branch), schema POST without drops, branch;
- admin: + delete namespace, PATCH metadata, dropping attributes (schema POST or a write's
  ``schema``), ``_debug/recall``.
Query params the route does not know (the SDK's ``stainless_overload``) and the ``prefer`` header
are ignored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lagoon.auth import AUTH_OFF_PRINCIPAL, Principal, Role
from lagoon.engine.database import parse_at_version
from lagoon.engine.health import probe_store
from lagoon.errors import Forbidden, InvalidRequest, LagoonError, Unauthorized, Unavailable
from lagoon.format.keys import check_namespace
from lagoon.index.cancel import Budget, budget_scope
from lagoon.logs import log_event
from lagoon.server.app_state import Engine, ServerState
from lagoon.server.audit import MutationAudit, counts
from lagoon.server.body import parse_json_object, parse_write_body
from lagoon.server.errors import JSON, error_body
from lagoon.server.metrics import CONTENT_TYPE, query_kind
from lagoon.server.middleware import RequestContext, context, read_body, run_with_deadline
from lagoon.server.openapi import openapi_json
from lagoon.server.recall import evaluate_recall

READY_TIMEOUT_SECS = 2.0
readiness_log = logging.getLogger("lagoon.server.readiness")
_JSON_OPTS = orjson.OPT_SERIALIZE_NUMPY
T = TypeVar("T")


class NotImplementedByServer(LagoonError):
    """A documented feature this build does not implement yet (501; not retryable)."""

    status = 501


def json_response(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content, option=_JSON_OPTS), status_code=status, media_type=JSON)


def with_server_timing(request: Request, result: dict[str, Any]) -> dict[str, Any]:
    """Set ``performance.server_total_ms`` to the whole time this server spent on the request
    (body parsing and concurrency wait included, as turbopuffer defines it), in integer
    milliseconds like the SDKs' models declare; ``query_execution_ms`` is made an integer too."""
    perf = result.get("performance")
    if isinstance(perf, dict):
        total = (time.perf_counter() - context(request).started) * 1000
        perf["server_total_ms"] = round(total)
        execution = perf.get("query_execution_ms")
        if isinstance(execution, int | float) and not isinstance(execution, bool):
            perf["query_execution_ms"] = min(round(execution), perf["server_total_ms"])
    return result


def server_state(request: Request) -> ServerState:
    state: ServerState = request.app.state.server
    return state


# --- helpers every route uses ----------------------------------------------------------------


def authorize(request: Request, role: Role, action: str, *, namespace: str | None = None) -> Principal:
    """The caller's principal, checked for ``role`` and the request-rate limit (401/403/429).

    ``namespace`` is the raw path parameter, only for the audit record of a denial."""
    state = server_state(request)
    ctx = context(request)
    if state.keys is None:
        principal = AUTH_OFF_PRINCIPAL
    else:
        header = request.headers.get("authorization")
        try:
            if not header:
                raise Unauthorized("missing API key: send 'Authorization: Bearer lgn_...'")
            principal = state.keys.authenticate(header)
        except Unauthorized as e:
            _audit_denial(request, None, 401, e, namespace)
            raise
    ctx.key_id, ctx.org = principal.key_id, principal.org
    require(request, principal, role, action, namespace=namespace)
    state.rates.check_request(principal.key_id or principal.org)
    return principal


def require(
    request: Request, principal: Principal, role: Role, action: str, *, namespace: str | None = None
) -> None:
    """403 (audited) unless ``principal`` has at least ``role``."""
    try:
        principal.require(role, action)
    except Forbidden as e:
        _audit_denial(request, principal, 403, e, namespace)
        raise


def _audit_denial(
    request: Request, principal: Principal | None, status: int, exc: Exception, namespace: str | None
) -> None:
    server_state(request).audit.record(
        "denied",
        request_id=context(request).request_id,
        key_id=(principal.key_id or None) if principal else None,
        org=principal.org if principal else None,
        status=status,
        reason=str(exc),
        route=_route(request),
        namespace=namespace[:200] if namespace else None,
    )


def _route(request: Request) -> str | None:
    route = request.scope.get("route")
    name = getattr(route, "name", None)
    return name if isinstance(name, str) else None


def namespace_param(request: Request) -> str:
    """The ``{ns}`` path parameter, validated (400 for names the API does not allow)."""
    name = request.path_params["ns"]
    check_namespace(name)
    context(request).namespace = name
    return str(name)


LARGE_BODY_BYTES = 1 << 20
"""Bodies larger than this are parsed, and writes validated, in a worker thread, not on the event
loop. Smaller ones stay on the loop: JSON parsing and validation hold the GIL, so a thread would
not free the core for the loop (it waits up to the 5 ms switch interval either way), and the hop
cost about 0.5 ms of CPU per 100-row write (a third of its parse + validation, measured with the
app in-process); a 1 MiB body of vectors takes a few milliseconds to parse and validate."""
OFFLOAD_WRITE_VALUES = 4096
"""Writes naming more values than this (``write_values``) are validated in a worker thread
whatever their size: validation costs per value, not per byte, and a 1 MiB body of 80,000 small
rows or 150,000 deleted ids held the event loop, and every other client of the process, for
0.3-1 s (2 cores at load 16); 4,096 small rows (about 50 KiB, which the earlier 64 KiB limit kept
on the loop too) take ~45 ms there, a few ms on an idle core. (A `vector` is one value: the 100-row
writes of vectors the loop was made for stay on it; an array attribute counts its elements.)"""


def write_values(body: dict[str, Any], stop: int | None = None) -> int:
    """How many values a write body names (the attributes of each row, the entries of each
    column, the elements of array attributes, the deleted ids), counted without validating it.
    The ``vector`` attribute's vectors count one each: they are checked as one float32 matrix in
    C; any other list is checked element by element, so its elements count. With ``stop``, the
    count ends as soon as it passes ``stop`` (the caller only asks whether it does). This runs on
    the event loop for every write: no generator or call per attribute (a 100-row body of
    vectors and two attributes: 25 us, was 56 us with one call per attribute)."""
    limit = stop if stop is not None else -1
    count = 0
    for key in ("upsert_rows", "patch_rows"):
        rows = body.get(key)
        if not isinstance(rows, list):
            continue
        for row in rows:
            if isinstance(row, dict):
                count += len(row)
                for name, value in row.items():
                    if isinstance(value, list) and name != "vector":
                        count += len(value)
            else:
                count += 1
            if count > limit >= 0:
                return count
    for key in ("upsert_columns", "patch_columns"):
        columns = body.get(key)
        if isinstance(columns, dict):
            for name, column in columns.items():
                if not isinstance(column, list):
                    count += 1
                elif name == "vector":
                    count += len(column)
                else:
                    count += len(column) + sum(len(v) for v in column if isinstance(v, list))
                if count > limit >= 0:
                    return count
    deletes = body.get("deletes")
    return count + (len(deletes) if isinstance(deletes, list) else 0)


BodyParser = Callable[[bytes], dict[str, Any]]


async def json_object(request: Request, parse: BodyParser = parse_json_object) -> tuple[dict[str, Any], int]:
    """The request body as a JSON object (empty body = ``{}``) and its decoded size."""
    state = server_state(request)
    raw = await read_body(request, state.settings.server.max_body_bytes)
    if len(raw) > LARGE_BODY_BYTES:
        return await asyncio.to_thread(parse, raw), len(raw)
    return parse(raw), len(raw)


COPY_GOES_ON = (
    "the copy goes on in the background (engine/copy.py): retry the same request to wait for its "
    "result, or use start_copy_from / poll_copy_from"
)


def query_budget(ctx: RequestContext) -> Budget:
    """The cancellation budget of a query: its request's deadline (evaluation checks it)."""
    return Budget(time.monotonic() + max(ctx.remaining(), 0.0), timeout=ctx.timeout)


def has_drops(schema: Any) -> bool:
    """True if a schema map drops an attribute (``{"attr": {"drop": true}}``)."""
    return isinstance(schema, dict) and any(
        isinstance(v, dict) and v.get("drop") is True for v in schema.values()
    )


def audited(request: Request, action: str, principal: Principal, **extra: Any) -> MutationAudit:
    """The audit of one mutation request (``server/audit.py``: every committed change is
    recorded, whatever the client is answered)."""
    state, ctx = server_state(request), context(request)

    def record(status: int, result: Any, **more: Any) -> None:
        if not state.audit.enabled:
            return
        state.audit.record(
            action,
            request_id=ctx.request_id,
            key_id=principal.key_id or None,
            org=principal.org,
            namespace=ctx.namespace,
            status=status,
            **counts(result),
            **extra,
            **more,
        )

    return MutationAudit(record)


# --- the namespace routes' preamble -----------------------------------------------------------

AuditedAs = Literal["counts", "fields", "nothing"]
"""What a mutation's audit line takes from its result: the row counts (writes, deletions,
branches), the result's own fields (a started copy's token), or nothing but the route's fields."""


@dataclass(frozen=True, slots=True)
class NamespaceRequest:
    """A namespace route's request once the preamble has run (the order of the module docstring):
    the caller authorized (401/403/429), the namespace name valid (400), the body parsed
    (413/400; ``{}`` for routes without one)."""

    request: Request
    state: ServerState
    ctx: RequestContext
    principal: Principal
    ns: str
    body: dict[str, Any]
    size: int

    @property
    def org(self) -> str:
        return self.principal.org

    @property
    def db(self) -> Engine:
        """The engine (503 while the server starts or stops)."""
        return self.state.engine()

    def require(self, role: Role, action: str) -> None:
        require(self.request, self.principal, role, action, namespace=self.ns)

    def check_accepting_writes(self) -> None:
        self.state.check_accepting_writes(self.ctx.arrived_draining)

    async def run(self, call: Awaitable[T]) -> T:
        """A read under the request deadline."""
        return await run_with_deadline(self.ctx, call)

    async def run_query(self, call: Awaitable[T]) -> T:
        """A query under the request deadline and its cancellation budget (cancelled when the
        client disconnects too)."""
        budget = query_budget(self.ctx)
        with budget_scope(budget):
            return await run_with_deadline(self.ctx, call, budget=budget, receive=self.request.receive)

    async def mutate(
        self,
        action: str,
        call: Awaitable[dict[str, Any]],
        *,
        audited_as: AuditedAs = "counts",
        late: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """A mutation under the request deadline, audited as ``action`` whatever the client is
        answered (``server/audit.py``); ``extra`` fields go into the audit line."""
        with audited(self.request, action, self.principal, **extra) as audit:
            result = await run_with_deadline(self.ctx, call, mutation=True, late=late)
        if audited_as == "fields":
            audit.answered(None, **result)
        else:
            audit.answered(result if audited_as == "counts" else None)
        return result


NamespaceHandler = Callable[[NamespaceRequest], Awaitable[Response]]


def namespace_route(
    role: Role, action: str, *, body: bool = False, parse: BodyParser = parse_json_object
) -> Callable[[NamespaceHandler], Callable[[Request], Awaitable[Response]]]:
    """Make ``handler`` a Starlette endpoint that runs the preamble first: ``role`` is what the
    caller needs for ``action`` (named in the 403), ``body`` whether the route reads one,
    ``parse`` how (the write route's decoder keeps vectors as arrays: ``parse_write_body``)."""

    def wrap(handler: NamespaceHandler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return await handler(await _namespace_request(request, role, action, body=body, parse=parse))

        endpoint.__name__, endpoint.__doc__ = handler.__name__, handler.__doc__
        return endpoint

    return wrap


async def _namespace_request(
    request: Request, role: Role, action: str, *, body: bool, parse: BodyParser
) -> NamespaceRequest:
    principal = authorize(request, role, action, namespace=request.path_params.get("ns"))
    ns = namespace_param(request)
    parsed, size = await json_object(request, parse) if body else ({}, 0)
    return NamespaceRequest(request, server_state(request), context(request), principal, ns, parsed, size)


# --- namespaces: data ------------------------------------------------------------------------


@namespace_route("writer", "writing documents", body=True, parse=parse_write_body)
async def write(req: NamespaceRequest) -> Response:
    body = req.body
    if has_drops(body.get("schema")):
        req.require("admin", "dropping attributes")
    req.check_accepting_writes()
    req.state.rates.check_write_bytes(req.principal.key_id or req.org, req.size)
    offload = req.size > LARGE_BODY_BYTES or write_values(body, OFFLOAD_WRITE_VALUES) > OFFLOAD_WRITE_VALUES
    call = req.db.write(req.ns, body, org=req.org, offload=offload)
    action = (
        "copy_namespace" if body.get("copy_from_namespace") or body.get("branch_from_namespace") else "write"
    )
    late = COPY_GOES_ON if body.get("copy_from_namespace") else None
    result = await req.mutate(action, call, late=late)
    req.ctx.fields["rows_affected"] = result.get("rows_affected")
    return json_response(with_server_timing(req.request, result))


@namespace_route("reader", "querying", body=True)
async def query(req: NamespaceRequest) -> Response:
    db = req.db
    kind = query_kind(req.body)
    req.ctx.fields["query_kind"] = kind
    queries = req.body.get("queries")
    slots = len(queries) if isinstance(queries, list) else 1
    started = time.perf_counter()
    async with req.state.queries.slot((req.org, req.ns), slots, deadline=req.ctx.deadline):
        result = await req.run_query(db.query(req.ns, req.body, org=req.org))
    req.state.metrics.query_duration.labels(kind=kind).observe(time.perf_counter() - started)
    return json_response(with_server_timing(req.request, result))


@namespace_route("reader", "explaining queries", body=True)
async def explain_query(req: NamespaceRequest) -> Response:
    return json_response(await req.run_query(req.db.explain(req.ns, req.body, org=req.org)))


@namespace_route("admin", "deleting a namespace")
async def delete_namespace(req: NamespaceRequest) -> Response:
    req.check_accepting_writes()
    result = await req.mutate("delete_namespace", req.db.delete_namespace(req.ns, org=req.org))
    return json_response({"status": result.get("status", "OK")})  # turbopuffer's body: no counts


@namespace_route("writer", "branching a namespace", body=True)
async def branch(req: NamespaceRequest) -> Response:
    """Lagoon's branch route: create the namespace as a copy-on-write branch of ``source_namespace``
    at ``at_version`` (default: its current version); the write route's ``branch_from_namespace``
    is the same without ``at_version`` (docs/rfcs/0007-branches.md)."""
    body = req.body
    unknown = set(body) - {"source_namespace", "at_version"}
    if unknown:
        raise InvalidRequest(f"branch: unknown field(s) {', '.join(sorted(unknown))}")
    source = body.get("source_namespace")
    if not isinstance(source, str):
        raise InvalidRequest("source_namespace: expected the name of the namespace to branch from")
    check_namespace(source)
    at_version = None if body.get("at_version") is None else parse_at_version(body["at_version"])
    req.check_accepting_writes()
    call = req.db.branch(req.ns, source, at_version=at_version, org=req.org)
    result = await req.mutate("branch_namespace", call, source_namespace=source)
    return json_response(with_server_timing(req.request, result))


@namespace_route("writer", "copying a namespace", body=True)
async def start_copy_from(req: NamespaceRequest) -> Response:
    """``POST /v2/namespaces/{ns}/async`` (the SDKs' ``start_copy_from``): start copying another
    namespace into this one; answers the operation token once the destination is claimed."""
    req.check_accepting_writes()
    call = req.db.start_copy(req.ns, req.body, org=req.org)
    spec = req.body.get("copy_from_namespace", req.body)  # the SDKs nest the parameters
    source = spec.get("source_namespace") if isinstance(spec, dict) else spec
    return json_response(await req.mutate("start_copy", call, audited_as="fields", source_namespace=source))


@namespace_route("reader", "polling an operation")
async def poll_copy_from(req: NamespaceRequest) -> Response:
    """``GET /v1/namespaces/{ns}/operations/{token}`` (``poll_copy_from``): the copy's status."""
    token = str(req.request.path_params.get("token", ""))
    return json_response(await req.run(req.db.poll_copy(req.ns, token, org=req.org)))


# --- namespaces: metadata and schema ---------------------------------------------------------


@namespace_route("reader", "reading metadata")
async def metadata(req: NamespaceRequest) -> Response:
    return json_response(await req.run(req.db.metadata(req.ns, org=req.org)))


@namespace_route("admin", "updating metadata", body=True)
async def update_metadata(req: NamespaceRequest) -> Response:
    req.check_accepting_writes()
    call = req.db.update_metadata(req.ns, req.body, org=req.org)
    return json_response(
        await req.mutate("update_metadata", call, audited_as="nothing", changes=sorted(req.body))
    )


@namespace_route("reader", "reading the schema")
async def get_schema(req: NamespaceRequest) -> Response:
    return json_response(await req.run(req.db.get_schema(req.ns, org=req.org)))


@namespace_route("writer", "updating the schema", body=True)
async def update_schema(req: NamespaceRequest) -> Response:
    if has_drops(req.body):
        req.require("admin", "dropping attributes")
    req.check_accepting_writes()
    call = req.db.update_schema(req.ns, req.body, org=req.org)
    return json_response(
        await req.mutate("update_schema", call, audited_as="nothing", attributes=sorted(req.body))
    )


# --- namespaces: listing, warming, recall ----------------------------------------------------


def _page_size(raw: str | None) -> int:
    if raw is None or raw == "":
        return 100
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(f"page_size: expected an integer between 1 and 1000, got {raw[:40]!r}") from None
    if not 1 <= value <= 1000:
        raise InvalidRequest(f"page_size: expected an integer between 1 and 1000, got {value}")
    return value


async def list_namespaces(request: Request) -> Response:
    state, ctx = server_state(request), context(request)
    principal = authorize(request, "reader", "listing namespaces")
    params = request.query_params
    prefix = params.get("prefix") or ""
    cursor = params.get("cursor") or None
    page_size = _page_size(params.get("page_size"))
    if len(prefix) > 128:
        raise InvalidRequest("prefix: at most 128 characters")
    if cursor is not None:
        check_namespace(cursor)
    db = state.engine()
    call = db.list_namespaces(org=principal.org, prefix=prefix, cursor=cursor, page_size=page_size)
    return json_response(await run_with_deadline(ctx, call))


@namespace_route("reader", "warming the cache")
async def hint_cache_warm(req: NamespaceRequest) -> Response:
    return json_response(await req.run(req.db.hint_cache_warm(req.ns, org=req.org)), status=202)


@namespace_route("admin", "measuring recall", body=True)
async def recall(req: NamespaceRequest) -> Response:
    db = req.db
    async with req.state.queries.slot((req.org, req.ns), 2, deadline=req.ctx.deadline):
        return json_response(await req.run_query(evaluate_recall(db, req.ns, req.body, org=req.org)))


# --- operations ------------------------------------------------------------------------------


async def healthz(request: Request) -> Response:
    """Liveness: 200 while the process serves HTTP at all."""
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Readiness: the engine is open, the server is not draining, the keys file (if any) is
    readable, and the object store takes a write and reads it back (``engine/health.py``: a
    missing bucket, refused credentials, a read-only bucket and an unreachable store all fail).

    Not ready: the body gives a coarse reason (starting, shutting down, object store unavailable,
    API keys unavailable); a caller with a valid API key — any caller when auth is off, where every
    caller may do everything — gets the cause (missing bucket, refused credentials, ...); the log
    line gets the store's own text (URL, bucket, path)."""
    state = server_state(request)
    coarse, problem, detail = await _readiness(state)
    if not coarse:
        return json_response({"status": "ready"})
    log_event(
        readiness_log,
        "not ready",
        level=logging.WARNING,
        request_id=context(request).request_id,
        reason=problem,
        detail=detail or None,
    )
    shown = f"{coarse} ({problem})" if problem != coarse and _may_see_cause(request) else coarse
    return Response(error_body(f"not ready: {shown}"), status_code=503, media_type=JSON)


async def _readiness(state: ServerState) -> tuple[str, str, str]:
    """``(coarse reason, cause, detail)``; all empty when ready."""
    if state.draining:
        return "the server is shutting down", "the server is shutting down", ""
    if state.db is None or state.store is None:
        return "the server is starting", "the server is starting", ""
    if state.keys is not None:
        try:
            state.keys.keys()
        except Unavailable as e:
            return "API keys unavailable", e.message, e.detail
    try:
        await probe_store(state.store, timeout_secs=READY_TIMEOUT_SECS)
    except Unavailable as e:
        return "object store unavailable", e.message, e.detail
    return "", "", ""


def _may_see_cause(request: Request) -> bool:
    keys, header = server_state(request).keys, request.headers.get("authorization")
    if keys is None:
        return True
    if not header:
        return False
    try:
        keys.authenticate(header)
    except LagoonError:
        return False
    return True


async def metrics(request: Request) -> Response:
    return Response(server_state(request).metrics.exposition(), media_type=CONTENT_TYPE)


async def openapi(request: Request) -> Response:
    return Response(openapi_json(), media_type=JSON)


NS = "/{ns}"

ROUTES = [
    Route("/v2/namespaces" + NS, write, methods=["POST"], name="write"),
    Route("/v2/namespaces" + NS, delete_namespace, methods=["DELETE"], name="delete_namespace"),
    Route("/v2/namespaces" + NS + "/query", query, methods=["POST"], name="query"),
    Route("/v2/namespaces" + NS + "/explain_query", explain_query, methods=["POST"], name="explain_query"),
    Route("/v2/namespaces" + NS + "/branch", branch, methods=["POST"], name="branch"),
    Route("/v2/namespaces" + NS + "/async", start_copy_from, methods=["POST"], name="start_copy_from"),
    Route(
        "/v1/namespaces" + NS + "/operations/{token}", poll_copy_from, methods=["GET"], name="poll_copy_from"
    ),
    Route("/v2/namespaces" + NS + "/metadata", metadata, methods=["GET"], name="metadata"),
    Route("/v1/namespaces" + NS + "/metadata", metadata, methods=["GET"], name="metadata_v1"),
    Route("/v1/namespaces" + NS + "/metadata", update_metadata, methods=["PATCH"], name="update_metadata"),
    Route("/v1/namespaces" + NS + "/schema", get_schema, methods=["GET"], name="get_schema"),
    Route("/v1/namespaces" + NS + "/schema", update_schema, methods=["POST"], name="update_schema"),
    Route("/v1/namespaces", list_namespaces, methods=["GET"], name="list_namespaces"),
    Route(
        "/v1/namespaces" + NS + "/hint_cache_warm", hint_cache_warm, methods=["GET"], name="hint_cache_warm"
    ),
    Route("/v1/namespaces" + NS + "/_debug/recall", recall, methods=["POST"], name="recall"),
    Route("/healthz", healthz, methods=["GET"], name="healthz"),
    Route("/readyz", readyz, methods=["GET"], name="readyz"),
    Route("/metrics", metrics, methods=["GET"], name="metrics"),
    Route("/openapi.json", openapi, methods=["GET"], name="openapi"),
]

__all__ = ["ROUTES", "NotImplementedByServer", "authorize", "has_drops", "json_response"]
