"""A serving node's resident memory while it queries many namespaces in turn, against its budget.

The memory cache (``cache.memory_bytes``) charges what each segment holds in memory; the
question is whether the process's memory follows that charge when the namespaces together hold
several times the budget and all stay open (``cache.max_open_namespaces`` is far higher). The
benchmark builds ``--namespaces`` namespaces of one indexed segment each (``--rows`` documents:
a ``--dim``-d vector, a short text, an integer) in a local folder, then, in a fresh process per
budget (so the build's allocations are not counted), opens a ``Database`` with
``cache.memory_bytes`` set to that budget, queries every namespace in turn (an ANN query and a
query returning 1,000 documents with their attributes) for ``--rounds`` rounds, and prints after
each round the process's RSS (``/proc/self/status`` VmRSS), the cache's charged bytes, and, at
the end, the RSS right after opening the node (interpreter, libraries: the floor) and the peak.

The in-run reference is the same run with a budget that holds everything (``unbounded``): RSS
minus the floor then is what every segment costs in memory, and a bounded node should stay near
floor + budget. Last, 300 warm ANN queries on the namespace queried last (cached) give a warm
p50, the hot path's cost; each round's wall time is the cost of the churn path (with a small
budget every namespace's segment is opened again, its memory allocated and freed). Run it on two
trees (before/after a change) with ``--tree``; ``--malloc default,tuned`` runs every budget
under glibc's default allocator settings and under ``MALLOC_ARENA_MAX=2
MALLOC_MMAP_THRESHOLD_=131072`` (``TUNED_MALLOC``), interleaved, ``--repeat`` times.

    .venv/bin/python bench/memory_bench.py [--namespaces 12] [--rows 20000] [--budgets 64,1024]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MIB = 1 << 20
WARM = "mem-warm"  # a small namespace queried first: kernels compiled, libraries loaded
TUNED_MALLOC = {"MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": "131072"}
MALLOCS = {"default": {}, "arena": {"MALLOC_ARENA_MAX": "2"}, "tuned": TUNED_MALLOC}
MALLOC_ENV = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _name(i: int) -> str:
    return f"mem-{i}"


async def build(folder: str, namespaces: int, rows: int, dim: int) -> None:
    from lagoon.config import Settings
    from lagoon.engine.database import Database
    from lagoon.index.text.corpus import corpus
    from lagoon.storage.factory import store_from_url

    store = store_from_url(folder)
    settings = Settings()
    db = Database(store, settings)
    texts = [d["text"][:200] for d in corpus(rows, seed=1)]
    for i in range(namespaces):
        if not Path(folder, "default", _name(i)).exists():
            await _build_one(db, store, settings, _name(i), i, (rows, dim), texts)
    await _build_one(db, store, settings, WARM, namespaces, (min(rows, 2_000), dim), texts)
    await db.close()


async def _build_one(
    db: Any, store: Any, settings: Any, name: str, seed: int, shape: tuple[int, int], texts: list[str]
) -> None:
    """One namespace of ``shape`` (rows, dim) in one indexed segment."""
    from lagoon.engine.indexer import index_namespace
    from lagoon.format.keys import NamespaceKeys

    rows, dim = shape
    vecs = np.random.default_rng(seed).standard_normal((rows, dim), dtype=np.float32)
    schema = {"text": {"type": "string", "full_text_search": True}, "tag": {"type": "int"}}
    for lo in range(0, rows, 5_000):
        batch = [
            {"id": j, "vector": vecs[j].tolist(), "text": texts[j], "tag": j % 10}
            for j in range(lo, min(rows, lo + 5_000))
        ]
        await db.write(name, {"upsert_rows": batch, "schema": schema, "distance_metric": "cosine_distance"})
    await index_namespace(store, NamespaceKeys.of("default", name), settings, db.components, force=True)
    print(f"built {name}", file=sys.stderr)


async def serve(folder: str, namespaces: int, rounds: int, budget: int, dim: int) -> dict[str, Any]:
    from lagoon.config import Settings
    from lagoon.engine.database import Database
    from lagoon.storage.factory import store_from_url

    store = store_from_url(folder)
    db = Database(store, Settings(cache={"memory_bytes": budget}))  # type: ignore[arg-type]
    q = np.random.default_rng(99).standard_normal(dim).astype(np.float32).tolist()
    bodies = [
        {"rank_by": ["vector", "ANN", q], "top_k": 10},
        {"rank_by": ["id", "asc"], "top_k": 1_000, "include_attributes": ["text", "tag"]},
    ]
    for body in bodies:
        await db.query(WARM, body)
    floor = _rss_bytes()
    per_round = []
    peak = floor
    for _ in range(rounds):
        t0 = time.perf_counter()
        for i in range(namespaces):
            for body in bodies:
                await db.query(_name(i), body)
            await asyncio.sleep(0)
            peak = max(peak, _rss_bytes())
        secs = time.perf_counter() - t0
        per_round.append({"rss": _rss_bytes(), "charged": db.segment_io.memory.used, "secs": secs})
    import lagoon

    out = {"budget": budget, "floor": floor, "peak": peak, "rounds": per_round, "lagoon": lagoon.__file__}
    out["warm_p50_us"] = await _warm_p50_us(db, _name(namespaces - 1), bodies[0])
    await db.close()
    return out


async def _warm_p50_us(db: Any, namespace: str, body: dict[str, Any], n: int = 300) -> float:
    """Median time of ``n`` warm queries on the namespace queried last (cached on both trees)."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        await db.query(namespace, body)
        times.append(time.perf_counter() - t0)
    return 1e6 * float(np.median(times))


def _row(label: str, r: dict[str, Any]) -> str:
    last = r["rounds"][-1]
    return (
        f"{label:>18}  floor {r['floor'] / MIB:7.1f}  peak {r['peak'] / MIB:7.1f}  "
        f"final {last['rss'] / MIB:7.1f}  above floor {(r['peak'] - r['floor']) / MIB:7.1f} MiB  "
        f"charged {last['charged'] / MIB:7.1f} MiB  warm ANN p50 {r['warm_p50_us']:6.0f} us  rounds "
        + " ".join(f"{x['rss'] / MIB:.0f}" for x in r["rounds"])
        + "  round ms "
        + " ".join(f"{1000 * x.get('secs', 0):.0f}" for x in r["rounds"])
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--namespaces", type=int, default=12)
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--budgets", default="64,100000", help="MiB, comma-separated (a huge one: unbounded)")
    ap.add_argument("--dir", default="", help="data folder (kept; built when missing)")
    ap.add_argument("--tree", default=str(ROOT), help="the source tree whose lagoon serves")
    ap.add_argument(
        "--malloc",
        default="default",
        help="allocator settings to compare: default,arena (MALLOC_ARENA_MAX=2),tuned (+ mmap threshold)",
    )
    ap.add_argument("--repeat", type=int, default=1, help="times to run every (budget, allocator) pair")
    ap.add_argument("--serve", type=int, default=0, help=argparse.SUPPRESS)  # (child: budget bytes)
    args = ap.parse_args()
    sys.path.insert(0, args.tree)
    if args.serve:
        result = asyncio.run(serve(args.dir, args.namespaces, args.rounds, args.serve, args.dim))
        print(json.dumps(result))
        return
    folder = args.dir or str(
        Path(tempfile.gettempdir()) / f"lagoon-memory-bench-{args.namespaces}x{args.rows}"
    )
    if not Path(folder, "default", WARM).exists():
        asyncio.run(build(folder, args.namespaces, args.rows, args.dim))
    base = {k: v for k, v in os.environ.items() if k not in MALLOC_ENV}
    base["PYTHONPATH"] = args.tree
    print(f"{args.namespaces} namespaces x {args.rows} rows ({args.dim}-d), tree {args.tree}")
    for _ in range(args.repeat):
        for mib in (int(b) for b in args.budgets.split(",")):
            for malloc in args.malloc.split(","):
                env = {**base, **MALLOCS[malloc]}
                cmd = [sys.executable, __file__, "--serve", str(mib * MIB), "--dir", folder]
                cmd += ["--tree", args.tree, "--namespaces", str(args.namespaces)]
                cmd += ["--rounds", str(args.rounds), "--dim", str(args.dim)]
                out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
                label = "unbounded" if mib >= 100_000 else f"{mib} MiB"
                result = json.loads(out.strip().splitlines()[-1])
                assert result["lagoon"].startswith(args.tree), result["lagoon"]  # (the tree asked for)
                print(_row(f"{label} {malloc}", result), flush=True)


if __name__ == "__main__":
    main()
