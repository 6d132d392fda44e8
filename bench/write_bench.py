"""Write-path benchmark: throughput, acknowledgement latency and WAL entries per group commit.

Two modes.

``--http`` (the write targets): starts ``lagoon-server`` on loopback (fs store in a temp folder,
default configuration, no embedded indexer unless ``--indexer``) and drives it with ``wrk`` (a C
load generator; install it with ``bench/setup``) with W keep-alive connections, each sending
100-row upserts of 128-d vectors to one namespace per body format:

- ``json``: ``upsert_rows`` with vectors as JSON number arrays (what the SDKs send by default);
- ``base64``: ``upsert_rows`` with vectors as base64 little-endian f32 strings;
- ``columns``: ``upsert_columns`` with vectors as JSON number arrays;
- ``columns-base64``: ``upsert_columns`` with base64 vectors.

It prints docs/s, ack latency p50/p99 (wrk's, so HTTP and queueing included), the WAL entries
the run created and the requests per entry (group commit: every entry is one PUT of one group;
its ``requests`` field says how many requests it holds), how often consecutive entries were
committed by different serving processes (writer switches), the server's CPU seconds per request and
docs per server CPU-second (the figure that holds up on a shared machine). ``--spy DIR`` also
records the serving processes with py-spy during each run and prints the CPU per request by stage
of the write path (``bench/write_profile.py``).

``--engine``: the engine in-process (no HTTP, no JSON) against a real backend: the local
filesystem and a real S3 server (SeaweedFS on loopback, ``bench/stores.py``), optionally with
round-trip latency added (``--rtt-ms 0,30``). For each body format it runs 1 and W concurrent
writers on one namespace for a fixed time and reports docs/s, ack p50/p99 and object-store
requests per commit. ``--profile FILE`` writes a cProfile of the W-writer cases (``pstats`` reads it).

    .venv/bin/python bench/write_bench.py --http [--seconds 10] [--writers 8] [--formats json,base64] [--spy DIR]
        [--compare OTHER_WORKTREE --rounds 2]
    .venv/bin/python bench/write_bench.py --engine [--backends fs,seaweedfs] [--rtt-ms 0] [--profile write.prof]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import write_profile  # noqa: E402
from load_matrix import Server, run_wrk, start_server  # noqa: E402

from lagoon.config import Settings  # noqa: E402
from lagoon.engine.database import Database  # noqa: E402
from lagoon.format.wal import decode_entry  # noqa: E402
from lagoon.storage.instrumented import InstrumentedStore  # noqa: E402

DIMS = 128
FORMATS = ("json", "base64", "columns", "columns-base64")
POOL_BODIES = 200  # distinct request bodies per format (ids repeat after POOL_BODIES requests)


def vector_value(vec: np.ndarray, fmt: str) -> Any:
    if fmt.endswith("base64"):
        return base64.b64encode(vec.astype("<f4").tobytes()).decode()
    return vec.tolist()


def make_body(fmt: str, start: int, rows: int, rng: np.random.Generator) -> dict[str, Any]:
    """One upsert of ``rows`` documents with ids ``start..start+rows-1`` in body format ``fmt``."""
    vecs = rng.standard_normal((rows, DIMS)).astype(np.float32)
    ids = list(range(start, start + rows))
    vectors = [vector_value(v, fmt) for v in vecs]
    titles = [f"document {i} about lagoons" for i in ids]
    if fmt.startswith("columns"):
        return {"upsert_columns": {"id": ids, "vector": vectors, "title": titles, "n": ids}}
    return {
        "upsert_rows": [
            {"id": i, "vector": v, "title": t, "n": i} for i, v, t in zip(ids, vectors, titles, strict=True)
        ]
    }


# --- over HTTP -----------------------------------------------------------------------------------


def wal_entries(store_root: Path, namespace: str) -> tuple[int, int, int, list[tuple[int, str]]]:
    """(entries, requests they hold, bytes, (seq, writer) of each) of the namespace's WAL in an
    fs store. An entry's ``writer`` names the serving process that committed it."""
    entries = requests = size = 0
    writers = []
    for path in store_root.glob(f"**/{namespace}/wal/*.wal"):
        data = path.read_bytes()
        entry = decode_entry(data)
        entries += 1
        requests += entry.requests
        size += len(data)
        writers.append((entry.seq, entry.writer))
    return entries, requests, size, sorted(writers)


def writer_switches(before: list[tuple[int, str]], after: list[tuple[int, str]]) -> int:
    """Consecutive new WAL entries committed by different serving processes: the commit moved
    from one process to another (a commit turn switch)."""
    seen = {seq for seq, _ in before}
    new = [w for seq, w in after if seq not in seen]
    return sum(a != b for a, b in itertools.pairwise(new))


def cpu_by_pid(server: Server) -> dict[int, float]:
    """CPU seconds so far of each process of the server's tree."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for pid in server.pids():
        with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
            out[pid] = (int(fields[11]) + int(fields[12])) / tick
    return out


def routed_writes(server: Server) -> dict[str, float]:
    """``lagoon_routed_writes_total`` by outcome (empty for a build without commit routing)."""
    out: dict[str, float] = {}
    for line in httpx.get(f"{server.url}/metrics", timeout=30).text.splitlines():
        if line.startswith("lagoon_routed_writes_total{"):
            outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
            out[outcome] = out.get(outcome, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


WARM_UP_REQUESTS = 16


def warm_up(server: Server, namespace: str, bodies: Path) -> None:
    """A few writes, each on a connection of its own, so that every serving process (the kernel
    spreads connections over them) has served this kind of write before the clock starts: a
    process's first write imports and compiles modules (seconds of CPU at load, more with
    PYTHONDONTWRITEBYTECODE), which would land inside the measured window of one format."""
    lines = bodies.read_bytes().splitlines()[:WARM_UP_REQUESTS]
    for body in lines:
        httpx.post(f"{server.url}/v2/namespaces/{namespace}", content=body, timeout=60).raise_for_status()


def http_case(
    server: Server, root: Path, fmt: str, rows: int, writers: int, seconds: float, spy: Path | None = None
) -> dict[str, Any]:
    namespace = f"write-{fmt}"
    rng = np.random.default_rng(0)
    create = make_body(fmt, 0, rows, rng) | {"distance_metric": "cosine_distance"}
    httpx.post(
        f"{server.url}/v2/namespaces/{namespace}", content=orjson.dumps(create), timeout=60
    ).raise_for_status()
    bodies = root / f"{fmt}.jsonl"
    with open(bodies, "wb") as f:
        for k in range(POOL_BODIES):
            f.write(orjson.dumps(make_body(fmt, (k + 1) * rows, rows, rng)) + b"\n")
    body_bytes = bodies.stat().st_size // POOL_BODIES
    warm_up(server, namespace, bodies)
    before = wal_entries(root / "store", namespace)
    cpu_before = server.cpu_seconds()
    cpu_before_pid = cpu_by_pid(server)
    routed_before = routed_writes(server)
    trace = spy / f"{fmt}.txt" if spy else None
    sampler = write_profile.record(server.proc.pid, seconds, trace) if trace else None
    result = run_wrk(server.url, f"/v2/namespaces/{namespace}", bodies, writers, seconds)
    cpu = server.cpu_seconds() - cpu_before
    split = sorted(
        (cpu_by_pid(server).get(pid, 0.0) - cpu_before_pid.get(pid, 0.0) for pid in cpu_before_pid),
        reverse=True,
    )
    routed_after = routed_writes(server)
    if trace and sampler:
        sampler.wait()
        write_profile.print_breakdown(fmt, write_profile.breakdown(trace, cpu, result["requests"]))
    after = wal_entries(root / "store", namespace)
    entries, held = after[0] - before[0], after[1] - before[1]
    seconds_run = result["duration_us"] / 1e6
    return {
        "format": fmt,
        "rows": rows,
        "writers": writers,
        "body_bytes": body_bytes,
        "requests": result["requests"],
        "errors": result["non2xx"] + result["socket_errors"],
        "docs_per_s": result["requests"] * rows / seconds_run,
        "ack_p50_ms": result["p50_us"] / 1000,
        "ack_p99_ms": result["p99_us"] / 1000,
        "wal_entries": entries,
        "switches": writer_switches(before[3], after[3]),
        "busiest_cpu_pct": 100 * (split[0] if split else 0.0) / seconds_run,
        "routed": {k: routed_after.get(k, 0) - routed_before.get(k, 0) for k in routed_after},
        "requests_per_entry": held / max(entries, 1),
        "wal_bytes_per_entry": (after[2] - before[2]) / max(entries, 1),
        "server_cpu_pct": 100 * cpu / seconds_run,
        "docs_per_cpu_s": result["requests"] * rows / max(cpu, 1e-9),
        "cpu_ms_per_request": 1000 * cpu / max(result["requests"], 1),
        "stderr": result.get("stderr", ""),
    }


def run_http(args: argparse.Namespace) -> None:
    rows = []
    builds = [("this", REPO)] + ([("other", args.compare)] if args.compare else [])
    for round_ in range(args.rounds):
        for label, repo in builds if round_ % 2 == 0 else builds[::-1]:
            rows += http_build(args, label, repo)
    print(
        f"\n{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, wrk {args.seconds:g} s per format"
        + (f"; this = {REPO}, other = {args.compare}" if args.compare else "")
    )
    print(
        "| build | body | KiB | writers | docs/s | ack p50 ms | ack p99 ms | p99/p50 | requests/WAL entry "
        "| writer switches | server CPU % | busiest process CPU % | docs per server CPU-s "
        "| server CPU ms per request | load |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['build']} | {r['format']} | {r['body_bytes'] // 1024} | {r['writers']} | {r['docs_per_s']:,.0f} | "
            f"{r['ack_p50_ms']:.1f} | {r['ack_p99_ms']:.1f} | {r['ack_p99_ms'] / max(r['ack_p50_ms'], 1e-9):.1f} | "
            f"{r['requests_per_entry']:.1f} | {r['switches']} | {r['server_cpu_pct']:.0f} | {r['busiest_cpu_pct']:.0f} | "
            f"{r['docs_per_cpu_s']:,.0f} | "
            f"{r['cpu_ms_per_request']:.2f} | {r['load']:.1f} |"
        )


def http_build(args: argparse.Namespace, label: str, repo: Path) -> list[dict[str, Any]]:
    """Every format against one server of the build in ``repo``."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="lagoon-write-bench-") as tmp:
        root = Path(tmp)
        extra = [] if args.processes is None else ["--set", f"server.processes={args.processes}"]
        for setting in args.set:
            extra += ["--set", setting]
        server = start_server(root, "lagoon", None, args.indexer, extra, root / "server.log", repo=repo)
        try:
            for fmt in args.formats.split(","):
                spy = None if args.spy is None else args.spy / label if args.compare else args.spy
                if spy is not None:
                    spy.mkdir(parents=True, exist_ok=True)
                r = http_case(server, root, fmt, args.rows, args.writers, args.seconds, spy)
                r["build"], r["load"] = label, os.getloadavg()[0]
                rows.append(r)
                print(
                    f"{label:5} {r['format']:15} {r['body_bytes'] // 1024:>4} KiB x{r['rows']} rows writers={r['writers']} "
                    f"docs/s={r['docs_per_s']:9.0f} ack p50={r['ack_p50_ms']:7.1f}ms p99={r['ack_p99_ms']:7.1f}ms "
                    f"(p99/p50 {r['ack_p99_ms'] / max(r['ack_p50_ms'], 1e-9):.1f}) "
                    f"entries={r['wal_entries']} req/entry={r['requests_per_entry']:.1f} switches={r['switches']} "
                    f"server CPU={r['server_cpu_pct']:.0f}% docs/CPU-s={r['docs_per_cpu_s']:.0f} "
                    f"CPU/request={r['cpu_ms_per_request']:.2f}ms busiest process={r['busiest_cpu_pct']:.0f}% "
                    f"routed={ {k: int(v) for k, v in r['routed'].items() if v} } errors={r['errors']} {r['stderr']}",
                    flush=True,
                )
        finally:
            server.stop()
    return rows


# --- in-process ----------------------------------------------------------------------------------


@contextlib.contextmanager
def profiling(path: str | None) -> Iterator[None]:
    """cProfile around the block (the standard library's: the bench group has no sampling
    profiler); the stats go to ``path`` and the top functions by own time are printed."""
    if path is None:
        yield
        return
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()
        profiler.dump_stats(path)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


async def engine_case(
    store: Any, label: str, fmt: str, rows: int, writers: int, seconds: float, profile: str | None
) -> dict[str, Any]:
    inst = InstrumentedStore(store)
    db = Database(inst, Settings())
    ns = f"bench-{label.replace('+', '-')}-{fmt}-{writers}-{os.getpid()}"
    rng = np.random.default_rng(0)
    await db.write(ns, make_body(fmt, 0, rows, rng) | {"distance_metric": "cosine_distance"})
    pool = [make_body(fmt, (k + 1) * rows, rows, rng) for k in range(16)]
    latencies: list[float] = []
    stop = time.perf_counter() + seconds
    base_counts = dict(inst.counts)
    commits_before = db.handle("default", ns).committer.commits

    async def writer(w: int) -> None:
        k = w
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            await db.write(ns, pool[k % len(pool)])
            latencies.append(time.perf_counter() - t0)
            k += writers

    t_start = time.perf_counter()
    with profiling(profile):
        await asyncio.gather(*(writer(w) for w in range(writers)))
    elapsed = time.perf_counter() - t_start
    commits = db.handle("default", ns).committer.commits - commits_before
    total_store = sum(v - base_counts.get(k, 0) for k, v in inst.counts.items())
    await db.close()
    lat = sorted(latencies)
    return {
        "backend": label,
        "format": fmt,
        "writers": writers,
        "docs_per_s": len(lat) * rows / elapsed,
        "ack_p50_ms": 1000 * lat[len(lat) // 2],
        "ack_p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))],
        "ack_mean_ms": 1000 * statistics.fmean(lat),
        "requests_per_commit": len(lat) / max(commits, 1),
        "store_requests_per_commit": total_store / max(commits, 1),
    }


async def run_engine(args: argparse.Namespace) -> None:
    from bench.stores import bench_store

    results = []
    for backend in args.backends.split(","):
        for rtt in (float(r) for r in args.rtt_ms.split(",")):
            with bench_store(backend, rtt) as target:
                for fmt in args.formats.split(","):
                    for writers in (1, args.writers):
                        store = target.open()
                        profile = args.profile if writers == args.writers else None
                        try:
                            r = await engine_case(
                                store, target.label, fmt, args.rows, writers, args.seconds, profile
                            )
                        finally:
                            await store.close()
                        results.append(r)
                        print(
                            f"{r['backend']:14} {r['format']:15} writers={r['writers']:<2} "
                            f"docs/s={r['docs_per_s']:9.0f} ack p50={r['ack_p50_ms']:7.1f}ms "
                            f"p99={r['ack_p99_ms']:7.1f}ms req/commit={r['requests_per_commit']:5.2f} "
                            f"store-ops/commit={r['store_requests_per_commit']:5.2f}",
                            flush=True,
                        )
    print(
        "\n| store | body | writers | docs/s | ack p50 ms | ack p99 ms | requests/commit | store ops/commit |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['backend']} | {r['format']} | {r['writers']} | {r['docs_per_s']:,.0f} | {r['ack_p50_ms']:.1f} | "
            f"{r['ack_p99_ms']:.1f} | {r['requests_per_commit']:.1f} | {r['store_requests_per_commit']:.2f} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--http", action="store_true", help="a real lagoon-server driven by wrk")
    mode.add_argument("--engine", action="store_true", help="the engine in-process (no HTTP)")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--writers", type=int, default=8)
    ap.add_argument("--rows", type=int, default=100, help="documents per request")
    ap.add_argument("--formats", default=",".join(FORMATS), help=f"body formats among {', '.join(FORMATS)}")
    ap.add_argument("--processes", type=int, default=None, help="--http: server.processes (default: config)")
    ap.add_argument(
        "--compare",
        type=Path,
        default=None,
        help="--http: also run the server of this checkout (a bootstrapped worktree), interleaved with this one",
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="--http: a server setting (repeatable)",
    )
    ap.add_argument(
        "--rounds", type=int, default=1, help="--http: rounds (builds alternate which goes first)"
    )
    ap.add_argument(
        "--indexer", action="store_true", help="--http: with the embedded indexer (folds the WAL meanwhile)"
    )
    ap.add_argument("--backends", default="fs,seaweedfs", help="--engine: stores")
    ap.add_argument("--rtt-ms", default="0", help="--engine: comma-separated added round-trip latencies")
    ap.add_argument("--profile", default=None, help="--engine: cProfile stats of the W-writer cases")
    ap.add_argument(
        "--spy",
        type=Path,
        default=None,
        help="--http: py-spy the serving processes into DIR/<format>.txt and print CPU per request by stage",
    )
    args = ap.parse_args()
    bad = set(args.formats.split(",")) - set(FORMATS)
    if bad:
        raise SystemExit(f"unknown format(s): {', '.join(sorted(bad))}")
    if args.spy is not None:
        args.spy.mkdir(parents=True, exist_ok=True)
    if args.http:
        run_http(args)
    else:
        asyncio.run(run_engine(args))


if __name__ == "__main__":
    main()
