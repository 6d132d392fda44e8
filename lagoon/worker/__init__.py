"""``lagoon-worker``: the process that runs the engine's background scheduler.

``run(settings)`` opens the store, runs an ``IndexerLoop`` (``lagoon.engine.scheduler``: indexing,
compaction and GC) until SIGTERM or SIGINT, serves Prometheus metrics when
``observability.metrics_listen`` is set, and returns 0. A shell: the scheduling policy lives in
the engine, so the server and the embedded API run the same loop without importing this package.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from lagoon.config import Settings
from lagoon.engine.scheduler import IndexerLoop
from lagoon.logs import log_event
from lagoon.tracing import setup_tracing, shutdown_tracing

log = logging.getLogger("lagoon.worker")


def _serve_metrics(listen: str) -> Any:
    """Serve the process's Prometheus metrics on ``listen`` (HOST:PORT) from a background thread;
    None when off or when the address is taken (logged: the worker works without it)."""
    if not listen:
        return None
    import prometheus_client

    host, _, port = listen.rpartition(":")
    try:
        server, _thread = prometheus_client.start_http_server(int(port), addr=host.strip("[]"))
    except OSError as e:
        log_event(log, "cannot serve metrics", level=logging.WARNING, listen=listen, error=str(e))
        return None
    log_event(log, "serving metrics", listen=listen, path="/metrics")
    return server


def run(settings: Settings) -> int:
    """Run the worker until SIGTERM/SIGINT; returns the exit status (0)."""
    return asyncio.run(_main(settings))


async def _main(settings: Settings) -> int:
    from lagoon.storage.factory import open_store

    store = open_store(settings.storage)  # inside the running loop: obstore clients must not cross a fork
    loop = IndexerLoop(store, settings)
    stop = asyncio.Event()
    running = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        running.add_signal_handler(sig, stop.set)
    log_event(
        log,
        "worker started",
        node=loop.components.node_id,
        storage=settings.storage.backend,
        poll_interval_secs=settings.indexer.poll_interval_secs,
        gc_grace_secs=settings.indexer.gc_grace_secs,
    )
    metrics_server = _serve_metrics(settings.observability.metrics_listen)
    setup_tracing(settings, "lagoon-worker")
    loop.start()
    try:
        await stop.wait()
    finally:
        await loop.stop()
        if metrics_server is not None:
            metrics_server.shutdown()
        shutdown_tracing()
        for sig in (signal.SIGTERM, signal.SIGINT):
            running.remove_signal_handler(sig)
        await store.close()
    log_event(log, "worker stopped", node=loop.components.node_id)
    return 0


__all__ = ["run"]
