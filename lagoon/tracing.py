"""OpenTelemetry tracing of the query path (``observability.otlp_endpoint``).

Spans, parent first:

    lagoon.query            one per query or multi-query: namespace, org, consistency
      lagoon.snapshot       loading / refreshing the node's view of the namespace
        lagoon.objstore.*   every object-store request on the way (op, key, bytes read)
      lagoon.plan           parsing and checking the request against the schema
      lagoon.execute        running it (in the query thread)
        lagoon.part         per segment or WAL run: what was asked of it (operation, rows)
          lagoon.objstore.* cluster blocks fetched for a cold segment

With ``otlp_endpoint`` empty nothing is set up: the OpenTelemetry API's default no-op tracer
makes every span a few microseconds of nothing. Set, ``setup_tracing`` installs an SDK tracer
provider that batches spans to ``<endpoint>/v1/traces`` (OTLP over HTTP, protobuf), with the
resource ``service.name`` = the program (lagoon-server, lagoon-worker, lagoon). Spans cross into
query threads through ``contextvars`` (``asyncio.to_thread`` copies the context).
"""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry import trace

from lagoon.config import Settings
from lagoon.logs import log_event

log = logging.getLogger("lagoon.tracing")

tracer = trace.get_tracer("lagoon")
"""The tracer of every Lagoon span (follows the global provider, set or not)."""

_provider: Any = None


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL of an endpoint given as the collector's base URL or in full."""
    url = endpoint.rstrip("/")
    return url if url.endswith("/v1/traces") else url + "/v1/traces"


def setup_tracing(settings: Settings, service_name: str) -> bool:
    """Export spans to ``observability.otlp_endpoint`` if it is set (once per process); returns
    whether tracing is on."""
    global _provider
    endpoint = settings.observability.otlp_endpoint
    if not endpoint:
        return False
    if _provider is not None:
        return True
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=traces_url(endpoint))))
    trace.set_tracer_provider(provider)
    _provider = provider
    log_event(log, "exporting traces", endpoint=traces_url(endpoint), service=service_name)
    return True


def shutdown_tracing() -> None:
    """Flush and stop the exporter (at process shutdown)."""
    global _provider
    if _provider is not None:
        _provider.shutdown()
        _provider = None


__all__ = ["setup_tracing", "shutdown_tracing", "tracer", "traces_url"]
