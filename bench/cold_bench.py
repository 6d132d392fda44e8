"""Cold-query benchmark: the first vector query of a node with empty caches, reading a segment's
vector file by ranged reads of its head and the probed cluster blocks ("ranged", the default),
against fetching every segment file whole before answering ("whole").

Setup: N calibrated clustered vectors (tests/index/segment/data.py, 128-d, cosine) written through the
engine and indexed into one segment on the chosen store: a local folder (``fs``, the default) or
S3 (moto's server on loopback, started here). ``--rtt-ms`` adds a fixed delay to every store
request, to emulate a bucket that is not on this machine (S3 in-region first-byte latency is
~10-30 ms). Use ``fs`` for the ranged mode's latency: moto copies the whole object for every
ranged GET and serves them one at a time (~80 ms per range of a 100 MB object, 34 ranges in
2.8 s), which real S3, MinIO or R2 do not; ``s3`` still checks the request and byte counts.

Each repetition starts a fresh Database (no caches) and times its first query (snapshot load +
segment open + search), counting store requests, sequential round trips and bytes read; the
background fetch of the rest of the file is switched off for the measurement, then a second
query on the same node is timed. Run:

    .venv/bin/python bench/cold_bench.py [--n 200000] [--store fs|s3] [--rtt-ms 20] [--reps 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.index.segment.data import queries, vectors  # noqa: E402

DIM = 128
NS = "cold"


class Delayed:
    """Delays every request by ``rtt`` seconds (an emulated remote bucket)."""

    def __init__(self, inner: Any, rtt: float) -> None:
        self.inner, self.rtt = inner, rtt

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name in ("get", "get_range", "get_ranges", "head", "put", "delete", "list_prefixes"):

            async def call(*a: Any, **kw: Any) -> Any:
                await asyncio.sleep(self.rtt)
                return await attr(*a, **kw)

            return call
        if name == "list":

            async def listing(*a: Any, **kw: Any) -> Any:
                await asyncio.sleep(self.rtt)
                async for m in attr(*a, **kw):
                    yield m

            return listing
        return attr


async def load(store: Any, n: int) -> None:
    from lagoon.config import Settings
    from lagoon.engine.components import Components
    from lagoon.engine.database import Database
    from lagoon.engine.indexer import index_namespace
    from lagoon.format.keys import NamespaceKeys

    settings = Settings()
    db = Database(store, settings)
    base = vectors(n, DIM)
    t0 = time.perf_counter()
    for lo in range(0, n, 10_000):
        ids = list(range(lo, min(n, lo + 10_000)))
        await db.write(
            NS,
            {
                "upsert_columns": {"id": ids, "vector": base[lo : lo + len(ids)].tolist()},
                "distance_metric": "cosine_distance",
            },
        )
    written = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = await index_namespace(store, NamespaceKeys.of("default", NS), settings, Components(), force=True)
    print(
        f"  wrote {n:,} docs in {written:.1f} s, indexed in {time.perf_counter() - t0:.1f} s ({out.status})",
        flush=True,
    )
    await db.close()


async def cold_query(store: Any, mode: str, q: np.ndarray, rtt: float) -> dict[str, float]:
    from prometheus_client import CollectorRegistry

    from lagoon.config import Settings
    from lagoon.engine.database import Database
    from lagoon.storage.instrumented import InstrumentedStore

    counted = InstrumentedStore(Delayed(store, rtt) if rtt else store, CollectorRegistry())
    db = Database(counted, Settings())
    db.segment_io.hydrate = False
    if mode == "whole":
        db.segment_io.lazy_min_bytes = 1 << 62
    body = {"rank_by": ["vector", "ANN", q.tolist()], "top_k": 10}
    t0 = time.perf_counter()
    await db.query(NS, body)
    first = (time.perf_counter() - t0) * 1000
    reqs, nbytes = sum(counted.counts.values()), counted.bytes_read
    t0 = time.perf_counter()
    await db.query(NS, {**body, "rank_by": ["vector", "ANN", (-q).tolist()]})
    second = (time.perf_counter() - t0) * 1000
    await db.close()
    return {"first_ms": first, "second_ms": second, "requests": reqs, "mib": nbytes / 2**20}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--store", choices=("fs", "s3"), default="fs")
    ap.add_argument("--rtt-ms", type=float, default=20.0)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory(prefix="lagoon-cold-")
    server = None
    if args.store == "s3":
        from bench.write_bench import moto_store

        store, server = moto_store()
    else:
        from lagoon.storage.fs import FsStore

        store = FsStore(tmp.name)
    print(
        f"cold-query benchmark: {args.n:,} x {DIM} vectors on {args.store}, +{args.rtt_ms:g} ms per request",
        flush=True,
    )
    await load(store, args.n)
    qs = queries(args.reps, DIM, seed=11)
    rows: dict[str, list[dict[str, float]]] = {"ranged": [], "whole": []}
    for i in range(args.reps):  # interleaved, so both modes see the same machine noise
        for mode in rows:
            rows[mode].append(await cold_query(store, mode, qs[i], args.rtt_ms / 1000))
    print("\n| mode | first query p50 ms | min ms | second query p50 ms | requests | MiB read |")
    print("|---|---|---|---|---|---|")
    med = {}
    for mode, rs in rows.items():
        med[mode] = statistics.median(r["first_ms"] for r in rs)
        print(
            f"| {mode} | {med[mode]:.0f} | {min(r['first_ms'] for r in rs):.0f} | "
            f"{statistics.median(r['second_ms'] for r in rs):.1f} | "
            f"{statistics.median(r['requests'] for r in rs):.0f} | {statistics.median(r['mib'] for r in rs):.1f} |"
        )
    print(f"\nfirst-query ratio ranged / whole: {med['ranged'] / med['whole']:.2f}")
    await store.close()
    if server is not None:
        server.stop()
    tmp.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
