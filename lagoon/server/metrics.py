"""Prometheus metrics of the HTTP layer, and the ``/metrics`` exposition.

Each app owns a ``CollectorRegistry`` for its own series (so several apps in one test process do not
collide) and hands the same registry to the object store, whose ``lagoon_objstore_*`` series then
appear here too. ``/metrics`` exposes that registry followed by the process-wide default registry
(process/GC collectors and anything the engine registers globally).

Series (label values are bounded: route names, methods, status codes, four query kinds):
- ``lagoon_http_requests_total{route,method,status}``
- ``lagoon_http_request_duration_seconds{route}`` (histogram)
- ``lagoon_http_requests_in_flight``
- ``lagoon_query_duration_seconds{kind}`` (histogram), kind = vector | fts | hybrid | other
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""Set by the supervisor of several serving processes (``lagoon.server.processes``)."""
QUERY_KINDS = ("vector", "fts", "hybrid", "other")
CONTENT_TYPE = str(CONTENT_TYPE_LATEST)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class ServerMetrics:
    """The HTTP layer's series, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "lagoon_http_requests_total",
            "HTTP requests by route name, method and response status.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.request_duration = Histogram(
            "lagoon_http_request_duration_seconds",
            "HTTP request latency (first byte in to last byte out) by route name.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "lagoon_http_requests_in_flight",
            "HTTP requests being served now.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.query_duration = Histogram(
            "lagoon_query_duration_seconds",
            "Query latency on the server (concurrency wait included) by kind: vector, fts (BM25 "
            "and score expressions), hybrid (multi-query mixing both), other (order-by, aggregations).",
            ["kind"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        for kind in QUERY_KINDS:  # export every kind from the start, so dashboards see zeros
            self.query_duration.labels(kind=kind)

    def exposition(self) -> bytes:
        """The text exposition of this app's registry followed by the default registry; on a node
        with several serving processes, the series of all of them, aggregated (counters and
        histograms summed, gauges per process or summed over the live ones)."""
        folder = os.environ.get(MULTIPROC_ENV)
        if folder:
            from prometheus_client import multiprocess

            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged, path=folder)  # type: ignore[no-untyped-call]
            return bytes(generate_latest(merged))
        own = generate_latest(self.registry)
        default = generate_latest(REGISTRY)
        return bytes(own) + bytes(default)


def _rank_kind(rank_by: Any) -> str:
    """'vector', 'fts' or 'other' for one ``rank_by`` expression (never raises)."""
    if isinstance(rank_by, list | tuple) and len(rank_by) >= 2:
        op = rank_by[1]
        if isinstance(op, str) and op in ("ANN", "kNN"):
            return "vector"
        if isinstance(op, str) and op == "BM25":
            return "fts"
        head = rank_by[0]
        if head in ("Sum", "Max", "Product", "Saturate", "Decay"):
            return "fts"
    return "other"


def query_kind(body: Any) -> str:
    """The ``kind`` label of a query body: vector, fts, hybrid (a multi-query with both) or other."""
    if not isinstance(body, dict):
        return "other"
    queries = body.get("queries")
    if isinstance(queries, list):
        kinds = {_rank_kind(q.get("rank_by")) for q in queries if isinstance(q, dict)}
        if {"vector", "fts"} <= kinds:
            return "hybrid"
        for kind in ("vector", "fts"):
            if kind in kinds:
                return kind
        return "other"
    return _rank_kind(body.get("rank_by"))


__all__ = ["CONTENT_TYPE", "QUERY_KINDS", "ServerMetrics", "query_kind"]
