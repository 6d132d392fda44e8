"""``create_app``: the Starlette application of the HTTP API.

The app is cheap to build and touches no storage: the lifespan opens the object store (unless one
is injected) and the ``Database`` when the server starts, in the serving process — obstore clients
must not cross a fork — and closes them at shutdown after in-flight commits drained. Everything
the routes share lives in one ``ServerState`` (``app.state.server``).
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match

from lagoon.auth import KeyStore
from lagoon.config import Settings
from lagoon.engine import nodelock, routing
from lagoon.engine.components import Components
from lagoon.engine.database import Database
from lagoon.server.app_state import Engine, ServerState
from lagoon.server.audit import AuditLog
from lagoon.server.errors import classify, error_response
from lagoon.server.limits import QueryLimiter, RateLimiter
from lagoon.server.metrics import ServerMetrics
from lagoon.server.middleware import LagoonMiddleware, context
from lagoon.server.routes import ROUTES
from lagoon.storage.base import ObjectStore
from lagoon.tracing import setup_tracing, shutdown_tracing

log = logging.getLogger("lagoon.server")

EngineFactory = Callable[[ObjectStore, Settings, Components | None], Engine]


def _default_engine(store: ObjectStore, settings: Settings, components: Components | None) -> Engine:
    from lagoon.engine.database import Database
    from lagoon.engine.ops.repair import repair_for_delete

    return Database(store, settings, components, repair=repair_for_delete(settings, components))


def _open_store(settings: Settings, registry: CollectorRegistry) -> ObjectStore:
    from lagoon.storage import factory

    open_store: Any = factory.open_store
    if "metrics_registry" in inspect.signature(open_store).parameters:
        store: ObjectStore = open_store(settings.storage, metrics_registry=registry)
    else:  # pragma: no cover - a factory without instrumentation
        store = open_store(settings.storage)
    return store


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own HTTP errors (no route: 404, wrong method: 405) in the turbopuffer shape.

    A path served by several routes (one per method) gets the methods of all of them in
    ``Allow``; Starlette's own header names only the first route's."""
    status, message, headers, _ = classify(exc, context(request).request_id)
    if status == 405:
        allowed = allowed_methods(request)
        if allowed:
            headers = {k: v for k, v in headers.items() if k.lower() != "allow"}
            headers["allow"] = ", ".join(allowed)
    return error_response(status, message, headers)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route accepts for the request's path, in a stable order."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "\x00"})  # no method matches: PARTIAL = path
        if match == Match.PARTIAL and getattr(route, "methods", None):
            methods |= set(route.methods)
    order = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    return sorted(methods, key=lambda m: (order.index(m) if m in order else len(order), m))


def create_app(
    settings: Settings,
    *,
    store: ObjectStore | None = None,
    components: Components | None = None,
    engine_factory: EngineFactory | None = None,
    query_queue_wait_secs: float = 0.8,
) -> Starlette:
    """The HTTP API app. ``store`` replaces the configured object store (tests); ``engine_factory``
    replaces ``Database`` (tests that need a fake engine). Raises ``KeysFileError`` at once for a
    bad ``auth.keys_file``: a server must not start with keys it cannot check."""
    registry = CollectorRegistry(auto_describe=True)
    state = ServerState(
        settings=settings,
        metrics=ServerMetrics(registry),
        keys=KeyStore.from_settings(settings.auth),
        queries=QueryLimiter(settings.server.max_concurrent_queries, query_queue_wait_secs),
        rates=RateLimiter(settings.limits),
        audit=AuditLog(settings.observability.audit_log),
        redact=ServerState.redactor_for(settings),
    )
    make_engine = engine_factory or _default_engine

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        setup_tracing(settings, "lagoon-server")
        state.audit.open()
        opened = store if store is not None else _open_store(settings, registry)
        state.store = opened
        state.db = make_engine(opened, settings, components)
        turns = nodelock.from_environment()  # set when this is one of several serving processes
        if turns is not None and isinstance(state.db, Database):
            state.db.turns = turns
            router = routing.from_environment(os.environ.get(nodelock.NODE_DIR_ENV))
            if router is not None and settings.server.commit_routing:  # one commits each namespace
                await state.db.start_routing(router)
        state.draining = False
        indexer = None
        if settings.server.embedded_indexer:
            from lagoon.engine.scheduler import IndexerLoop

            # One memory budget per process: the indexer builds and compacts through the
            # serving engine's cache (a stand-in engine without one: a cache of its own).
            shared = state.db.segment_io if isinstance(state.db, Database) else None
            indexer = IndexerLoop(opened, settings, segment_io=shared)
            indexer.start()
        try:
            yield
        finally:
            state.draining = True
            db, state.db = state.db, None
            try:
                if indexer is not None:
                    await indexer.stop()
                if db is not None:
                    await db.close()  # drains queued commits, then closes the store
            finally:
                state.store = None
                state.audit.close()
                shutdown_tracing()

    app = Starlette(
        routes=ROUTES,
        middleware=[Middleware(LagoonMiddleware, state=state)],
        exception_handlers={HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False
    app.state.server = state
    return app


__all__ = ["EngineFactory", "create_app"]
