"""``lagoon bench``: a quick write + query benchmark against the configured store.

It writes ``docs`` documents (a ``dims``-d random unit vector and a short text each) in batches
into a fresh scratch namespace, then times warm single queries (vector top-10, BM25 top-10,
filtered vector top-10) through the engine, and deletes the namespace. It measures this node and
this store as deployed; the comparisons with peer systems live in the repository's ``bench/``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from lagoon.engine.database import Database

_WORDS = [
    "lagoon",
    "object",
    "storage",
    "vector",
    "search",
    "index",
    "segment",
    "query",
    "filter",
    "manifest",
    "bucket",
    "write",
    "commit",
    "snapshot",
    "cluster",
    "postings",
    "ranking",
    "hybrid",
    "fusion",
    "tenant",
    "schema",
]


@dataclass(frozen=True)
class BenchResult:
    name: str
    count: int
    per_second: float
    p50_ms: float
    p99_ms: float


def _pct(samples: list[float], p: float) -> float:
    s = sorted(samples)
    return 1000 * s[min(len(s) - 1, int(p * len(s)))]


def _result(name: str, samples: list[float], per_item: int = 1) -> BenchResult:
    total = sum(samples)
    return BenchResult(
        name, len(samples), per_item * len(samples) / total, _pct(samples, 0.5), _pct(samples, 0.99)
    )


async def run_bench(
    db: Database, *, namespace: str, docs: int, dims: int, batch: int, queries: int, org: str = "default"
) -> list[BenchResult]:
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((docs, dims)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    words = np.array(_WORDS)
    results = []
    write_times: list[float] = []
    try:
        for start in range(0, docs, batch):
            rows: list[dict[str, Any]] = [
                {
                    "id": i,
                    "vector": vecs[i].tolist(),
                    "text": " ".join(words[rng.integers(0, len(words), 8)]),
                    "n": i % 100,
                }
                for i in range(start, min(docs, start + batch))
            ]
            body: dict[str, Any] = {"upsert_rows": rows}
            if start == 0:
                body["distance_metric"] = "cosine_distance"
                body["schema"] = {"text": {"type": "string", "full_text_search": True}}
            t0 = time.perf_counter()
            await db.write(namespace, body, org=org)
            write_times.append(time.perf_counter() - t0)
        results.append(_result(f"write ({batch} docs/request, docs/s)", write_times, batch))
        qv = rng.standard_normal((queries, dims)).astype(np.float32)
        bodies: dict[str, Callable[[int], dict[str, Any]]] = {
            "vector top-10": lambda i: {"rank_by": ["vector", "ANN", qv[i].tolist()], "top_k": 10},
            "BM25 top-10": lambda i: {
                "rank_by": ["text", "BM25", f"{_WORDS[i % 20]} {_WORDS[(i * 7) % 20]}"],
                "top_k": 10,
            },
            "vector top-10, filter 10%": lambda i: {
                "rank_by": ["vector", "ANN", qv[i].tolist()],
                "top_k": 10,
                "filters": ["n", "Lt", 10],
            },
        }
        for name, make in bodies.items():
            await db.query(namespace, make(0), org=org)  # warm
            times = []
            for i in range(queries):
                t0 = time.perf_counter()
                await db.query(namespace, make(i), org=org)
                times.append(time.perf_counter() - t0)
            results.append(_result(f"{name} (queries/s)", times))
    finally:
        try:
            await db.delete_namespace(namespace, org=org)
        except Exception:  # the namespace may not exist if the first write failed
            pass
    return results


def format_results(results: list[BenchResult]) -> str:
    lines = [f"{'benchmark':<44} {'count':>6} {'rate':>10} {'p50 ms':>9} {'p99 ms':>9}"]
    for r in results:
        lines.append(f"{r.name:<44} {r.count:>6} {r.per_second:>10.1f} {r.p50_ms:>9.2f} {r.p99_ms:>9.2f}")
    return "\n".join(lines)
