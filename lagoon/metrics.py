"""Process-wide Prometheus metrics of the background work (indexing, compaction, GC).

Declared once, at import, on the default registry: the server's ``/metrics`` exposes the default
registry after its own, so these series appear there for ``--embedded-indexer`` servers; a
standalone worker has no HTTP endpoint of its own (there is no setting for one).

Series (namespace label values are ``org/namespace``; a namespace's series are removed when it
leaves the indexing queue, so their number follows the active namespaces, not all of them):

- ``lagoon_indexing_lag_seconds{namespace}``  age of the oldest unindexed WAL entry (0 when none)
- ``lagoon_wal_tail_bytes{namespace}``        encoded bytes of the unindexed WAL tail
- ``lagoon_segment_count{namespace}``         segments in the latest manifest
- ``lagoon_compaction_running``               compactions in progress in this process
- ``lagoon_compaction_total{outcome}``        committed | aborted | failed
- ``lagoon_index_builds_total{outcome}``      committed | aborted | failed
- ``lagoon_gc_deleted_objects_total``         objects deleted by the garbage collector
- ``lagoon_ann_recall{namespace}``            measured recall@k of sampled ANN queries (mean of a window)
- ``lagoon_ann_recall_samples_total{namespace}`` ANN queries re-run exhaustively for it
- ``lagoon_ann_recall_dropped_total``         samples skipped because the queue was full or failed
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

OUTCOMES = ("committed", "aborted", "failed")

INDEXING_LAG = Gauge(
    "lagoon_indexing_lag_seconds",
    "Age of the oldest unindexed WAL entry of a namespace (writer clock vs worker clock).",
    ["namespace"],
)
WAL_TAIL_BYTES = Gauge(
    "lagoon_wal_tail_bytes", "Encoded bytes of a namespace's unindexed WAL tail.", ["namespace"]
)
SEGMENT_COUNT = Gauge("lagoon_segment_count", "Segments in a namespace's latest manifest.", ["namespace"])
COMPACTION_RUNNING = Gauge("lagoon_compaction_running", "Compactions running in this process.")
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
GC_DELETED_OBJECTS = Counter("lagoon_gc_deleted_objects_total", "Objects deleted by the garbage collector.")

for _outcome in OUTCOMES:  # export every outcome from the start, so dashboards see zeros
    COMPACTION_TOTAL.labels(outcome=_outcome)
    INDEX_BUILDS_TOTAL.labels(outcome=_outcome)
for _layer in ("memory", "disk"):  # likewise every cache layer (alert rules select layer="disk")
    CACHE_HITS.labels(layer=_layer)
    CACHE_MISSES.labels(layer=_layer)


def namespace_label(org: str, namespace: str) -> str:
    return f"{org}/{namespace}"


def observe_namespace(label: str, *, lag_seconds: float, tail_bytes: int, segments: int | None) -> None:
    INDEXING_LAG.labels(namespace=label).set(max(0.0, lag_seconds))
    WAL_TAIL_BYTES.labels(namespace=label).set(tail_bytes)
    if segments is not None:
        SEGMENT_COUNT.labels(namespace=label).set(segments)


def forget_namespace(label: str) -> None:
    """Drop a namespace's series (it left the queue: nothing to index)."""
    for gauge in (INDEXING_LAG, WAL_TAIL_BYTES, SEGMENT_COUNT):
        try:
            gauge.remove(label)
        except KeyError:
            pass


__all__ = [
    "COMPACTION_RUNNING",
    "COMPACTION_TOTAL",
    "GC_DELETED_OBJECTS",
    "INDEXING_LAG",
    "INDEX_BUILDS_TOTAL",
    "OUTCOMES",
    "SEGMENT_COUNT",
    "WAL_TAIL_BYTES",
    "forget_namespace",
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
