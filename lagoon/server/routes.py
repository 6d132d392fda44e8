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
from typing import Any

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
from lagoon.server.app_state import ServerState
from lagoon.server.audit import MutationAudit, counts
from lagoon.server.body import parse_json_object
from lagoon.server.errors import JSON, error_body
from lagoon.server.metrics import CONTENT_TYPE, query_kind
from lagoon.server.middleware import RequestContext, context, read_body, run_with_deadline
from lagoon.server.openapi import openapi_json
from lagoon.server.recall import evaluate_recall

READY_TIMEOUT_SECS = 2.0
readiness_log = logging.getLogger("lagoon.server.readiness")
_JSON_OPTS = orjson.OPT_SERIALIZE_NUMPY


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
"""Bodies larger than this are parsed in a worker thread, not on the event loop."""
OFFLOAD_WRITE_BYTES = 64 << 10
"""Writes with a larger body are validated in a worker thread, not on the event loop."""


async def json_object(request: Request) -> tuple[dict[str, Any], int]:
    """The request body as a JSON object (empty body = ``{}``) and its decoded size."""
    state = server_state(request)
    raw = await read_body(request, state.settings.server.max_body_bytes)
    if len(raw) > LARGE_BODY_BYTES:
        return await asyncio.to_thread(parse_json_object, raw), len(raw)
    return parse_json_object(raw), len(raw)


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


# --- namespaces: data ------------------------------------------------------------------------


async def write(request: Request) -> Response:
    state, ctx = server_state(request), context(request)
    principal = authorize(request, "writer", "writing documents", namespace=request.path_params.get("ns"))
    ns = namespace_param(request)
    body, size = await json_object(request)
    if has_drops(body.get("schema")):
        require(request, principal, "admin", "dropping attributes", namespace=ns)
    state.check_accepting_writes(ctx.arrived_draining)
    state.rates.check_write_bytes(principal.key_id or principal.org, size)
    db = state.engine()
    call = db.write(ns, body, org=principal.org, offload=size > OFFLOAD_WRITE_BYTES)
    action = (
        "copy_namespace" if body.get("copy_from_namespace") or body.get("branch_from_namespace") else "write"
    )
    late = COPY_GOES_ON if body.get("copy_from_namespace") else None
    with audited(request, action, principal) as audit:
        result = await run_with_deadline(ctx, call, mutation=True, late=late)
    audit.answered(result)
    ctx.fields["rows_affected"] = result.get("rows_affected")
    return json_response(with_server_timing(request, result))


async def query(request: Request) -> Response:
    state, ctx = server_state(request), context(request)
    principal = authorize(request, "reader", "querying", namespace=request.path_params.get("ns"))
    ns = namespace_param(request)
    body, _ = await json_object(request)
    db = state.engine()
    kind = query_kind(body)
    ctx.fields["query_kind"] = kind
    queries = body.get("queries")
    slots = len(queries) if isinstance(queries, list) else 1
    started = time.perf_counter()
    budget = query_budget(ctx)
    async with state.queries.slot((principal.org, ns), slots, deadline=ctx.deadline):
        with budget_scope(budget):
            call = db.query(ns, body, org=principal.org)
            result = await run_with_deadline(ctx, call, budget=budget, receive=request.receive)
    state.metrics.query_duration.labels(kind=kind).observe(time.perf_counter() - started)
    return json_response(with_server_timing(request, result))


async def explain_query(request: Request) -> Response:
    state, ctx = server_state(request), context(request)
    principal = authorize(request, "reader", "explaining queries", namespace=request.path_params.get("ns"))
    ns = namespace_param(request)
    body, _ = await json_object(request)
    db = state.engine()
    budget = query_budget(ctx)
    with budget_scope(budget):
        call = db.explain(ns, body, org=principal.org)
        result = await run_with_deadline(ctx, call, budget=budget, receive=request.receive)
    return json_response(result)


async def delete_namespace(request: Request) -> Response:
    state, ctx = server_state(request), context(request)
    principal = authorize(request, "admin", "deleting a namespace", namespace=request.path_params.get("ns"))
    ns = namespace_param(request)
    state.check_accepting_writes(ctx.arrived_draining)
    db = state.engine()
    with audited(request, "delete_namespace", principal) as audit:
        result = await run_with_deadline(ctx, db.delete_namespace(ns, org=principal.org), mutation=True)
    audit.answered(result)
    return json_response({"status": result.get("status", "OK")})  # turbopuffer's body: no counts


async def branch(request: Request) -> Response:
    """Lagoon's branch route: create the namespace as a copy-on-write branch of ``source_namespace``
    at ``at_version`` (default: its current version); the write route's ``branch_from_namespace``
    is the same without ``at_version`` (docs/rfcs/0007-branches.md)."""
    state, ctx = server_state(request), context(request)
    principal = authorize(request, "writer", "branching a namespace", namespace=request.path_params.get("ns"))
    ns = namespace_param(request)
    body, _ = await json_object(request)
    unknown = set(body) - {"source_namespace", "at_version"}
    if unknown:
        raise InvalidRequest(f"branch: unknown field(s) {', '.join(sorted(unknown))}")
    source = body.get("source_namespace")
    if not isinstance(source, str):
        raise InvalidRequest("source_namespace: expected the name of the namespace to branch from")
    check_namespace(source)
    at_version = None if body.get("at_version") is None else parse_at_version(body["at_version"])
    state.check_accepting_writes(ctx.arrived_draining)
    db = state.engine()
    call = db.branch(ns, source, at_version=at_version, org=principal.org)
    with audited(request, "branch_namespace", principal, source_namespace=source) as audit:
        result = await run_with_deadline(ctx, call, mutation=True)
    audit.answered(result)
    return json_response(with_server_timing(request, result))


async def start_copy_from(request: Request) -> Response:
    """``POST /v2/namespaces/{ns}/async`` (the SDKs' ``start_copy_from``): start copying another
    namespace into this one; answers the operation token once the destination is claimed."""
    state, ctx = server_state(request), context(request)
    principal = authorize(request, "writer", "copying a namespace", namespace=request.path_params.get("ns"))
    ns = namespace_param(request)
    body, _ = await json_object(request)
    state.check_accepting_writes(ctx.arrived_draining)
    db = state.engine()
    spec = body.get("copy_from_namespace", body)  # the SDKs nest the parameters
    source = spec.get("source_namespace") if isinstance(spec, dict) else spec
    with audited(request, "start_copy", principal, source_namespace=source) as audit:
        result = await run_with_deadline(ctx, db.start_copy(ns, body, org=principal.org), mutation=True)
    audit.answered(None, **result)
    return json_response(result)


async def poll_copy_from(request: Request) -> Response:
    """``GET /v1/namespaces/{ns}/operations/{token}`` (``poll_copy_from``): the copy's status."""
    state, ctx = server_state(request), context(request)
    principal = authorize(request, "reader", "polling an operation", namespace=request.path_params.get("ns"))
    ns = namespace_param(request)
    token = str(request.path_params.get("token", ""))
    db = state.engine()
    return json_response(await run_with_deadline(ctx, db.poll_copy(ns, token, org=principal.org)))


# --- namespaces: metadata and schema ---------------------------------------------------------


async def metadata(request: Request) -> Response:
    state, ctx = server_state(request), context(request)
    principal = authorize(request, "reader", "reading metadata", namespace=request.path_params.get("ns"))
    ns = namespace_param(request)
    db = state.engine()
    return json_response(await run_with_deadline(ctx, db.metadata(ns, org=principal.org)))


async def update_metadata(request: Request) -> Response:
    state, ctx = server_state(request), context(request)
    principal = authorize(request, "admin", "updating metadata", namespace=request.path_params.get("ns"))
    ns = namespace_param(request)
    body, _ = await json_object(request)
    state.check_accepting_writes(ctx.arrived_draining)
    db = state.engine()
    with audited(request, "update_metadata", principal, changes=sorted(body)) as audit:
        result = await run_with_deadline(ctx, db.update_metadata(ns, body, org=principal.org), mutation=True)
    audit.answered(None)
    return json_response(result)


async def get_schema(request: Request) -> Response:
    state, ctx = server_state(request), context(request)
    principal = authorize(request, "reader", "reading the schema", namespace=request.path_params.get("ns"))
    ns = namespace_param(request)
    db = state.engine()
    return json_response(await run_with_deadline(ctx, db.get_schema(ns, org=principal.org)))


async def update_schema(request: Request) -> Response:
    state, ctx = server_state(request), context(request)
    principal = authorize(request, "writer", "updating the schema", namespace=request.path_params.get("ns"))
    ns = namespace_param(request)
    body, _ = await json_object(request)
    if has_drops(body):
        require(request, principal, "admin", "dropping attributes", namespace=ns)
    state.check_accepting_writes(ctx.arrived_draining)
    db = state.engine()
    with audited(request, "update_schema", principal, attributes=sorted(body)) as audit:
        result = await run_with_deadline(ctx, db.update_schema(ns, body, org=principal.org), mutation=True)
    audit.answered(None)
    return json_response(result)


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


async def hint_cache_warm(request: Request) -> Response:
    state, ctx = server_state(request), context(request)
    principal = authorize(request, "reader", "warming the cache", namespace=request.path_params.get("ns"))
    ns = namespace_param(request)
    db = state.engine()
    result = await run_with_deadline(ctx, db.hint_cache_warm(ns, org=principal.org))
    return json_response(result, status=202)


async def recall(request: Request) -> Response:
    state, ctx = server_state(request), context(request)
    principal = authorize(request, "admin", "measuring recall", namespace=request.path_params.get("ns"))
    ns = namespace_param(request)
    body, _ = await json_object(request)
    db = state.engine()
    budget = query_budget(ctx)
    async with state.queries.slot((principal.org, ns), 2, deadline=ctx.deadline):
        with budget_scope(budget):
            call = evaluate_recall(db, ns, body, org=principal.org)
            result = await run_with_deadline(ctx, call, budget=budget, receive=request.receive)
    return json_response(result)


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
