"""ANN benchmark: a Lagoon segment's IVF against faiss IndexIVFFlat and LanceDB (embedded), same data,
same run.

Data: N × 128 calibrated clustered vectors (tests/index/segment/data.py: 1,000 latent clusters, unit
norm, cosine) and held-out queries from the same distribution; ground truth = exact top-k.

Phases: (1) build each index (Lagoon: ``build_segment`` + ``SegmentReader.from_files``; faiss:
train + add; LanceDB: create table + IVF_FLAT index), (2) tune each system to the smallest probe
count whose recall@k is >= 0.95 on the queries (binary search over a sweep), (3) time warm single
queries, one at a time, 1 thread (numpy's OpenBLAS, faiss's OpenMP and Lance's CPU pool all limited
to one thread), **interleaved**: the systems take turns, one query each, so the noise of a shared
CPU hits every system alike; consecutive turns search different query vectors (system j runs
query i + j·nq/systems at turn i), so no system finds the clusters of its query in cache because
the system before it just scanned them (``--same-query``: the earlier order, query i on every
system in turn). Each query's CPU time (the calling thread's; LanceDB's worker
process's) is recorded next to its wall time: on a machine shared with other work, wall time
includes the time the process waited for a core, CPU time does not (the ratios to compare are
then the CPU ones). Lagoon is also timed at its default, self-calibrated adaptive
nprobe (what a query gets without tuning), unfiltered and with random filter masks (``--filters``;
recall against the exact filtered top-k; the mask is given as the filter layer's packed bits,
its evaluation is not timed).

Every IVF uses nlist = round(4·√N) and trains on the same budget (<= 100k points, 12 k-means
iterations); Lagoon and faiss even get the same sample and seed, hence the same clustering, so
their rows compare search paths only. LanceDB runs in subprocesses (started first) because its thread pool is fixed
at start: one builds with default threads, one serves queries with LANCE_CPU_THREADS=1 (latency is
measured inside it, without the pipe).

    .venv/bin/python bench/ann_bench.py [--n 1000000] [--nq 500] [--systems lagoon,faiss,lancedb]
        [--cache /tmp/ann_bench_cache]   # reuse built indexes and ground truth across runs
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import json
import os
import pickle
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.index.segment.data import exact_topk, queries, vectors  # noqa: E402

DIM = 128
DATA_LABEL = "calibrated clustered vectors"
TARGET = 0.95
SWEEP = [4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 160, 192, 224, 256, 320, 384, 512, 768, 1024]
WARMUP = 50

Search = Callable[[int], tuple[np.ndarray, float, float]]  # query index -> (ids, wall ms, CPU ms)


# --------------------------------------------------------------------------------------------- threads


def _openblas() -> Any:
    import numpy

    for lib in glob.glob(str(Path(numpy.__file__).parent.parent / "numpy.libs" / "libscipy_openblas*.so")):
        handle = ctypes.CDLL(lib)
        for name in ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads"):
            if hasattr(handle, name):
                return getattr(handle, name)
    print("warning: cannot limit numpy's BLAS threads", file=sys.stderr)
    return None


_SET_BLAS = _openblas()


def threads(n: int) -> None:
    """Limit numpy's BLAS and faiss's OpenMP (this thread) to ``n`` threads."""
    import faiss

    if _SET_BLAS is not None:
        _SET_BLAS(ctypes.c_int(n))
    faiss.omp_set_num_threads(n)


# --------------------------------------------------------------------------------------------- helpers


def recall(found: list[np.ndarray], truth: np.ndarray) -> float:
    k = truth.shape[1]
    hits = sum(len(np.intersect1d(np.asarray(f)[:k], t)) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


def tune(make: Callable[[int], Search], nq: int, truth: np.ndarray, limit: int, log: list[str]) -> int:
    """Smallest sweep value whose recall is >= TARGET (binary search over the sweep)."""
    values = [v for v in SWEEP if v < limit] + [limit]
    lo, hi, best = 0, len(values) - 1, values[-1]
    while lo <= hi:
        mid = (lo + hi) // 2
        search = make(values[mid])
        r = recall([search(i)[0] for i in range(nq)], truth)
        log.append(f"    nprobe {values[mid]:5d}: recall {r:.4f}")
        if r >= TARGET:
            best, hi = values[mid], mid - 1
        else:
            lo = mid + 1
    return best


def timed(
    searches: dict[str, Search], nq: int, *, same_query: bool = False
) -> dict[str, tuple[list[np.ndarray], np.ndarray, np.ndarray]]:
    """Warm up, then interleave: at step i the j-th search runs query (i + j·nq/len) mod nq, so
    every search runs every query once, one after another, and no two consecutive searches share
    a query vector (``same_query``: step i runs query i on every search). A search right after
    another of the same vector finds that vector's clusters in the CPU caches: the tuned Lagoon
    row, run after the default one, measured 0.70-0.83x its CPU time in-process, and a filtered
    query after the unfiltered one 0.93x where it costs 1.2x on its own. Returns per search
    (ids by query, wall ms, CPU ms)."""
    shift = 0 if same_query else max(1, nq // max(1, len(searches)))

    def query_of(step: int, j: int) -> int:
        return (step + j * shift) % nq

    for i in range(min(WARMUP, nq)):
        for j, s in enumerate(searches.values()):
            s(query_of(i, j))
    found: dict[str, list[np.ndarray]] = {name: [np.empty(0, np.int64)] * nq for name in searches}
    lat: dict[str, list[float]] = {name: [] for name in searches}
    cpu: dict[str, list[float]] = {name: [] for name in searches}
    for i in range(nq):
        for j, (name, s) in enumerate(searches.items()):
            q = query_of(i, j)
            ids, ms, cpu_ms = s(q)
            found[name][q] = ids
            lat[name].append(ms)
            cpu[name].append(cpu_ms)
    return {name: (found[name], np.array(lat[name]), np.array(cpu[name])) for name in searches}


def clock(fn: Callable[[], np.ndarray]) -> tuple[np.ndarray, float, float]:
    """``fn()`` and its wall and CPU time in ms. CPU time is the calling thread's: in-process
    searches run on it (faiss and Lagoon with one OpenMP thread), and the process's total would
    also count other threads (an idle OpenMP pool spinning) for as long as the query waits."""
    c0, t0 = time.thread_time(), time.perf_counter()
    ids = fn()
    return ids, (time.perf_counter() - t0) * 1000.0, (time.thread_time() - c0) * 1000.0


def cached(cache: Path | None, name: str, build: Callable[[], tuple[Any, float]]) -> tuple[Any, float]:
    """``build()`` -> (value, seconds), or both from ``cache/name`` when an earlier run with the
    same ``--cache`` stored them (the reported build time is then the stored one)."""
    if cache is None:
        return build()
    path = cache / name
    if path.exists():
        with path.open("rb") as f:
            value, seconds = pickle.load(f)
        return value, seconds
    value, seconds = build()
    cache.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        pickle.dump((value, seconds), f, protocol=pickle.HIGHEST_PROTOCOL)
    return value, seconds


# --------------------------------------------------------------------------------------------- systems


class System:
    name = ""
    build_s = 0.0
    index_bytes = 0
    nlist = 0

    def search(self, nprobe: int | None) -> Search:
        raise NotImplementedError

    def close(self) -> None:
        pass


class Lagoon(System):
    name = "lagoon"

    def __init__(self, base: np.ndarray, qs: np.ndarray, k: int, cache: Path | None = None) -> None:
        import pyarrow as pa

        from lagoon.format.wal import OP_COLUMN
        from lagoon.index.segment.build import SEQ_COLUMN, build_segment, new_segment_id
        from lagoon.index.segment.read import SegmentReader
        from lagoon.index.sources.segment import SegmentSource
        from lagoon.schema import Schema, apply_schema_update

        n = base.shape[0]
        schema = apply_schema_update(
            Schema(distance_metric="cosine_distance"), {"id": "uint", "v": f"[{DIM}]f32"}
        )
        table = pa.table(
            {
                "id": pa.array(np.arange(n, dtype=np.uint64)),
                SEQ_COLUMN: pa.array(np.ones(n, np.uint64)),
                OP_COLUMN: pa.array(np.zeros(n, np.uint8)),
                "v": pa.FixedSizeListArray.from_arrays(pa.array(base.reshape(-1)), DIM),
            }
        )
        threads(2)

        def build() -> tuple[Any, float]:
            t0 = time.perf_counter()
            seg = build_segment(
                table, schema, segment_id=new_segment_id(0, random.Random(0)), level=0, seq_from=1, seq_to=1
            )
            return seg, time.perf_counter() - t0

        built, self.build_s = cached(cache, "lagoon-segment.pickle", build)
        t0 = time.perf_counter()
        reader = SegmentReader.from_files(built.ref, built.files, schema)
        load_s = time.perf_counter() - t0
        self.index_bytes = built.ref.files["vec.v"]["size"]
        self.info = built.ref.info["files"]["vec.v"]
        self.nlist = self.info["clusters"]
        print(f"  lagoon: build {self.build_s:.1f} s, open {load_s:.2f} s, {self.info}", flush=True)
        self.src = SegmentSource(reader, np.ones(n, bool))
        self.qs, self.k = qs, k

    def search(self, nprobe: int | None, mask: np.ndarray | None = None) -> Search:
        from lagoon.index.bits import Bits

        # The filter as the filter layer hands it to the vector search (packed bits, counted);
        # like the mask, built before the timed queries.
        cand = None if mask is None else Bits.from_mask(mask)

        def run(i: int) -> tuple[np.ndarray, float]:
            q = self.qs[i]
            return clock(
                lambda: self.src.vector_topk(
                    "v", q, "cosine_distance", self.k, cand, approximate=True, nprobe=nprobe
                )[0]
            )

        return run


class Faiss(System):
    name = "faiss IndexIVFFlat"

    def __init__(self, base: np.ndarray, qs: np.ndarray, k: int, cache: Path | None = None) -> None:
        import faiss

        n = base.shape[0]
        self.nlist = round(4 * np.sqrt(n))
        threads(2)

        def build() -> tuple[bytes, float]:
            t0 = time.perf_counter()
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(DIM), DIM, self.nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.niter = 12
            index.cp.seed = 1234
            index.cp.min_points_per_centroid = 1
            index.cp.max_points_per_centroid = 1 << 30
            rng = np.random.default_rng(1234)  # the sample Lagoon's builder draws
            sample = base[np.sort(rng.choice(n, min(n, 64 * self.nlist, 100_000), replace=False))]
            index.train(sample)
            index.add(base)
            return bytes(faiss.serialize_index(index)), time.perf_counter() - t0

        data, self.build_s = cached(cache, "faiss-ivfflat.pickle", build)
        index = faiss.deserialize_index(np.frombuffer(data, np.uint8))
        self.index_bytes = int(faiss.serialize_index(index).nbytes)
        print(f"  faiss: build {self.build_s:.1f} s, nlist {self.nlist}", flush=True)
        self.index, self.qs, self.k = index, qs, k

    def search(self, nprobe: int | None) -> Search:
        import faiss

        params = faiss.SearchParametersIVF(nprobe=nprobe or 1)

        def run(i: int) -> tuple[np.ndarray, float]:
            q = self.qs[i : i + 1]
            return clock(lambda: self.index.search(q, self.k, params=params)[1][0])

        return run


class Lance(System):
    """LanceDB in two subprocesses: a builder (default threads) and a query server (1 thread)."""

    name = "lancedb IVF_FLAT"

    def __init__(self, workdir: Path, base: np.ndarray, qs: np.ndarray, k: int) -> None:
        np.save(workdir / "base.npy", base)
        np.save(workdir / "queries.npy", qs)
        self.nlist = round(4 * np.sqrt(base.shape[0]))
        cmd = [sys.executable, __file__, "--lance-worker", str(workdir), "--k", str(k)]
        out = subprocess.run([*cmd, "build"], check=True, capture_output=True, text=True)
        meta = json.loads(out.stdout.strip().splitlines()[-1])
        self.build_s, self.index_bytes = meta["build_s"], meta["index_bytes"]
        print(f"  lancedb: build {self.build_s:.1f} s", flush=True)
        env = {**os.environ, "LANCE_CPU_THREADS": "1"}
        self.proc = subprocess.Popen(
            [*cmd, "serve"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    def search(self, nprobe: int | None) -> Search:
        def run(i: int) -> tuple[np.ndarray, float]:
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.proc.stdin.write(json.dumps({"i": i, "nprobe": nprobe}) + "\n")
            self.proc.stdin.flush()
            reply = json.loads(self.proc.stdout.readline())
            return np.array(reply["ids"], np.int64), float(reply["ms"]), float(reply["cpu_ms"])

        return run

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def lance_worker(workdir: Path, mode: str, k: int) -> None:
    import lancedb
    import pyarrow as pa
    from lancedb.index import IvfFlat

    db = lancedb.connect(str(workdir / "lance"))
    if mode == "build":
        base = np.load(workdir / "base.npy")
        n = base.shape[0]
        nlist = round(4 * np.sqrt(n))
        table = pa.table(
            {
                "id": pa.array(np.arange(n, dtype=np.int64)),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(base.reshape(-1)), base.shape[1]),
            }
        )
        t0 = time.perf_counter()
        tbl = db.create_table("bench", table, mode="overwrite")
        tbl.create_index(
            "vector",
            config=IvfFlat(
                distance_type="cosine",
                num_partitions=nlist,
                max_iterations=12,
                sample_rate=max(1, min(n, 100_000) // nlist),
            ),
        )
        build_s = time.perf_counter() - t0
        index_bytes = sum(
            p.stat().st_size for p in (workdir / "lance").rglob("*") if p.is_file() and "_indices" in p.parts
        )
        print(json.dumps({"build_s": build_s, "index_bytes": index_bytes}))
        return
    tbl = db.open_table("bench")
    qs = np.load(workdir / "queries.npy")
    for line in sys.stdin:
        req = json.loads(line)
        q = qs[req["i"]]
        c0, t0 = time.process_time(), time.perf_counter()
        res = (
            tbl.search(q, vector_column_name="vector")
            .distance_type("cosine")
            .nprobes(req["nprobe"])
            .limit(k)
            .select(["id", "_distance"])
            .to_arrow()
        )
        ms, cpu_ms = (time.perf_counter() - t0) * 1000.0, (time.process_time() - c0) * 1000.0
        print(json.dumps({"ids": res.column("id").to_pylist(), "ms": ms, "cpu_ms": cpu_ms}), flush=True)


# --------------------------------------------------------------------------------------------- main


def report(rows: list[dict[str, Any]], n: int, nq: int, k: int, *, same_query: bool = False) -> str:
    rows = sorted(
        rows, key=lambda r: (not r["system"].startswith("lagoon"), "filter" in r["system"], r["system"])
    )
    ref = next((r for r in rows if r["system"] == "lagoon (tuned)"), rows[0])
    unfiltered = next((r for r in rows if r["system"] == "lagoon (adaptive)"), None)
    lines = [
        f"ANN, {n:,} x {DIM} {DATA_LABEL}, cosine, {nq} held-out queries, recall@{k}, "
        "warm single queries, 1 thread, interleaved "
        + ("(query i on every system in turn)" if same_query else "(consecutive turns on different queries)"),
        "",
        "| system | build s | index MB | nprobe | recall@10 | p50 ms | p99 ms | QPS | CPU p50 ms "
        "| p50 / Lagoon tuned | p50 / Lagoon unfiltered default (wall, CPU) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        vs = ""
        if unfiltered is not None and r["system"].startswith("lagoon (adaptive)"):
            vs = (
                f"{r['p50_ms'] / unfiltered['p50_ms']:.2f}x, "
                f"{r['cpu_p50_ms'] / max(unfiltered['cpu_p50_ms'], 1e-9):.2f}x"
            )
        lines.append(
            f"| {r['system']} | {r['build_s']:.1f} | {r['index_bytes'] / 1e6:.1f} | {r['nprobe']} "
            f"| {r['recall']:.4f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['qps']:.0f} "
            f"| {r['cpu_p50_ms']:.2f} | {r['p50_ms'] / ref['p50_ms']:.2f}x | {vs} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--nq", type=int, default=500)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--systems", default="lancedb,lagoon,faiss")
    ap.add_argument(
        "--filters", default="0.5,0.1,0.01", help="also time Lagoon with random masks of these selectivities"
    )
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    ap.add_argument(
        "--data",
        type=Path,
        default=None,
        help="base vectors from a .npy file (e.g. bench/data/embeddings-100000.npy from bench/embed_corpus.py) "
        "instead of the calibrated synthetic set; --n and the dimension come from the file",
    )
    ap.add_argument(
        "--queries-file", type=Path, default=None, help="held-out query vectors (.npy) for --data"
    )
    ap.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="keep the built Lagoon segment, faiss index and ground truth here and reuse them in later "
        "runs with the same data (a 1M build takes minutes); delete the folder after a build change",
    )
    ap.add_argument(
        "--same-query",
        action="store_true",
        help="interleave query i on every system before query i + 1 (the earlier order: a search "
        "then finds the previous search's clusters in cache)",
    )
    ap.add_argument("--lance-worker", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("mode", nargs="?", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.lance_worker:
        lance_worker(args.lance_worker, args.mode, args.k)
        return
    t0 = time.perf_counter()
    global DIM, DATA_LABEL
    if args.data is not None:
        if args.queries_file is None:
            raise SystemExit("--data needs --queries-file")
        base = np.ascontiguousarray(np.load(args.data), dtype=np.float32)
        qs = np.ascontiguousarray(np.load(args.queries_file), dtype=np.float32)[: args.nq]
        args.n, DIM = base.shape
        args.nq = qs.shape[0]
        DATA_LABEL = f"vectors from {args.data.name}"
    else:
        base = vectors(args.n, DIM)
        qs = queries(args.nq, DIM)
    threads(2)
    source = "calibrated" if args.data is None else args.data.stem
    cache = None if args.cache is None else args.cache / f"{source}-n{args.n}-d{DIM}-q{args.nq}-k{args.k}"
    truth, _ = cached(cache, "truth.pickle", lambda: (exact_topk(base, qs, args.k), 0.0))
    print(f"data + ground truth: {time.perf_counter() - t0:.1f} s", flush=True)
    with tempfile.TemporaryDirectory(prefix="ann_bench_") as tmp:
        systems: list[System] = []
        for name in args.systems.split(","):
            if name == "lagoon":
                systems.append(Lagoon(base, qs, args.k, cache))
            elif name == "faiss":
                systems.append(Faiss(base, qs, args.k, cache))
            elif name == "lancedb":
                systems.append(Lance(Path(tmp), base, qs, args.k))
            else:
                raise SystemExit(f"unknown system {name!r}")
        threads(1)
        searches: dict[str, Search] = {}
        probes: dict[str, str] = {}
        truths: dict[str, np.ndarray] = {}
        for s in systems:
            log: list[str] = []
            nprobe = tune(s.search, args.nq, truth, s.nlist, log)
            print(f"{s.name}: tuned nprobe {nprobe}\n" + "\n".join(log), flush=True)
            if isinstance(s, Lagoon):
                searches["lagoon (adaptive)"] = s.search(None)
                probes["lagoon (adaptive)"] = f"{s.info['nprobe']} (auto)"
                searches["lagoon (tuned)"] = s.search(nprobe)
                probes["lagoon (tuned)"] = str(nprobe)
            else:
                searches[s.name] = s.search(nprobe)
                probes[s.name] = str(nprobe)
        for frac in [float(x) for x in args.filters.split(",") if x]:
            lagoon = next((s for s in systems if isinstance(s, Lagoon)), None)
            if lagoon is None:
                break
            mask = np.random.default_rng(7).random(args.n) < frac
            label = f"lagoon (adaptive), filter {frac:.0%}"
            searches[label] = lagoon.search(None, mask)
            probes[label] = "auto"
            truths[label], _ = cached(
                cache, f"truth-{frac}.pickle", lambda mask=mask: (exact_topk(base, qs, args.k, mask), 0.0)
            )
        results = timed(searches, args.nq, same_query=args.same_query)
        by_name = {s.name: s for s in systems}
        rows = []
        for label, (found, lat, cpu) in results.items():
            s = by_name["lagoon" if label.startswith("lagoon") else label]
            rows.append(
                {
                    "system": label,
                    "build_s": round(s.build_s, 1),
                    "index_bytes": s.index_bytes,
                    "nprobe": probes[label],
                    "recall": round(recall(found, truths.get(label, truth)), 4),
                    "p50_ms": round(float(np.percentile(lat, 50)), 3),
                    "p99_ms": round(float(np.percentile(lat, 99)), 3),
                    "cpu_p50_ms": round(float(np.percentile(cpu, 50)), 3),
                    "qps": round(1000.0 / float(np.mean(lat)), 1),
                }
            )
        for s in systems:
            s.close()
    print(report(rows, args.n, args.nq, args.k, same_query=args.same_query))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
