"""ANN recall at the default, over random segment layouts: does the namespace's target hold?

Each run builds one namespace through the real engine with a random layout (tests/index/vector/layouts.py:
one big segment, many tiny ones, tiered with compaction, random; a random unindexed tail; heavy
deletes and updates; or data written in an order correlated with the vectors), then sends the
held-out queries as default ANN queries (``Database.query``, eventual consistency, top-10),
unfiltered and with filters keeping 50 / 10 / 1 % of the rows, and compares with the exact top-10
over the live rows (numpy, independent of the engine). Next to it, faiss ``IndexIVFFlat`` over the
same live vectors (nlist 4·√N, same k-means budget), tuned to the smallest nprobe whose recall is at
least Lagoon's unfiltered recall of that run, one thread, timed on the same queries interleaved
with nothing else (Lagoon's p50 is the full engine path: parsing, snapshot, planning, every
segment and the tail, row shaping).

    .venv/bin/python bench/recall_bench.py [--runs 10] [--n 100000] [--dim 128] [--nq 300]
        [--metric cosine_distance|euclidean_squared] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.ann_bench import threads  # noqa: E402
from tests.index.segment.data import queries, vectors  # noqa: E402
from tests.index.vector import layouts as L  # noqa: E402

SWEEP = [1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 160, 192, 256, 320, 384, 512, 768, 1024]
PLANS: list[bool] = []  # per planned ANN query, in order: did its plan probe an IVF part?


def record_plans() -> None:
    """Note, for every planned ANN query, whether it probed at least one IVF part or was
    answered by exact scans alone (the planner's choice when scanning is cheaper; recall 1.0)."""
    from lagoon.index.sources import composite

    plan = composite.plan_and_search

    def recorded(*args: Any, **kwargs: Any) -> Any:
        results, info = plan(*args, **kwargs)
        PLANS.append(bool(info.get("probes")))
        return results, info

    composite.plan_and_search = recorded


def faiss_at(base: np.ndarray, live: np.ndarray, qs: np.ndarray, metric: str, want: float) -> dict[str, Any]:
    """faiss IVFFlat over the live vectors at the smallest nprobe reaching ``want``."""
    import faiss

    rows = np.flatnonzero(live)
    x = np.ascontiguousarray(base[rows])
    n, d = x.shape
    nlist = round(4 * np.sqrt(n))
    cos = metric == "cosine_distance"
    quant = faiss.IndexFlatIP(d) if cos else faiss.IndexFlatL2(d)
    index = faiss.IndexIVFFlat(quant, d, nlist, faiss.METRIC_INNER_PRODUCT if cos else faiss.METRIC_L2)
    index.cp.niter, index.cp.seed = 12, 1234
    index.cp.min_points_per_centroid, index.cp.max_points_per_centroid = 1, 1 << 30
    threads(2)
    rng = np.random.default_rng(1234)
    index.train(x[np.sort(rng.choice(n, min(n, 64 * nlist, 100_000), replace=False))])
    index.add(x)
    threads(1)
    truth = L.exact_topk(base, qs, 10, live, metric)
    best: dict[str, Any] = {}
    for p in [v for v in SWEEP if v < nlist] + [nlist]:
        params = faiss.SearchParametersIVF(nprobe=p)
        lat, rec = [], []
        for q, t in zip(qs, truth, strict=True):
            t0 = time.perf_counter()
            _, ids = index.search(q[None, :], 10, params=params)
            lat.append((time.perf_counter() - t0) * 1000)
            rec.append(len(set(rows[ids[0][ids[0] >= 0]].tolist()) & set(t.tolist())) / 10)
        best = {"nprobe": p, "recall": float(np.mean(rec)), "p50_ms": float(np.median(lat))}
        if best["recall"] >= want:
            break
    return best


async def one_run(seed: int, base: np.ndarray, qs: np.ndarray, metric: str) -> dict[str, Any]:
    layout = L.random_layout(random.Random(seed), base.shape[0])
    built = await L.build(layout, base, metric)
    out: dict[str, Any] = {"run": seed, "layout": layout.describe, "shape": built.summary()}
    try:
        for name, flt in L.FILTERS.items():
            mask = L.filter_mask(name, built.attrs)
            await L.measure(built, base, qs[:20], flt, mask, metric=metric, timed=True)  # warm
            PLANS.clear()
            m = await L.measure(built, base, qs, flt, mask, metric=metric, timed=True)
            out[name] = {"recall": round(m.recall, 4), "p50_ms": round(m.p50_ms, 3), **probed(m.per_query)}
    finally:
        await built.db.close()
    out["faiss"] = faiss_at(base, built.live, qs, metric, out["none"]["recall"])
    return out


def probed(per_query: list[float]) -> dict[str, Any]:
    """How many of the queries just measured probed an IVF part, and their mean recall (None
    when none did, or when the plans recorded do not line up with the queries)."""
    if len(PLANS) != len(per_query):
        return {"probed": None, "recall_probed": None}
    got = [r for r, p in zip(per_query, PLANS, strict=True) if p]
    return {"probed": len(got), "recall_probed": round(float(np.mean(got)), 4) if got else None}


def table(rows: list[dict[str, Any]], n: int, dim: int, metric: str, nq: int) -> str:
    lines = [
        f"ANN recall@10 at the default target (0.95), {n:,} x {dim} benchmark vectors, {metric}, "
        f"{nq} held-out queries, random segment layouts",
        "",
        "| run | layout | segments | recall | 50 % | 10 % | 1 % | Lagoon p50 ms | faiss p50 ms (nprobe, recall) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        f = r["faiss"]
        lines.append(
            f"| {r['run']} | {r['layout']} | {r['shape']} | {r['none']['recall']:.4f} | "
            f"{r['50%']['recall']:.4f} | {r['10%']['recall']:.4f} | {r['1%']['recall']:.4f} | "
            f"{r['none']['p50_ms']:.2f} | {f['p50_ms']:.2f} ({f['nprobe']}, {f['recall']:.4f}) |"
        )
    lines.append("")
    for key in ("none", "50%", "10%", "1%"):
        vals = [r[key]["recall"] for r in rows]
        lines.append(
            f"{key:>5}: min {min(vals):.4f}  mean {np.mean(vals):.4f}  max {max(vals):.4f}"
            f"  {probed_summary(rows, key)}"
            + (
                ""
                if key == "none"
                else f"  (p50 ms median {np.median([r[key]['p50_ms'] for r in rows]):.2f})"
            )
        )
    return "\n".join(lines)


def probed_summary(rows: list[dict[str, Any]], key: str) -> str:
    """Mean recall over the queries that probed an IVF part (weighted by query), the criterion's
    'mean <= target + 0.02' population; exact-only answers are counted apart."""
    pairs = [(r[key]["probed"], r[key]["recall_probed"]) for r in rows if r[key].get("probed")]
    total = sum(int(r[key].get("probed") or 0) for r in rows)
    if not pairs:
        return "| probed queries: none (all answered by exact scans)"
    mean = sum(n * rec for n, rec in pairs) / sum(n for n, _ in pairs)
    return f"| probed queries: {total}, their mean {mean:.4f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--first", type=int, default=0, help="seed of the first run")
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--nq", type=int, default=300)
    ap.add_argument("--metric", default="cosine_distance", choices=["cosine_distance", "euclidean_squared"])
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    base = vectors(args.n, args.dim)
    qs = queries(args.nq, args.dim)
    threads(1)
    record_plans()
    rows = []
    for seed in range(args.first, args.first + args.runs):
        t0 = time.perf_counter()
        r = asyncio.run(one_run(seed, base, qs, args.metric))
        print(f"run {seed} ({time.perf_counter() - t0:.0f} s): {json.dumps(r)}", flush=True)
        rows.append(r)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
    print(table(rows, args.n, args.dim, args.metric, args.nq))


if __name__ == "__main__":
    main()
