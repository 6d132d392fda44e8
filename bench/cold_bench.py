"""Cold-query benchmark: the first vector query of a node with empty caches, reading a segment's
vector file by ranged reads of its head and the probed cluster blocks ("ranged", the default),
against fetching every segment file whole before answering ("whole"); with several segments
(``--segments``), also ranged reads of one segment after another ("ranged 1-by-1":
``server.segment_fetch_parallelism = 1``, how every cold query read its segments before that
setting) against the segments read at once ("ranged", the default parallelism).

Setup: N calibrated clustered vectors (tests/index/segment/data.py, 128-d, cosine) written through the
engine and indexed into one segment (or ``--segments`` S: N/S documents each, one namespace per
S) on each chosen store: a local folder (``fs``) and a real S3
server (``seaweedfs``: SeaweedFS on loopback, started here; ``bench/stores.py``). ``--rtt-ms``
adds round-trip latency to every store request, to emulate a bucket that is not on this machine
(S3 in-region first-byte latency is ~10-30 ms): on SeaweedFS through a latency-injecting TCP
proxy (on the wire, per request and per new connection), on fs as a delay per call.

Each repetition starts a fresh Database (no caches) and times its first query (snapshot load +
segment open + search), counting store requests, sequential round trips and bytes read; the
background fetch of the rest of the file is switched off for the measurement, then a second
query on the same node is timed. Run:

    .venv/bin/python bench/cold_bench.py [--n 200000] [--stores fs,seaweedfs] [--rtt-ms 0,10,30,80] [--reps 5]
        [--segments 1,4,8]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.index.segment.data import queries, vectors  # noqa: E402

DIM = 128
NS = "cold"


async def load(store: Any, n: int, segments: int) -> None:
    from lagoon.config import Settings
    from lagoon.engine.components import Components
    from lagoon.engine.database import Database
    from lagoon.engine.indexer import index_namespace
    from lagoon.format.keys import NamespaceKeys

    settings = Settings()
    db = Database(store, settings)
    base = vectors(n, DIM)
    keys = NamespaceKeys.of("default", namespace(segments))
    per_segment = -(-n // segments)
    written = indexed = 0.0
    for start in range(0, n, per_segment):
        t0 = time.perf_counter()
        for lo in range(start, min(n, start + per_segment), 10_000):
            ids = list(range(lo, min(n, start + per_segment, lo + 10_000)))
            await db.write(
                keys.namespace,
                {
                    "upsert_columns": {"id": ids, "vector": base[lo : lo + len(ids)].tolist()},
                    "distance_metric": "cosine_distance",
                },
            )
        written += time.perf_counter() - t0
        t0 = time.perf_counter()
        out = await index_namespace(store, keys, settings, Components(), force=True)
        indexed += time.perf_counter() - t0
    print(
        f"  wrote {n:,} docs in {written:.1f} s, indexed into {out.segments} segments in {indexed:.1f} s",
        flush=True,
    )
    await db.close()


def namespace(segments: int) -> str:
    return NS if segments == 1 else f"{NS}-{segments}"


MODES = {"ranged": {}, "ranged 1-by-1": {"segment_fetch_parallelism": 1}, "whole": {}}


async def cold_query(store: Any, mode: str, q: np.ndarray, segments: int) -> dict[str, float]:
    from prometheus_client import CollectorRegistry

    from lagoon.config import Settings
    from lagoon.engine.database import Database
    from lagoon.storage.instrumented import InstrumentedStore

    counted = InstrumentedStore(store, CollectorRegistry())
    db = Database(counted, Settings(server=MODES[mode]))  # type: ignore[arg-type]
    db.segment_io.hydrate = False
    if mode == "whole":
        db.segment_io.lazy_min_bytes = 1 << 62
    body = {"rank_by": ["vector", "ANN", q.tolist()], "top_k": 10}
    ns = namespace(segments)
    t0 = time.perf_counter()
    await db.query(ns, body)
    first = (time.perf_counter() - t0) * 1000
    reqs, nbytes = sum(counted.counts.values()), counted.bytes_read
    t0 = time.perf_counter()
    await db.query(ns, {**body, "rank_by": ["vector", "ANN", (-q).tolist()]})
    second = (time.perf_counter() - t0) * 1000
    await db.close()
    return {"first_ms": first, "second_ms": second, "requests": reqs, "mib": nbytes / 2**20}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--stores", default="fs,seaweedfs", help="comma-separated: fs, seaweedfs")
    ap.add_argument("--rtt-ms", default="0,10,30,80", help="comma-separated added round-trip latencies")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--segments", default="1", help="comma-separated segment counts, e.g. 1,4,8")
    args = ap.parse_args()
    counts = [int(s) for s in args.segments.split(",")]
    from bench.stores import bench_store

    table: list[str] = []
    for kind in args.stores.split(","):
        with bench_store(kind) as base:
            print(f"cold-query benchmark: {args.n:,} x {DIM} vectors on {kind}", flush=True)
            loader = base.open()
            for segments in counts:
                await load(loader, args.n, segments)
            await loader.close()
            for rtt, segments in ((float(r), s) for r in args.rtt_ms.split(",") for s in counts):
                target = base
                proxy = None
                if rtt and kind != "fs":
                    from bench.latency_proxy import LatencyProxy

                    port = int(base.endpoint.rsplit(":", 1)[1])
                    proxy = LatencyProxy("127.0.0.1", port, rtt).start()
                    target = type(base)(kind, rtt, base.root, endpoint=proxy.endpoint, env=base.env)
                elif rtt:
                    target = type(base)(kind, rtt, base.root)
                qs = queries(args.reps, DIM, seed=11)
                modes = [m for m in MODES if segments > 1 or m != "ranged 1-by-1"]
                rows: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
                try:
                    for i in range(args.reps):  # interleaved, so every mode sees the same machine noise
                        for mode in rows:
                            store = target.open()
                            rows[mode].append(await cold_query(store, mode, qs[i], segments))
                            await store.close()
                finally:
                    if proxy is not None:
                        proxy.stop()
                med = {mode: statistics.median(r["first_ms"] for r in rs) for mode, rs in rows.items()}
                for mode, rs in rows.items():
                    line = (
                        f"| {target.label} | {segments} | {mode} | {med[mode]:.0f} | "
                        f"{min(r['first_ms'] for r in rs):.0f} | "
                        f"{statistics.median(r['second_ms'] for r in rs):.1f} | "
                        f"{statistics.median(r['requests'] for r in rs):.0f} | "
                        f"{statistics.median(r['mib'] for r in rs):.1f} | {med[mode] / med['ranged']:.2f} |"
                    )
                    table.append(line)
                    print(line, flush=True)
    print(
        "\n| store | segments | mode | first query p50 ms | min ms | second query p50 ms | requests | "
        "MiB read | first / ranged |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for line in table:
        print(line)


if __name__ == "__main__":
    asyncio.run(main())
