"""Continuous recall measurement: a sample of live ANN queries, re-run exhaustively in the background.

After an ANN query (``rank_by [attr, "ANN", vector]``, single query, no aggregation) is answered,
with probability ``ann.recall_sample_rate`` and if the namespace holds at least
``ann.recall_sample_min_docs`` documents, the monitor keeps the query, a lease on the snapshot it
ran on and the ids it returned. One background thread (niced to the lowest CPU priority where
the OS allows it) runs the same query exactly (``kNN``: same filters, same snapshot) and records
``recall = |ANN ids ∩ exact ids| / |exact ids|`` — the number ``POST
/v1/namespaces/{ns}/_debug/recall`` computes for the same query.

A waiting sample holds no segment reader: the lease keeps the snapshot, which refers to its
segments by handle (engine/segment_handle.py), so the memory cache may evict them meanwhile and
their memory is freed. Only while a sample is measured does the lease pin its segments (opening
evicted ones again) and give the document source over them, as a running query does; the pins
go when the measurement ends.

Bounded cost: at most ``ann.recall_samples_per_sec`` samples per second per process (a token
bucket; more are skipped), at most ``QUEUE_MAX`` waiting (more are dropped and counted), one
exact scan at a time. Nothing here changes a query's answer or latency beyond a random draw and
a queue put.

Exports ``lagoon_ann_recall{namespace}`` (mean of the last ``ann.recall_window`` samples),
``lagoon_ann_recall_samples_total{namespace}`` and ``lagoon_ann_recall_dropped_total``; the same
figures appear in the namespace's metadata (``ann_recall``) on the node that measured them.
"""

from __future__ import annotations

import contextlib
import os
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np

from lagoon import metrics
from lagoon.config import AnnSettings
from lagoon.values import id_to_json
from lagoon.wire.query import QueryRequest, VectorRank

QUEUE_MAX = 64

Lease = Callable[[], AbstractContextManager[Any]]
"""Entered in the monitor's thread: the snapshot's document source, its segments pinned until
the block ends."""


@dataclass(frozen=True)
class _Sample:
    label: str
    req: QueryRequest
    lease: Lease  # the snapshot's DocSource, pinned while measured
    ann_ids: frozenset[Any]


class RecallMonitor:
    """The process's recall sampler (see the module docstring). Thread-safe."""

    def __init__(self, settings: AnnSettings, rng: random.Random | None = None) -> None:
        self.settings = settings
        self._rng = rng or random.Random()
        self._queue: queue.Queue[_Sample | None] = queue.Queue(QUEUE_MAX)
        self._lock = threading.Lock()
        self._windows: dict[str, deque[float]] = {}
        self._counts: dict[str, int] = {}
        self._tokens = float(settings.recall_samples_per_sec)
        self._last = time.monotonic()
        self._thread: threading.Thread | None = None
        self._idle = threading.Condition(self._lock)
        self._busy = 0

    # -- submitting (query path) ----------------------------------------------------------------

    def offer(
        self, label: str, req: QueryRequest | Any, src: Any, result: dict[str, Any], lease: Lease
    ) -> bool:
        """Maybe keep this answered query (run on ``src``) for measurement on what ``lease`` gives
        (the same documents; ``src`` itself is not kept); True when it was queued."""
        s = self.settings
        if s.recall_sample_rate <= 0 or not isinstance(req, QueryRequest):
            return False
        r = req.rank_by
        if not isinstance(r, VectorRank) or r.mode != "ANN" or req.is_aggregation:
            return False
        if src.num_docs < s.recall_sample_min_docs or self._rng.random() >= s.recall_sample_rate:
            return False
        with self._lock:
            now = time.monotonic()
            rate = float(s.recall_samples_per_sec)
            self._tokens = min(rate, self._tokens + (now - self._last) * rate)
            self._last = now
            if self._tokens < 1.0:
                return False
            self._tokens -= 1.0
        rows = result.get("rows") or []
        sample = _Sample(label, req, lease, frozenset(_key(row["id"]) for row in rows))
        try:
            self._queue.put_nowait(sample)
        except queue.Full:
            metrics.ANN_RECALL_DROPPED.inc()
            return False
        with self._lock:
            self._busy += 1
        self._start()
        return True

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._run, name="lagoon-recall", daemon=True)
                    self._thread.start()

    # -- measuring (background thread) -----------------------------------------------------------

    def _run(self) -> None:
        with contextlib.suppress(Exception):  # the lowest priority for this thread (Linux: per thread)
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        while True:
            sample = self._queue.get()
            if sample is None:
                return
            try:
                with sample.lease() as src:
                    recall = measure(sample.req, src, sample.ann_ids)
                if recall is not None:
                    self._record(sample.label, recall)
            except Exception:
                metrics.ANN_RECALL_DROPPED.inc()
            finally:
                with self._lock:
                    self._busy -= 1
                    self._idle.notify_all()

    def _record(self, label: str, recall: float) -> None:
        with self._lock:
            window = self._windows.get(label)
            if window is None or window.maxlen != self.settings.recall_window:
                window = self._windows[label] = deque(window or (), maxlen=self.settings.recall_window)
            window.append(recall)
            self._counts[label] = self._counts.get(label, 0) + 1
            value = float(np.mean(window))
        metrics.ANN_RECALL.labels(namespace=label).set(value)
        metrics.ANN_RECALL_SAMPLES.labels(namespace=label).inc()

    # -- reading ---------------------------------------------------------------------------------

    def recall(self, label: str) -> tuple[float | None, int]:
        """(mean of the window or None, samples measured so far) for ``org/namespace``."""
        with self._lock:
            window = self._windows.get(label)
            return (float(np.mean(window)) if window else None), self._counts.get(label, 0)

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until every queued sample is measured (tests, shutdown); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def close(self) -> None:
        t = self._thread
        if t is not None and t.is_alive():
            with contextlib.suppress(queue.Full):
                self._queue.put(None, timeout=1.0)
            t.join(timeout=5.0)


def measure(req: QueryRequest, src: Any, ann_ids: frozenset[Any]) -> float | None:
    """|ANN ids ∩ exact ids| / |exact ids| for ``req`` on ``src`` (None when nothing matches)."""
    r = req.rank_by
    assert isinstance(r, VectorRank)
    mask = src.filter_mask(req.filters) if req.filters is not None else None
    want = req.offset + req.limit
    pos, _ = src.vector_topk(r.attr, r.vector, r.metric, want, mask, approximate=False)
    pos = pos[req.offset :]
    if pos.shape[0] == 0:
        return None
    exact = {_key(id_to_json(v)) for v in src.fetch_rows(pos, []).column("id").to_pylist()}
    return len(exact & ann_ids) / len(exact)


def _key(doc_id: Any) -> Any:
    return doc_id if isinstance(doc_id, int | str) else repr(doc_id)


__all__ = ["QUEUE_MAX", "RecallMonitor", "measure"]
