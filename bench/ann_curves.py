"""Recall vs latency curves: Lagoon (embedded API), faiss IVF, Chroma (HNSW) and LanceDB, same data.

Each system answers the same held-out queries at a sweep of its own knob — Lagoon: the namespace's
``ann_recall_target`` (the planner picks the probes), faiss and LanceDB: nprobe, Chroma: HNSW
``ef_search`` — and every point reports recall@10 against the exact top-10 and the p50 of warm
single queries (one thread where the library allows it: numpy's BLAS and faiss's OpenMP are
limited to one; Chroma's and Lance's Rust pools are what they are, Lance serves with
LANCE_CPU_THREADS=1). Systems are measured one after the other (a curve each), so on a shared
CPU read the curves' shapes and large gaps; bench/ann_bench.py gives interleaved ratios.

Lagoon runs the full embedded path (``lagoon.open("memory://")``, one segment built by the
indexer, then ``Namespace.query`` with eventual consistency): parsing, snapshot, planning,
search, row shaping and the hop to the engine's thread. faiss and LanceDB use Lagoon's nlist rule
(4·√N) and k-means budget.

    .venv/bin/python bench/ann_curves.py [--n 100000] [--nq 300] [--png docs/img/ann-recall-latency-100k.png]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import bench.ann_bench as ab  # noqa: E402
from tests.index.segment.data import exact_topk, queries, vectors  # noqa: E402

TARGETS = [0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.99]
NPROBE_FRACTIONS = [0.005, 0.01, 0.02, 0.04, 0.06, 0.1, 0.15, 0.25]
EFS = [10, 16, 24, 32, 48, 64, 96, 128, 192, 256]


class LagoonEmbedded:
    name = "Lagoon (embedded API)"

    def __init__(self, base: np.ndarray, qs: np.ndarray, k: int) -> None:
        import lagoon
        from lagoon.engine.compactor import compact_namespace
        from lagoon.engine.components import Components
        from lagoon.engine.indexer import index_namespace
        from lagoon.format.keys import NamespaceKeys

        self.db = lagoon.open("memory://", indexer=False)
        self.ns = self.db.namespace("bench")
        n, d = base.shape
        t0 = time.perf_counter()
        for lo in range(0, n, 10_000):
            body: dict[str, Any] = {
                "upsert_columns": {"id": list(range(lo, min(n, lo + 10_000))), "v": base[lo : lo + 10_000]}
            }
            if lo == 0:
                body |= {"distance_metric": "cosine_distance", "schema": {"v": f"[{d}]f32"}}
            self.ns.write(**body)
        inner = self.db._db
        keys = NamespaceKeys.of("default", "bench")
        comps = Components()
        self.db._run(index_namespace(inner.store, keys, inner.settings, comps, force=True))
        self.db._run(compact_namespace(inner.store, keys, inner.settings, comps, full=True))
        self.build_s = time.perf_counter() - t0
        self.qs, self.k = qs, k
        self.ns.query(rank_by=("v", "ANN", qs[0]), top_k=k)  # open the segment
        time.sleep(1.0)

    def knob(self, target: float) -> None:
        self.ns.update_metadata(ann_recall_target=target)
        self.ns.query(rank_by=("v", "ANN", self.qs[0]), top_k=self.k)  # see the new setting

    def search(self, i: int) -> tuple[np.ndarray, float]:
        q = self.qs[i]
        t0 = time.perf_counter()
        res = self.ns.query(rank_by=("v", "ANN", q), top_k=self.k, consistency={"level": "eventual"})
        ms = (time.perf_counter() - t0) * 1000
        return np.array([r["id"] for r in res["rows"]], np.int64), ms

    def close(self) -> None:
        self.db.close()


class Chroma:
    name = "Chroma (HNSW)"

    def __init__(self, base: np.ndarray, qs: np.ndarray, k: int) -> None:
        import chromadb

        self.client = chromadb.EphemeralClient()
        self.col = self.client.create_collection(
            "bench",
            configuration={"hnsw": {"space": "cosine", "ef_construction": 100, "max_neighbors": 16}},
        )
        t0 = time.perf_counter()
        step = self.client.get_max_batch_size()
        for lo in range(0, base.shape[0], step):
            hi = min(base.shape[0], lo + step)
            self.col.add(ids=[str(i) for i in range(lo, hi)], embeddings=base[lo:hi])
        self.build_s = time.perf_counter() - t0
        self.qs, self.k = qs, k

    def knob(self, ef: int) -> None:
        self.col.modify(configuration={"hnsw": {"ef_search": int(ef)}})

    def search(self, i: int) -> tuple[np.ndarray, float]:
        t0 = time.perf_counter()
        res = self.col.query(query_embeddings=self.qs[i : i + 1], n_results=self.k, include=[])
        ms = (time.perf_counter() - t0) * 1000
        return np.array([int(x) for x in res["ids"][0]], np.int64), ms

    def close(self) -> None:
        pass


class Knobbed:
    """An ann_bench system (faiss, LanceDB) whose knob is nprobe."""

    def __init__(self, system: Any, name: str) -> None:
        self.s, self.name = system, name
        self.build_s = system.build_s
        self._search = system.search(1)

    def knob(self, nprobe: int) -> None:
        self._search = self.s.search(int(nprobe))

    def search(self, i: int) -> tuple[np.ndarray, float]:
        ids, ms, _ = self._search(i)
        return np.asarray(ids, np.int64), ms

    def close(self) -> None:
        self.s.close()


def curve(system: Any, knobs: list[Any], nq: int, truth: np.ndarray) -> list[dict[str, Any]]:
    out = []
    for kv in knobs:
        system.knob(kv)
        for i in range(min(20, nq)):  # warm
            system.search(i)
        found, lat = [], []
        for i in range(nq):
            ids, ms = system.search(i)
            found.append(ids)
            lat.append(ms)
        out.append(
            {
                "knob": kv,
                "recall": round(ab.recall(found, truth), 4),
                "p50_ms": round(float(np.median(lat)), 3),
            }
        )
        print(
            f"  {system.name} {kv}: recall {out[-1]['recall']:.4f} p50 {out[-1]['p50_ms']:.3f} ms", flush=True
        )
    return out


def plot(curves: dict[str, list[dict[str, Any]]], title: str, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    for name, pts in curves.items():
        pts = sorted(pts, key=lambda p: p["recall"])
        ax.plot([p["recall"] for p in pts], [p["p50_ms"] for p in pts], marker="o", label=name)
    ax.axvline(0.95, color="grey", lw=0.8, ls="--")
    ax.set_yscale("log")
    ax.set_xlabel("recall@10")
    ax.set_ylabel("p50 latency, ms (log)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    print(f"wrote {png}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--nq", type=int, default=300)
    ap.add_argument("--systems", default="lagoon,faiss,chroma,lancedb")
    ap.add_argument("--png", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    ab.DIM = 128
    base, qs = vectors(args.n, 128), queries(args.nq, 128)
    ab.threads(2)
    truth = exact_topk(base, qs, 10)
    nlist = round(4 * np.sqrt(args.n))
    probes = sorted({max(1, round(f * nlist)) for f in NPROBE_FRACTIONS})
    curves: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="ann_curves_") as tmp:
        systems: list[tuple[Any, list[Any]]] = []
        for name in args.systems.split(","):
            print(f"building {name} ...", flush=True)
            if name == "lagoon":
                systems.append((LagoonEmbedded(base, qs, 10), TARGETS))
            elif name == "faiss":
                systems.append((Knobbed(ab.Faiss(base, qs, 10), "faiss IVFFlat"), probes))
            elif name == "lancedb":
                systems.append((Knobbed(ab.Lance(Path(tmp), base, qs, 10), "LanceDB IVF_FLAT"), probes))
            elif name == "chroma":
                systems.append((Chroma(base, qs, 10), EFS))
            else:
                raise SystemExit(f"unknown system {name!r}")
        ab.threads(1)
        for s, knobs in systems:
            curves[s.name] = curve(s, knobs, args.nq, truth)
        for s, _ in systems:
            s.close()
    print("\n| system | knob | recall@10 | p50 ms |\n|---|---|---|---|")
    for name, pts in curves.items():
        for p in pts:
            print(f"| {name} | {p['knob']} | {p['recall']:.4f} | {p['p50_ms']:.3f} |")
    if args.json:
        args.json.write_text(json.dumps(curves, indent=1))
    if args.png:
        plot(curves, f"ANN recall vs p50, {args.n:,} x 128 benchmark vectors, warm single queries", args.png)


if __name__ == "__main__":
    main()
