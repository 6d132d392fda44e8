"""What the server shares between requests: settings, the engine, limiters, metrics, audit log.

One ``ServerState`` per app, created by ``create_app`` and stored as ``app.state.server``. The
engine (``Database``) and the object store are opened by the app's lifespan, not at import or at
``create_app`` time: obstore clients must be created in the serving process (fork hazard), and a
test can build an app without touching any store. ``Engine`` is the slice of ``Database`` the HTTP
layer uses, so tests can stand in a fake engine to exercise deadline and failure paths.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol

from lagoon.auth import KeyStore
from lagoon.config import Settings
from lagoon.errors import Unavailable
from lagoon.server.audit import AuditLog
from lagoon.server.errors import Redactor
from lagoon.server.limits import QueryLimiter, RateLimiter
from lagoon.server.metrics import ServerMetrics
from lagoon.storage.base import ObjectStore


class Engine(Protocol):
    """The engine operations the HTTP API calls (``lagoon.engine.database.Database``)."""

    async def write(
        self, namespace: str, body: Any, *, org: str, offload: bool = False
    ) -> dict[str, Any]: ...

    async def query(self, namespace: str, body: Any, *, org: str) -> dict[str, Any]: ...

    async def explain(self, namespace: str, body: Any, *, org: str) -> dict[str, Any]: ...

    async def delete_namespace(self, namespace: str, *, org: str) -> dict[str, Any]: ...

    async def branch(
        self, namespace: str, source: str, *, at_version: int | None = None, org: str
    ) -> dict[str, Any]: ...

    async def metadata(self, namespace: str, *, org: str) -> dict[str, Any]: ...

    async def update_metadata(self, namespace: str, body: Any, *, org: str) -> dict[str, Any]: ...

    async def get_schema(self, namespace: str, *, org: str) -> dict[str, Any]: ...

    async def update_schema(self, namespace: str, schema: Any, *, org: str) -> dict[str, Any]: ...

    async def list_namespaces(
        self, *, org: str, prefix: str = "", cursor: str | None = None, page_size: int = 100
    ) -> dict[str, Any]: ...

    async def hint_cache_warm(self, namespace: str, *, org: str) -> dict[str, Any]: ...

    async def start_copy(self, namespace: str, body: Any, *, org: str) -> dict[str, Any]: ...

    async def poll_copy(self, namespace: str, token: str, *, org: str) -> dict[str, Any]: ...

    async def close(self) -> None: ...


@dataclass
class ServerState:
    settings: Settings
    metrics: ServerMetrics
    keys: KeyStore | None
    queries: QueryLimiter
    rates: RateLimiter
    audit: AuditLog
    db: Engine | None = None
    store: ObjectStore | None = None
    draining: bool = False
    """Set when the stop signal arrives: mutations arriving later get 503, /readyz turns 503."""
    background: set[asyncio.Task[Any]] = field(default_factory=set)
    redact: Redactor = field(default_factory=Redactor)
    """Applied to every 5xx message a client gets (``lagoon.server.errors``)."""

    @staticmethod
    def redactor_for(settings: Settings) -> Redactor:
        """This deployment's storage names: bucket, endpoint, local folders, file paths."""
        st = settings.storage
        return Redactor(
            [
                st.bucket,
                st.endpoint,
                st.root,
                settings.cache.dir,
                settings.auth.keys_file,
                settings.observability.audit_log,
            ]
        )

    def engine(self) -> Engine:
        if self.db is None:
            raise Unavailable("the server is starting or stopping; retry shortly", retry_after=1.0)
        return self.db

    def check_accepting_writes(self, arrived_draining: bool) -> None:
        """503 for a mutation that arrived after the stop signal; one already in flight may finish."""
        if arrived_draining:
            raise Unavailable("the server is shutting down; retry on another node", retry_after=1.0)


__all__ = ["Engine", "ServerState"]
