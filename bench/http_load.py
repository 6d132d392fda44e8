"""HTTP load: requests/s and latency percentiles of a small query and of a 100-row write.

Closed-loop load from one asyncio process (httpx, keep-alive connections) against a Lagoon server
on loopback, for a bounded time per scenario. Scenarios:

- ``query``: top-10 ANN query (128-d vector as a JSON float array) on a namespace of ``--docs``
  documents, strong consistency;
- ``health``: ``GET /healthz``, the floor of HTTP + framework + load generator (no engine);
- ``write``: upsert of 100 documents (128-d vectors, a short text) per request, each request to
  fresh ids so the namespace grows as a real ingest would.

    .venv/bin/python bench/http_load.py --spawn                 # start a server on a temp dir
    .venv/bin/python bench/http_load.py --spawn --store seaweedfs [--rtt-ms 30]   # on a real S3 server
    .venv/bin/python bench/http_load.py --url http://127.0.0.1:8080 [--seconds 10] [--concurrency 8]

Only loopback URLs are accepted: this is a local benchmark, not a load tool for other hosts.
The generator shares the box's CPUs with the server, so numbers are a floor for the server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
DIMS = 128


def vector(rng: random.Random) -> list[float]:
    return [rng.uniform(-1.0, 1.0) for _ in range(DIMS)]


def rows(start: int, n: int, rng: random.Random) -> list[dict[str, Any]]:
    return [
        {"id": start + i, "vector": vector(rng), "title": f"document {start + i} about lagoons", "n": i}
        for i in range(n)
    ]


def check_loopback(url: str) -> None:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"refusing non-loopback URL {url!r}: this benchmark only targets a local server")


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


async def closed_loop(
    name: str, seconds: float, concurrency: int, make_request: Callable[[int], Awaitable[httpx.Response]]
) -> dict[str, Any]:
    latencies: list[float] = []
    errors: dict[int, int] = {}
    stop = time.perf_counter() + seconds
    counter = 0

    async def worker() -> None:
        nonlocal counter
        while time.perf_counter() < stop:
            counter += 1
            t0 = time.perf_counter()
            resp = await make_request(counter)
            elapsed = time.perf_counter() - t0
            if resp.status_code == 200:
                latencies.append(elapsed)
            else:
                errors[resp.status_code] = errors.get(resp.status_code, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    latencies.sort()
    return {
        "scenario": name,
        "requests": len(latencies),
        "errors": errors,
        "req_per_s": len(latencies) / wall,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "mean_ms": statistics.fmean(latencies) * 1000 if latencies else float("nan"),
    }


async def run(
    url: str, seconds: float, concurrency: int, docs: int, scenarios: list[str]
) -> list[dict[str, Any]]:
    rng = random.Random(42)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"accept-encoding": "identity"}
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60.0, headers=headers) as client:
        ns = f"bench-{uuid.uuid4().hex[:8]}"
        for start in range(0, docs, 500):
            body = {
                "upsert_rows": rows(start, min(500, docs - start), rng),
                "distance_metric": "cosine_distance",
            }
            (await client.post(f"/v2/namespaces/{ns}", json=body)).raise_for_status()
        results = []
        if "health" in scenarios:
            results.append(
                await closed_loop(
                    "GET /healthz (HTTP floor)", seconds, concurrency, lambda i: client.get("/healthz")
                )
            )
        if "query" in scenarios:
            queries = [{"rank_by": ["vector", "ANN", vector(rng)], "top_k": 10} for _ in range(64)]
            for q in queries[:8]:  # warm up
                (await client.post(f"/v2/namespaces/{ns}/query", json=q)).raise_for_status()
            results.append(
                await closed_loop(
                    "query (top-10 ANN, 128-d)",
                    seconds,
                    concurrency,
                    lambda i: client.post(f"/v2/namespaces/{ns}/query", json=queries[i % len(queries)]),
                )
            )
        if "write" in scenarios:
            wns = ns + "-w"
            batches = [rows(0, 100, rng) for _ in range(16)]

            def write(i: int) -> Awaitable[httpx.Response]:
                batch = [{**doc, "id": i * 100 + j} for j, doc in enumerate(batches[i % len(batches)])]
                return client.post(
                    f"/v2/namespaces/{wns}", json={"upsert_rows": batch, "distance_metric": "cosine_distance"}
                )

            results.append(await closed_loop("write (100 rows, 128-d)", seconds, concurrency, write))
        await client.delete(f"/v2/namespaces/{ns}")
        await client.delete(f"/v2/namespaces/{ns}-w")
    return results


def spawn_server(target: Any) -> tuple[subprocess.Popen[bytes], str]:
    """lagoon-server on the store of ``target`` (a ``bench.stores.BenchStore``)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LAGOON_", "AWS_"))}
    env.update(target.env, LAGOON_OBSERVABILITY__LOG_LEVEL="warning")
    exe = REPO / ".venv" / "bin" / "lagoon-server"
    proc = subprocess.Popen(
        [str(exe), "--listen", f"127.0.0.1:{port}", *target.server_args()], env=env, stdout=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the spawned server did not become ready")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--spawn", action="store_true", help="start lagoon-server on a temporary store")
    parser.add_argument("--store", default="fs", help="with --spawn: fs (a temp dir) or seaweedfs (S3)")
    parser.add_argument(
        "--rtt-ms", type=float, default=0.0, help="with --store seaweedfs: round-trip latency added to S3"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each scenario")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--docs", type=int, default=2000, help="documents in the query namespace")
    parser.add_argument("--scenarios", default="health,query,write")
    args = parser.parse_args()
    proc = None
    url = args.url
    stack = contextlib.ExitStack()
    if args.spawn:
        sys.path.insert(0, str(REPO))
        from bench.stores import bench_store

        if args.rtt_ms and args.store == "fs":
            raise SystemExit("--rtt-ms needs --store seaweedfs (the delay is on the S3 connection)")
        target = stack.enter_context(bench_store(args.store, args.rtt_ms))
        proc, url = spawn_server(target)
    check_loopback(url)
    try:
        results = asyncio.run(run(url, args.seconds, args.concurrency, args.docs, args.scenarios.split(",")))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        stack.close()
    store = f", store {args.store}" + (f" +{args.rtt_ms:g} ms" if args.rtt_ms else "") if args.spawn else ""
    print(f"server {url}{store}, {args.concurrency} concurrent connections, {args.seconds:g} s per scenario")
    print(f"{'scenario':<28} {'req/s':>9} {'p50 ms':>9} {'p99 ms':>9} {'ok':>7}  errors")
    for r in results:
        print(
            f"{r['scenario']:<28} {r['req_per_s']:>9.1f} {r['p50_ms']:>9.2f} {r['p99_ms']:>9.2f} "
            f"{r['requests']:>7}  {r['errors'] or '-'}"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
