"""Process-wide Prometheus metrics of the background work (indexing, compaction, GC).

Declared once, at import, on the default registry. They are set by whichever process runs the
indexer: ``lagoon-worker`` serves them on ``observability.metrics_listen``; a ``lagoon-server
--embedded-indexer`` on its own ``/metrics`` (after its HTTP series). A server without the
embedded indexer runs no indexer, so it has no samples of the indexing gauges.

On a node with several serving processes (``lagoon.server.processes``) the values of every
process are aggregated: the per-namespace gauges are the max over live processes (only the
indexer child sets them) and ``lagoon_compaction_running`` the sum, so a replaced indexer child
leaves no series of the dead one behind and the names read as on a worker (no ``pid`` label).

Series (namespace label values are ``org/namespace``). Every namespace the indexing process
knows (from the queue, or from its sweep of the bucket at start and then hourly) has all three
gauges and the failure counter, also while it is idle (0, not absent); its series are removed only
when a sweep no longer finds the namespace in the bucket:

- ``lagoon_indexing_lag_seconds{namespace}``  age of the oldest unindexed WAL entry (0 when none);
  keeps growing while indexing the namespace fails (from the entry's time, or the time the
  namespace was queued when its tail cannot even be read)
- ``lagoon_wal_tail_bytes{namespace}``        encoded bytes of the unindexed WAL tail
- ``lagoon_segment_count{namespace}``         segments in the latest manifest
- ``lagoon_indexing_failures_total{namespace}`` indexing passes of the namespace that failed (an
  unreadable WAL entry or segment, the store down, a bug); the log says why
- ``lagoon_compaction_running``               compactions in progress in this process
- ``lagoon_compaction_total{outcome}``        committed | aborted | failed
- ``lagoon_index_builds_total{outcome}``      committed | aborted | failed
- ``lagoon_gc_deleted_objects_total``         objects deleted by the garbage collector
- ``lagoon_cache_hits_total{layer}`` / ``lagoon_cache_misses_total{layer}`` segment files served
  from (or not found in) the node's memory or disk cache
- ``lagoon_cache_bytes{layer}`` / ``lagoon_cache_budget_bytes{layer}`` what the serving
  processes' memory cache holds (charged at resident size, decoded documents and vectors
  included) and its budget; layer=memory only (the disk folder is shared by a node's processes,
  each of which would count all of it)
- ``lagoon_ann_recall{namespace}``            measured recall@k of sampled ANN queries (mean of a window)
- ``lagoon_ann_recall_samples_total{namespace}`` ANN queries re-run exhaustively for it
- ``lagoon_ann_recall_dropped_total``         samples skipped because the queue was full or failed
- ``lagoon_routed_writes_total{outcome}``     writes a serving process handed to the namespace's
  owning process (engine/routing.py): forwarded (acknowledged by the owner) | served (taken as
  owner) | stale (validated again) | fallback (committed by the receiver: owner unreachable or
  stopping) | unknown (the owner went away holding it: answered 503)
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import Counter, Gauge

OUTCOMES = ("committed", "aborted", "failed")

INDEXING_LAG = Gauge(
    "lagoon_indexing_lag_seconds",
    "Age of the oldest unindexed WAL entry of a namespace (writer clock vs worker clock).",
    ["namespace"],
    multiprocess_mode="livemax",
)
WAL_TAIL_BYTES = Gauge(
    "lagoon_wal_tail_bytes",
    "Encoded bytes of a namespace's unindexed WAL tail.",
    ["namespace"],
    multiprocess_mode="livemax",
)
SEGMENT_COUNT = Gauge(
    "lagoon_segment_count",
    "Segments in a namespace's latest manifest.",
    ["namespace"],
    multiprocess_mode="livemax",
)
COMPACTION_RUNNING = Gauge(
    "lagoon_compaction_running",
    "Compactions running in this process (a node's live processes, summed).",
    multiprocess_mode="livesum",
)
COMPACTION_TOTAL = Counter(
    "lagoon_compaction_total", "Compactions finished, by outcome (committed|aborted|failed).", ["outcome"]
)
INDEX_BUILDS_TOTAL = Counter(
    "lagoon_index_builds_total", "Index builds (WAL tail -> segment), by outcome.", ["outcome"]
)
CACHE_HITS = Counter(
    "lagoon_cache_hits_total", "Segment files served from a node cache, by layer (memory|disk).", ["layer"]
)
CACHE_MISSES = Counter(
    "lagoon_cache_misses_total",
    "Segment files not found in a node cache layer, by layer (memory|disk).",
    ["layer"],
)
CACHE_BYTES = Gauge(
    "lagoon_cache_bytes",
    "Bytes the serving processes' memory cache holds (layer=memory), or an indexer process's "
    "(layer=indexer, indexer.memory_bytes): segment files and what was decoded from them, "
    "charged at their resident size; summed over a node's live processes.",
    ["layer"],
    multiprocess_mode="livesum",
)
CACHE_BUDGET_BYTES = Gauge(
    "lagoon_cache_budget_bytes",
    "Budget of the serving processes' memory cache (layer=memory; cache.memory_bytes) or of an "
    "indexer process's (layer=indexer; indexer.memory_bytes), summed over a node's live processes.",
    ["layer"],
    multiprocess_mode="livesum",
)
GC_DELETED_OBJECTS = Counter("lagoon_gc_deleted_objects_total", "Objects deleted by the garbage collector.")
INDEXING_FAILURES = Counter(
    "lagoon_indexing_failures_total",
    "Indexing passes of a namespace that failed (see the worker log for why).",
    ["namespace"],
)

for _outcome in OUTCOMES:  # export every outcome from the start, so dashboards see zeros
    COMPACTION_TOTAL.labels(outcome=_outcome)
    INDEX_BUILDS_TOTAL.labels(outcome=_outcome)
for _layer in ("memory", "disk"):  # likewise every cache layer (alert rules select layer="disk")
    CACHE_HITS.labels(layer=_layer)
    CACHE_MISSES.labels(layer=_layer)


def cache_reporter(layer: str, budget: int) -> Callable[[float], None]:
    """Export a cache layer's budget; returns the function that sets its held bytes."""
    CACHE_BUDGET_BYTES.labels(layer=layer).set(budget)
    held = CACHE_BYTES.labels(layer=layer)
    return held.set


def namespace_label(org: str, namespace: str) -> str:
    return f"{org}/{namespace}"


def know_namespace(label: str) -> None:
    """Export every per-namespace series of ``label`` (at 0 where nothing was observed yet)."""
    INDEXING_LAG.labels(namespace=label)
    WAL_TAIL_BYTES.labels(namespace=label)
    SEGMENT_COUNT.labels(namespace=label)
    INDEXING_FAILURES.labels(namespace=label)


def observe_namespace(
    label: str, *, lag_seconds: float | None, tail_bytes: int | None, segments: int | None
) -> None:
    """Set the gauges of ``label`` that are given (None: leave as they are)."""
    know_namespace(label)
    if lag_seconds is not None:
        INDEXING_LAG.labels(namespace=label).set(max(0.0, lag_seconds))
    if tail_bytes is not None:
        WAL_TAIL_BYTES.labels(namespace=label).set(tail_bytes)
    if segments is not None:
        SEGMENT_COUNT.labels(namespace=label).set(segments)


def forget_namespace(label: str) -> None:
    """Drop a namespace's series (it is gone from the bucket)."""
    for metric in (INDEXING_LAG, WAL_TAIL_BYTES, SEGMENT_COUNT, INDEXING_FAILURES):
        try:
            metric.remove(label)
        except KeyError:
            pass


__all__ = [
    "CACHE_BUDGET_BYTES",
    "CACHE_BYTES",
    "COMPACTION_RUNNING",
    "COMPACTION_TOTAL",
    "GC_DELETED_OBJECTS",
    "INDEXING_FAILURES",
    "INDEXING_LAG",
    "INDEX_BUILDS_TOTAL",
    "OUTCOMES",
    "ROUTED_WRITES",
    "SEGMENT_COUNT",
    "WAL_TAIL_BYTES",
    "cache_reporter",
    "forget_namespace",
    "know_namespace",
    "namespace_label",
    "observe_namespace",
]

ANN_RECALL = Gauge(
    "lagoon_ann_recall",
    "Measured recall@k of sampled ANN queries of a namespace (mean of the last ann.recall_window).",
    ["namespace"],
)
ANN_RECALL_SAMPLES = Counter(
    "lagoon_ann_recall_samples", "ANN queries re-run exhaustively to measure recall.", ["namespace"]
)
ANN_RECALL_DROPPED = Counter(
    "lagoon_ann_recall_dropped", "Recall samples dropped (queue full or the measurement failed)."
)

ROUTED_OUTCOMES = ("forwarded", "served", "stale", "fallback", "unknown")
ROUTED_WRITES = Counter(
    "lagoon_routed_writes_total",
    "Writes handed between a node's serving processes to the namespace's owner, by outcome.",
    ["outcome"],
)
for _outcome in ROUTED_OUTCOMES:
    ROUTED_WRITES.labels(outcome=_outcome)
