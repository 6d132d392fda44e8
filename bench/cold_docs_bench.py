"""Cold documents benchmark: the first BM25 top-k with attributes of a node with empty caches,
with the segment's ``docs`` file in version 2 (head, then only the batches of the result rows:
RFC 0006) against the same documents in a version 1 ``docs`` file (read whole before answering,
as Lagoon did before version 2), in the same run.

Setup: N real-text documents (``lagoon.index.text.corpus``: text, src, cat, year) written through
the engine into two namespaces and indexed into one segment each; the ``v1`` namespace's segment
is built with the version 1 ``docs`` writer (everything else identical). Stores: a local folder
(``fs``) and/or SeaweedFS (``bench/stores.py``); ``--rtt-ms`` adds round-trip latency to every
store request (fs: a delay per call; SeaweedFS: ``bench/latency_proxy.py`` on the wire).

Each repetition starts a fresh Database (no caches; the background fetch of whole files is off)
and times its first query, counting store requests and bytes read, then a second query (other
terms) on the same node. Run:

    .venv/bin/python bench/cold_docs_bench.py [--n 200000] [--stores fs] [--rtt-ms 0,20] [--reps 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NAMESPACES = {"v1": "docs_v1", "v2": "docs_v2"}
ATTRS = ["text", "src", "cat", "year"]


@contextlib.contextmanager
def v1_docs_writer() -> Iterator[None]:
    """Segments built inside write their ``docs`` file in version 1 (an Arrow IPC file)."""
    from lagoon.format.segment import MAGIC_DOCS, frame
    from lagoon.index.segment import build
    from lagoon.index.segment.docs import encode_docs_v1

    def encode(table: Any, schema: Any) -> tuple[bytes, dict[str, Any]]:
        return frame(MAGIC_DOCS, encode_docs_v1(table, schema)), {
            "kind": "docs",
            "columns": table.num_columns,
        }

    saved = build.encode_docs
    build.encode_docs = encode  # type: ignore[assignment]
    try:
        yield
    finally:
        build.encode_docs = saved  # type: ignore[assignment]


async def load(store: Any, docs: list[dict[str, Any]]) -> dict[str, int]:
    """Write and index both namespaces; the size of each one's docs file."""
    from lagoon.config import Settings
    from lagoon.engine.components import Components
    from lagoon.engine.database import Database
    from lagoon.engine.indexer import index_namespace
    from lagoon.format.keys import NamespaceKeys

    settings = Settings()
    db = Database(store, settings)
    schema = {"text": {"type": "string", "full_text_search": True}}
    sizes: dict[str, int] = {}
    for version, ns in NAMESPACES.items():
        t0 = time.perf_counter()
        for lo in range(0, len(docs), 10_000):
            rows = [{"id": lo + i, **d} for i, d in enumerate(docs[lo : lo + 10_000])]
            await db.write(ns, {"upsert_rows": rows, "schema": schema})
        keys = NamespaceKeys.of("default", ns)
        with v1_docs_writer() if version == "v1" else contextlib.nullcontext():
            await index_namespace(store, keys, settings, Components(), force=True)
        async for m in store.list(keys.root + "seg/"):
            if m.key.endswith("/docs"):
                sizes[version] = m.size
        print(
            f"  {ns}: {len(docs):,} docs written and indexed in {time.perf_counter() - t0:.1f} s", flush=True
        )
    await db.close()
    return sizes


async def cold_query(store: Any, version: str, queries: tuple[str, str]) -> dict[str, float]:
    from prometheus_client import CollectorRegistry

    from lagoon.config import Settings
    from lagoon.engine.database import Database
    from lagoon.storage.instrumented import InstrumentedStore

    counted = InstrumentedStore(store, CollectorRegistry())
    db = Database(counted, Settings())
    db.segment_io.hydrate = False
    ns = NAMESPACES[version]
    body = {"rank_by": ["text", "BM25", queries[0]], "top_k": 10, "include_attributes": ATTRS}
    t0 = time.perf_counter()
    got = await db.query(ns, body)
    first = (time.perf_counter() - t0) * 1000
    reqs, nbytes = sum(counted.counts.values()), counted.bytes_read
    t0 = time.perf_counter()
    await db.query(ns, {**body, "rank_by": ["text", "BM25", queries[1]]})
    second = (time.perf_counter() - t0) * 1000
    await db.close()
    assert len(got["rows"]) == 10, got
    return {"first_ms": first, "second_ms": second, "requests": reqs, "mib": nbytes / 2**20}


def target_of(base: Any, kind: str, rtt: float) -> tuple[Any, Any]:
    """The store to measure (``base`` with ``rtt`` ms added) and the proxy to stop, if any."""
    if rtt and kind != "fs":
        from bench.latency_proxy import LatencyProxy

        proxy = LatencyProxy("127.0.0.1", int(base.endpoint.rsplit(":", 1)[1]), rtt).start()
        return type(base)(kind, rtt, base.root, endpoint=proxy.endpoint, env=base.env), proxy
    return (type(base)(kind, rtt, base.root) if rtt else base), None


async def measure(target: Any, reps: int, qs: list[str]) -> dict[str, list[dict[str, float]]]:
    rows: dict[str, list[dict[str, float]]] = {"v1": [], "v2": []}
    for i in range(reps):  # interleaved, so both versions see the same machine noise
        for version in rows:
            store = target.open()
            rows[version].append(await cold_query(store, version, (qs[2 * i], qs[2 * i + 1])))
            await store.close()
    return rows


def lines(label: str, rows: dict[str, list[dict[str, float]]], sizes: dict[str, int]) -> list[str]:
    med = {v: statistics.median(r["first_ms"] for r in rs) for v, rs in rows.items()}
    mib = {v: statistics.median(r["mib"] for r in rs) for v, rs in rows.items()}
    out = []
    for v, rs in rows.items():
        ratio = f"{med['v2'] / med['v1']:.2f} | {mib['v2'] / mib['v1']:.3f} |" if v == "v2" else " | |"
        out.append(
            f"| {label} | {v} | {sizes[v] / 2**20:.1f} | {med[v]:.0f} | {min(r['first_ms'] for r in rs):.0f} | "
            f"{statistics.median(r['second_ms'] for r in rs):.1f} | "
            f"{statistics.median(r['requests'] for r in rs):.0f} | {mib[v]:.2f} | {ratio}"
        )
    return out


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--stores", default="fs", help="comma-separated: fs, seaweedfs")
    ap.add_argument("--rtt-ms", default="0,20", help="comma-separated added round-trip latencies")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    from bench.stores import bench_store
    from lagoon.index.text.corpus import corpus, sample_queries

    docs = [dict(d) for d in corpus(args.n, seed=1)]
    qs = sample_queries([d["text"] for d in docs], 2 * args.reps, seed=2)
    table: list[str] = []
    for kind in args.stores.split(","):
        with bench_store(kind) as base:
            print(f"cold documents benchmark: {args.n:,} documents on {kind}", flush=True)
            loader = base.open()
            sizes = await load(loader, docs)
            await loader.close()
            for rtt in (float(r) for r in args.rtt_ms.split(",")):
                target, proxy = target_of(base, kind, rtt)
                try:
                    rows = await measure(target, args.reps, qs)
                finally:
                    if proxy is not None:
                        proxy.stop()
                for line in lines(target.label, rows, sizes):
                    table.append(line)
                    print(line, flush=True)
    print(
        "\n| store | docs file | docs MiB | first query p50 ms | min ms | second query p50 ms | requests "
        "| MiB read | v2 / v1 latency | v2 / v1 bytes |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for line in table:
        print(line)


if __name__ == "__main__":
    asyncio.run(main())
