"""Every metric the deployment guide tells operators to alert on exists on a real server's
``/metrics`` and moves when the thing it measures happens: queries of each kind (vector, fts, and a hybrid multi-query), memory and disk
cache hits and misses (a namespace closed and reopened is served from the memory cache, one
indexed by another process is not), indexing,
compaction, object-store requests, and the memory cache's charged bytes within its budget."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from lagoon.config import Settings
from lagoon.engine.components import Components
from lagoon.engine.database import Database
from lagoon.engine.indexer import index_namespace
from lagoon.format.keys import NamespaceKeys
from lagoon.storage.fs import FsStore

from .conftest import LiveServer

# The guide's table (section "Observability"), each with the labels it names.
GUIDE = (
    "lagoon_query_duration_seconds",
    "lagoon_cache_hits_total",
    "lagoon_cache_misses_total",
    "lagoon_indexing_lag_seconds",
    "lagoon_wal_tail_bytes",
    "lagoon_segment_count",
    "lagoon_compaction_running",
    "lagoon_compaction_total",
    "lagoon_objstore_requests_total",
    "lagoon_objstore_errors_total",
)

BUDGET = 64 << 20  # cache.memory_bytes of the servers below

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(server: LiveServer) -> Samples:
    """Every sample of ``/metrics`` by (name, labels); a family's samples also under its own
    name (histograms, counters: ``_count``, ``_total``), so a family with samples is found by
    the name the guide gives it."""
    text = httpx.get(server.url + "/metrics", timeout=10).text
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
            out.setdefault((family.name, frozenset({("sample", s.name)})), 0.0)
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


def names(samples: Samples) -> set[str]:
    return {n for n, _ in samples}


def _wait_for(server: LiveServer, done: object, what: str, timeout: float = 60.0) -> Samples:
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(server)
        if done(samples):  # type: ignore[operator]
            return samples
        assert time.monotonic() < deadline, f"{what}:\n{server.log()[-3000:]}"
        time.sleep(0.1)


def _post(server: LiveServer, path: str, body: object) -> None:
    r = httpx.post(server.url + path, json=body, timeout=30)
    assert r.status_code == 200, r.text


def _indexed_elsewhere(root: Path, name: str) -> None:
    """A namespace of one segment, written and indexed by another process before the server
    starts (its segment is in no cache of the server's: the server's indexer, which builds
    through the serving cache, never saw it)."""

    async def build() -> None:
        settings = Settings(storage={"backend": "fs", "root": str(root)})  # type: ignore[arg-type]
        store = FsStore(root)
        db = Database(store, settings)
        await db.write(
            name, {"upsert_rows": [{"id": 1, "vector": [0.0, 1.0]}], "distance_metric": "euclidean_squared"}
        )
        await index_namespace(store, NamespaceKeys.of("default", name), settings, Components(), force=True)
        await db.close()

    asyncio.run(build())


def test_the_deployment_guides_metrics_exist_and_move(tmp_path: Path) -> None:
    _indexed_elsewhere(tmp_path / "data", "c")
    server = LiveServer(
        tmp_path / "data",
        tmp_path / "server.log",
        ("--embedded-indexer",),
        LAGOON_SERVER__PROCESSES="1",
        LAGOON_CACHE__DIR=str(tmp_path / "cache"),
        LAGOON_CACHE__MAX_OPEN_NAMESPACES="1",
        LAGOON_INDEXER__FLUSH_INTERVAL_SECS="0.05",
        LAGOON_INDEXER__POLL_INTERVAL_SECS="0.05",
        LAGOON_INDEXER__COMPACTION_FANIN="2",
        LAGOON_CACHE__MEMORY_BYTES=str(BUDGET),
    )
    try:
        before = scrape(server)
        assert set(GUIDE) - names(before) <= {
            "lagoon_indexing_lag_seconds",
            "lagoon_wal_tail_bytes",
            "lagoon_segment_count",
        }
        schema = {"text": {"type": "string", "full_text_search": True}}
        label = "default/a"
        for batch in range(2):  # two segments, which the compactor (fan-in 2) merges
            rows = [
                {"id": batch * 10 + i, "vector": [1.0, float(i)], "text": f"word{i} common"}
                for i in range(10)
            ]
            _post(
                server,
                "/v2/namespaces/a",
                {"upsert_rows": rows, "schema": schema, "distance_metric": "euclidean_squared"},
            )
            _wait_for(
                server,
                lambda s: (
                    value(s, "lagoon_wal_tail_bytes", namespace=label) == 0
                    and value(s, "lagoon_segment_count", namespace=label) >= 1
                ),
                "the tail was not indexed",
            )
        _wait_for(
            server,
            lambda s: (
                value(s, "lagoon_compaction_total", outcome="committed")
                > value(before, "lagoon_compaction_total", outcome="committed")
            ),
            "no compaction committed",
        )
        _post(
            server,
            "/v2/namespaces/b",
            {"upsert_rows": [{"id": 1, "vector": [0.0, 1.0]}], "distance_metric": "euclidean_squared"},
        )
        vector = {"rank_by": ["vector", "ANN", [1.0, 2.0]], "top_k": 3}
        _post(server, "/v2/namespaces/a/query", vector)  # opens a's segment (files from the disk cache)
        _post(server, "/v2/namespaces/b/query", vector)  # closes a (cache.max_open_namespaces = 1)
        bm25 = {"rank_by": ["text", "BM25", "common"], "top_k": 3}
        _post(server, "/v2/namespaces/a/query", bm25)
        _post(server, "/v2/namespaces/a/query", {"queries": [vector, bm25]})  # hybrid
        _post(server, "/v2/namespaces/c/query", vector)  # a segment no cache holds yet
        after = scrape(server)
    finally:
        server.stop()

    assert set(GUIDE) <= names(after), set(GUIDE) - names(after)
    for kind in ("vector", "fts", "hybrid"):
        moved = value(after, "lagoon_query_duration_seconds_count", kind=kind)
        assert moved > value(before, "lagoon_query_duration_seconds_count", kind=kind), kind
    for name, layer in (("hits", "memory"), ("misses", "memory"), ("hits", "disk")):
        metric = f"lagoon_cache_{name}_total"
        assert value(after, metric, layer=layer) > value(before, metric, layer=layer), (name, layer)
    assert value(after, "lagoon_segment_count", namespace=label) == 1  # compacted
    assert value(after, "lagoon_indexing_lag_seconds", namespace=label) == 0
    assert value(after, "lagoon_compaction_running") == 0
    assert total(after, "lagoon_objstore_requests_total") > total(before, "lagoon_objstore_requests_total")
    assert total(after, "lagoon_objstore_errors_total") == 0  # (moves on store faults: tests/storage)
    held = value(after, "lagoon_cache_bytes", layer="memory")
    assert 0 < held <= value(after, "lagoon_cache_budget_bytes", layer="memory") == BUDGET
    # one serving process: the indexer built and compacted through its cache, not a second one
    assert ("lagoon_cache_budget_bytes", frozenset({("layer", "indexer")})) not in after


def test_an_indexer_process_beside_serving_processes_keeps_to_its_own_budget(tmp_path: Path) -> None:
    """With several serving processes the embedded indexer runs in a process of its own: its
    segment cache is bounded by ``indexer.memory_bytes`` (not a second ``cache.memory_bytes``),
    and the node's segment memory adds up to the two budgets (docs/operations.md, sizing)."""
    indexer_budget = 3 << 20
    server = LiveServer(
        tmp_path / "data",
        tmp_path / "server.log",
        ("--embedded-indexer",),
        LAGOON_SERVER__PROCESSES="2",
        LAGOON_CACHE__MEMORY_BYTES=str(BUDGET),
        LAGOON_INDEXER__MEMORY_BYTES=str(indexer_budget),
        LAGOON_INDEXER__FLUSH_INTERVAL_SECS="0.05",
        LAGOON_INDEXER__POLL_INTERVAL_SECS="0.05",
    )
    try:
        rows = [{"id": i, "vector": [1.0, float(i)]} for i in range(50)]
        _post(server, "/v2/namespaces/a", {"upsert_rows": rows, "distance_metric": "euclidean_squared"})
        after = _wait_for(
            server,
            lambda s: (
                value(s, "lagoon_index_builds_total", outcome="committed") >= 1
                and value(s, "lagoon_cache_bytes", layer="indexer") > 0
            ),
            "the indexer process did not build the segment",
        )
    finally:
        server.stop()
    assert value(after, "lagoon_cache_budget_bytes", layer="memory") == BUDGET  # (split in two)
    assert value(after, "lagoon_cache_budget_bytes", layer="indexer") == indexer_budget
    assert 0 < value(after, "lagoon_cache_bytes", layer="indexer") <= indexer_budget
