"""Per-request plumbing: request id, access log, metrics, body cap, deadline, concurrency and rates.

``LagoonMiddleware`` is a pure ASGI middleware (no ``BaseHTTPMiddleware``: it would buffer and cost
a task per request). For every HTTP request it:
- assigns a request id (the client's ``x-request-id`` if it is short and plain, else a new one),
  echoes it in the response, and keeps a ``RequestContext`` in the scope for the route handlers;
- refuses a body larger than ``server.max_body_bytes`` with 413 *before buffering it*: at once when
  ``Content-Length`` says so, else as soon as the streamed body crosses the cap;
- turns any exception into the JSON error body (``lagoon.server.errors``) and logs bugs with their
  traceback; the body of a 5xx carries the request id and nothing else of the failure;
- counts the request in ``lagoon_http_*`` and writes one JSON access-log line with request id, key
  id (never the key), org, namespace, route, status and latency.

Deadlines (``server.request_timeout_secs``) are enforced by ``run_with_deadline`` around engine
calls and by ``read_body``: a read-only call is cancelled and answered 503; a mutation is answered
with its real result whenever it finished before the response is sent, so a committed write is
never answered with a retryable status. ``QueryLimiter`` bounds concurrent queries per namespace
(429 + Retry-After after a short wait), ``RateLimiter`` applies the per-key token buckets of
``[limits]``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lagoon.errors import DataCorruption, LagoonError, Unavailable
from lagoon.index.cancel import Budget
from lagoon.logs import log_event
from lagoon.server.body import BodyDecoder, too_large
from lagoon.server.errors import classify, error_response, internal_text

if TYPE_CHECKING:
    from lagoon.server.app_state import ServerState

T = TypeVar("T")

CTX_KEY = "lagoon.ctx"
QUIET_ROUTES = frozenset({"healthz", "readyz", "metrics"})
"""Probes and scrapes: logged at debug level so they do not drown the access log."""

_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
access_log = logging.getLogger("lagoon.server.access")
error_log = logging.getLogger("lagoon.server")


class ClientDisconnected(LagoonError):
    """The client went away before the response (logged and counted as 499, never as an error)."""

    status = 499


class RequestTimeout(LagoonError):
    """The client did not send its request body before the deadline (408; the SDK retries it)."""

    status = 408
    retryable = True


@dataclass
class RequestContext:
    """What one request has learnt about itself; routes fill in route, namespace, key id and org."""

    request_id: str
    method: str
    started: float
    """``time.perf_counter()`` at arrival."""
    deadline: float
    """Event-loop time (``loop.time()``) after which the request is answered 503."""
    timeout: float
    arrived_draining: bool = False
    """The stop signal had arrived before this request did (new mutations are refused)."""
    namespace: str | None = None
    key_id: str = ""
    org: str | None = None
    status: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    fields: dict[str, Any] = field(default_factory=dict)
    """Extra access-log fields (query kind, rows affected, ...)."""

    def remaining(self) -> float:
        return self.deadline - asyncio.get_running_loop().time()


def context(request: Request) -> RequestContext:
    """The ``RequestContext`` the middleware put in the request's scope."""
    ctx = request.scope.get(CTX_KEY)
    if not isinstance(ctx, RequestContext):  # pragma: no cover - the app always installs the middleware
        raise RuntimeError("LagoonMiddleware is not installed")
    return ctx


def _log_level(route: str, status: int, *, damaged: bool) -> int:
    """The access-log level: errors for 5xx, warnings for a damaged namespace's 409 (the
    operator has to run ``lagoon repair``), quiet for the probes."""
    if route in QUIET_ROUTES:
        return logging.DEBUG
    if status >= 500:
        return logging.ERROR
    return logging.WARNING if damaged else logging.INFO


def new_request_id(given: str | None) -> str:
    if given and _REQUEST_ID_RE.fullmatch(given):
        return given
    return secrets.token_hex(8)


class LagoonMiddleware:
    """See the module docstring."""

    def __init__(self, app: ASGIApp, *, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = self.state
        headers = Headers(scope=scope)
        timeout = state.settings.server.request_timeout_secs
        ctx = RequestContext(
            request_id=new_request_id(headers.get("x-request-id")),
            method=scope["method"],
            started=time.perf_counter(),
            deadline=asyncio.get_running_loop().time() + timeout,
            timeout=timeout,
            arrived_draining=state.draining,
        )
        scope[CTX_KEY] = ctx
        limit = state.settings.server.max_body_bytes
        rid_header = (b"x-request-id", ctx.request_id.encode())
        started_response = False

        async def send_wrapper(message: Message) -> None:
            nonlocal started_response
            if message["type"] == "http.response.start":
                started_response = True
                ctx.status = message["status"]
                message["headers"] = [*message.get("headers", ()), rid_header]
            elif message["type"] == "http.response.body":
                ctx.bytes_out += len(message.get("body", b""))
            await send(message)

        async def receive_wrapper() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                ctx.bytes_in += len(message.get("body", b""))
                if ctx.bytes_in > limit:
                    raise too_large(limit)
            return message

        state.metrics.in_flight.inc()
        bug: BaseException | None = None
        try:
            declared = headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise too_large(limit)
            await self.app(scope, receive_wrapper, send_wrapper)
        except ClientDisconnected:
            ctx.status = 499  # nobody to answer; logged as a disconnect, not as an error
        except Exception as exc:
            status, message, extra, is_bug = classify(exc, ctx.request_id)
            if is_bug:
                bug = exc
            if status >= 500 or isinstance(exc, DataCorruption):  # also a damaged namespace's 409
                ctx.fields["error"] = internal_text(exc)  # the log gets the whole story,
                message = state.redact(message)  # the client no storage locations
            if status == 413:
                extra["connection"] = "close"  # the rest of the body is never read
            if not started_response:
                await error_response(status, message, extra)(scope, receive, send_wrapper)
            else:  # the response had begun: too late to change it; the client sees a cut response
                ctx.status = ctx.status or 500
        finally:
            state.metrics.in_flight.dec()
            self._finish(scope, ctx, bug)

    def _finish(self, scope: Scope, ctx: RequestContext, bug: BaseException | None) -> None:
        elapsed = time.perf_counter() - ctx.started
        route_obj = scope.get("route")
        route = getattr(route_obj, "name", None) or "unmatched"
        status = ctx.status or 499  # 0: cancelled (shutdown) or the client went away first
        if status == 499:
            ctx.fields["client_disconnected"] = True
        metrics = self.state.metrics
        metrics.requests.labels(route=route, method=ctx.method, status=str(status)).inc()
        metrics.request_duration.labels(route=route).observe(elapsed)
        if bug is not None:
            error_log.error(
                "unhandled error",
                exc_info=(type(bug), bug, bug.__traceback__),
                extra={"request_id": ctx.request_id, "route": route, "namespace": ctx.namespace},
            )
        level = _log_level(route, status, damaged="error" in ctx.fields)
        log_event(
            access_log,
            "request",
            level=level,
            request_id=ctx.request_id,
            method=ctx.method,
            route=route,
            path=scope.get("path"),
            status=status,
            latency_ms=round(elapsed * 1000, 3),
            namespace=ctx.namespace,
            key_id=ctx.key_id or None,
            org=ctx.org,
            bytes_in=ctx.bytes_in,
            bytes_out=ctx.bytes_out,
            **ctx.fields,
        )


# --- bodies and deadlines --------------------------------------------------------------------


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, decoded per ``Content-Encoding`` as it arrives, within the deadline.

    The middleware caps the wire bytes; ``BodyDecoder`` caps the decoded bytes at ``limit`` while
    they are produced (413 at the first chunk past it). Inflating runs in a worker thread, so a
    compression bomb costs the event loop nothing. A client that goes away mid-body ends the
    request as a disconnect (499), not an error.
    """
    ctx = context(request)
    decoder = BodyDecoder(request.headers.get("content-encoding", ""), limit)
    try:
        async with asyncio.timeout(max(ctx.remaining(), 0.0)):
            async for chunk in request.stream():
                if decoder.encoded:
                    await asyncio.to_thread(decoder.feed, chunk)
                else:
                    decoder.feed(chunk)
    except TimeoutError:
        raise RequestTimeout("the request body did not arrive before the request deadline") from None
    except ClientDisconnect:
        raise ClientDisconnected("the client closed the connection before sending the whole body") from None
    return decoder.finish()


async def _disconnected(receive: Receive) -> None:
    """Return once the client has closed the connection (the body has been read already)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def run_with_deadline(
    ctx: RequestContext,
    call: Awaitable[T],
    *,
    mutation: bool = False,
    budget: Budget | None = None,
    receive: Receive | None = None,
    late: str | None = None,
) -> T:
    """Await ``call`` until the request's deadline; past it, 503 (see the module docstring).

    A read is cancelled at the deadline, and also as soon as the client disconnects when
    ``receive`` is given (answered 499, which nobody reads); ``budget`` is cancelled with it so
    evaluation threads stop at their next checkpoint. A mutation is cancelled too (which keeps
    a write that has not reached the committer from committing later), but if it completed
    anyway — its commit landed before the cancellation took effect — its result is returned: a
    committed write is never answered with a retryable status. A mutation answered 503 was not
    acknowledged; it may still have been applied if its commit was already in flight (retrying
    it is safe: upserts, patches and deletes are idempotent and conditions are evaluated again).
    ``late`` replaces what the 503 says became of the call (a copy goes on, for instance).
    """
    task: asyncio.Future[T] = asyncio.ensure_future(call)
    watch = asyncio.ensure_future(_disconnected(receive)) if receive is not None else None
    waits: set[asyncio.Future[Any]] = {task} if watch is None else {task, watch}
    try:
        done, _ = await asyncio.wait(
            waits, timeout=max(ctx.remaining(), 0.0), return_when=asyncio.FIRST_COMPLETED
        )
    except asyncio.CancelledError:  # the server gave up on this request (shutdown grace exceeded)
        if budget is not None:
            budget.cancel("the server is shutting down")
        task.cancel()
        raise
    finally:
        if watch is not None:
            watch.cancel()
    gone = watch is not None and watch in done and task not in done
    if task not in done:
        if budget is not None:
            budget.cancel("the client disconnected" if gone else "the request deadline passed")
        task.cancel()
        await asyncio.wait({task})
    if not task.cancelled():
        return task.result()  # finished in time, or finished before the cancellation landed
    if gone:
        raise ClientDisconnected("the client closed the connection; the query was stopped")
    what = late or ("the write was not acknowledged" if mutation else "the request was cancelled")
    raise Unavailable(
        f"request deadline of {ctx.timeout:g}s (server.request_timeout_secs) exceeded; {what}",
        retry_after=1.0,
    )


__all__ = [
    "CTX_KEY",
    "LagoonMiddleware",
    "RequestContext",
    "RequestTimeout",
    "context",
    "new_request_id",
    "read_body",
    "run_with_deadline",
]
