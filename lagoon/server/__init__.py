"""The HTTP API server: turbopuffer v2 wire protocol over ``lagoon.engine.database.Database``.

``run(settings)`` serves until SIGTERM/SIGINT (blocking); ``create_app`` builds the ASGI app for
tests and embedding. Shutdown is graceful: on the stop signal the listening socket closes, new
mutations get 503 (``Retry-After``) and ``/readyz`` turns 503, in-flight requests get
``server.shutdown_grace_secs`` to finish; a request still running after that is cancelled without
a response (a write whose commit did not finish is never acknowledged), then queued commits drain
and the store closes.
"""

from __future__ import annotations

import gc
import logging
import socket
from types import FrameType
from typing import TYPE_CHECKING, Any

import uvicorn

from lagoon.auth import KeyStore
from lagoon.config import Settings
from lagoon.logs import log_event
from lagoon.server.protocol import limited_protocol

if TYPE_CHECKING:
    from lagoon.server.app import create_app
    from lagoon.server.app_state import ServerState

# The app (and with it the engine, numpy, numba...) is imported where a process serves, not here:
# the supervisor of several serving processes imports this module too, and every second it spent
# importing what it never runs came before its children even started (docs/operations.md,
# "Start-up time").

log = logging.getLogger("lagoon.server")

_LOOPBACK = ("127.", "localhost", "::1", "[::1]")


def split_listen(listen: str) -> tuple[str, int]:
    """``"host:port"`` -> ``(host, port)``; IPv6 hosts may be bracketed (``[::1]:8080``)."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def _warn_about_auth(settings: Settings, host: str) -> None:
    if settings.auth.keys_file:
        return
    exposed = not host.startswith(_LOOPBACK)
    log_event(
        log,
        "AUTHENTICATION IS OFF: no auth.keys_file is configured, so every request acts as admin of org "
        "'default'. Create keys with `lagoon keys create` and set auth.keys_file."
        + (
            " THE SERVER LISTENS ON A NON-LOOPBACK ADDRESS: anyone who can reach it has full access."
            if exposed
            else ""
        ),
        level=logging.ERROR if exposed else logging.WARNING,
        listen=settings.server.listen,
    )


def uvicorn_config(app: Any, settings: Settings) -> uvicorn.Config:
    """The uvicorn configuration of one serving process (``server.listen``, graceful shutdown)."""
    host, port = split_listen(settings.server.listen)
    grace: Any = settings.server.shutdown_grace_secs  # uvicorn annotates int; a float works
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=grace,
        http=limited_protocol(
            settings.server.max_header_bytes,
            settings.server.max_headers,
            settings.server.header_timeout_secs,
            settings.server.max_connections,
        ),
    )


def run(settings: Settings) -> int:
    """Serve the HTTP API on ``server.listen`` until stopped; returns the exit status (0).

    With more than one serving process (``server.processes``; 0 = one per usable CPU) this process
    becomes the supervisor of the node's processes (``lagoon.server.processes``)."""
    host, port = split_listen(settings.server.listen)
    _warn_about_auth(settings, host)
    if settings.observability.audit_log:  # fail now, with one clear line, not in the lifespan
        from lagoon.server.audit import AuditLog

        probe = AuditLog(settings.observability.audit_log)
        probe.open()
        probe.close()
    KeyStore.from_settings(settings.auth)  # a bad keys file fails here, once, not in every process
    from lagoon.server.processes import Supervisor, resolve_processes

    processes = resolve_processes(settings)
    if processes > 1:
        code = Supervisor(settings, host, port, processes).run()
        if code == 0:
            log_event(log, "server stopped")
        return code
    from lagoon.server.app import create_app

    app = create_app(settings)
    server = DrainingServer(uvicorn_config(app, settings), app.state.server)
    server.run()
    if not server.started:  # bind or lifespan startup failed; uvicorn logged why
        return 3
    log_event(log, "server stopped")
    return 0


class DrainingServer(uvicorn.Server):
    """uvicorn's server, marking the app as draining the moment a stop signal arrives."""

    def __init__(self, config: uvicorn.Config, state: ServerState) -> None:
        super().__init__(config)
        self.lagoon_state = state

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            settle_heap()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.lagoon_state.draining = True
        super().handle_exit(sig, frame)


def settle_heap() -> None:
    """Once the server serves: collect, then move every object start-up left (modules, settings,
    the app, the engine's caches) out of the collector's reach (``gc.freeze``). Those objects
    live as long as the process, yet each full collection walked all of them: 130-190 ms with
    every request of the process waiting (measured under 8 concurrent writers); a full
    collection now walks only what was made since. Objects frozen are still freed when their
    last reference goes; only a cycle among them is kept, and start-up makes none worth it."""
    gc.collect()
    gc.freeze()


def __getattr__(name: str) -> Any:
    if name == "create_app":  # ``from lagoon.server import create_app``, imported when asked for
        from lagoon.server.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DrainingServer", "create_app", "run", "split_listen", "uvicorn_config"]
