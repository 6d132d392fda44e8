"""Write-path benchmark: throughput, acknowledgement latency and store requests per commit.

Drives the engine in-process (no HTTP) against a real backend: the local filesystem and a real S3
server (SeaweedFS on loopback, started here; ``bench/stores.py``), optionally with round-trip
latency added (``--rtt-ms 0,30``: SeaweedFS through a latency-injecting proxy, fs by a delay per
call). For each request size (1 KB and 512 KB bodies of documents with a 128-d vector and a short
text) it runs C concurrent writers on one namespace for a fixed time and reports docs/s,
requests/s, ack latency p50/p99, and object-store requests per commit (the group commit turns
many requests into one WAL PUT).

    .venv/bin/python bench/write_bench.py [--seconds 10] [--writers 8] [--backends fs,seaweedfs] [--rtt-ms 0]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lagoon.config import Settings
from lagoon.engine.database import Database
from lagoon.storage.instrumented import InstrumentedStore


def make_docs(n: int, start: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    vecs = rng.standard_normal((n, 128)).astype(np.float32)
    return [
        {"id": start + i, "vector": vecs[i].tolist(), "title": f"document {start + i} about lagoons", "n": i}
        for i in range(n)
    ]


def docs_per_request(target_bytes: int) -> int:
    # ~1.1 KB of JSON per document (128 floats as text + attributes)
    return max(1, target_bytes // 1100)


async def run_case(store: Any, label: str, size: int, writers: int, seconds: float) -> dict[str, Any]:
    inst = InstrumentedStore(store)
    settings = Settings()
    db = Database(inst, settings)
    ns = f"bench-{label.replace('+', '-')}-{size}-{os.getpid()}"
    per_req = docs_per_request(size)
    rng = np.random.default_rng(0)
    pool = [make_docs(per_req, 0, rng) for _ in range(8)]
    await db.write(ns, {"upsert_rows": pool[0], "distance_metric": "cosine_distance"})
    latencies: list[float] = []
    counter = [10_000_000]
    stop = time.perf_counter() + seconds
    base_counts = dict(inst.counts)
    commits_before = db.handle("default", ns).committer.commits

    async def writer(w: int) -> None:
        k = 0
        while time.perf_counter() < stop:
            docs = pool[(w + k) % len(pool)]
            start_id = counter[0]
            counter[0] += len(docs)
            body = {"upsert_rows": [{**d, "id": start_id + j} for j, d in enumerate(docs)]}
            t0 = time.perf_counter()
            await db.write(ns, body)
            latencies.append(time.perf_counter() - t0)
            k += 1

    t_start = time.perf_counter()
    await asyncio.gather(*(writer(w) for w in range(writers)))
    elapsed = time.perf_counter() - t_start
    commits = db.handle("default", ns).committer.commits - commits_before
    requests = {k: v - base_counts.get(k, 0) for k, v in inst.counts.items()}
    total_store = sum(requests.values())
    await db.close()
    lat = sorted(latencies)
    return {
        "backend": label,
        "request_bytes": size,
        "docs_per_request": per_req,
        "writers": writers,
        "requests": len(lat),
        "requests_per_s": len(lat) / elapsed,
        "docs_per_s": len(lat) * per_req / elapsed,
        "ack_p50_ms": 1000 * lat[len(lat) // 2],
        "ack_p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))],
        "ack_mean_ms": 1000 * statistics.fmean(lat),
        "commits": commits,
        "requests_per_commit": len(lat) / max(commits, 1),
        "store_requests_per_commit": total_store / max(commits, 1),
        "store_requests": requests,
    }


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--writers", type=int, default=8)
    ap.add_argument("--backends", default="fs,seaweedfs")
    ap.add_argument("--sizes", default="1024,524288")
    ap.add_argument("--rtt-ms", default="0", help="comma-separated added round-trip latencies")
    args = ap.parse_args()
    from bench.stores import bench_store

    rows = []
    for backend in args.backends.split(","):
        for rtt in (float(r) for r in args.rtt_ms.split(",")):
            with bench_store(backend, rtt) as target:
                for size in (int(s) for s in args.sizes.split(",")):
                    for writers in (1, args.writers):
                        store = target.open()
                        try:
                            r = await run_case(store, target.label, size, writers, args.seconds)
                        finally:
                            await store.close()
                        rows.append(r)
                        print(
                            f"{r['backend']:14} {r['request_bytes']:>7}B x{r['docs_per_request']:>3} docs "
                            f"writers={r['writers']:<2} req/s={r['requests_per_s']:8.1f} "
                            f"docs/s={r['docs_per_s']:9.0f} "
                            f"ack p50={r['ack_p50_ms']:7.1f}ms p99={r['ack_p99_ms']:7.1f}ms "
                            f"req/commit={r['requests_per_commit']:5.2f} "
                            f"store-ops/commit={r['store_requests_per_commit']:5.2f} {r['store_requests']}",
                            flush=True,
                        )
    print("\n| store | body | writers | req/s | docs/s | ack p50 ms | ack p99 ms | store ops/commit |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['backend']} | {r['request_bytes'] // 1024} KiB | {r['writers']} | {r['requests_per_s']:.0f} | "
            f"{r['docs_per_s']:.0f} | {r['ack_p50_ms']:.1f} | {r['ack_p99_ms']:.1f} | "
            f"{r['store_requests_per_commit']:.2f} |"
        )


if __name__ == "__main__":
    asyncio.run(main())
