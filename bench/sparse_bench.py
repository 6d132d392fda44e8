"""SparseKNN top-k on one segment's sparse index vs a scipy CSR dot product over every row.

    .venv/bin/python bench/sparse_bench.py --n 100000 --nq 200

Synthetic learned-sparse data (SPLADE-like): a 30,522-dimension vocabulary with Zipf-distributed
dimension frequencies, 60-140 non-zero dimensions per document and 10-30 per query, f16 weights.
Builds the segment index (``build_sparse_index`` + ``encode_spv`` / ``open_spv``, the bytes a
segment stores), then times warm single queries, interleaved: Lagoon's ``SparseIndex.search``
with k and MaxScore pruning forced (the default prunes only queries whose dimensions hold 524,288
postings or more) and without k (every matching row scored), against the peer, scipy's
CSR matrix times the query vector over all rows plus ``argpartition``. Checks that all three
agree on the top k. Prints p50/p99, QPS and the ratios.

    .venv/bin/python bench/sparse_bench.py --wide-lists

Long postings instead: 1M rows over 40 dimensions (~170k postings each, Pareto weights), queries of
2, 5, 10 and 20 dimensions, MaxScore against scoring every posting (best of 3). This is where the
default threshold for MaxScore (``MAXSCORE_MIN_POSTINGS``) comes from.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from lagoon.format.segment import MAGIC_SPV, open_sections
from lagoon.index.sparse import build_sparse_index, encode_spv, open_spv
from lagoon.schema import AttrType

VOCAB = 30_522


def _vectors(rng: np.random.Generator, n: int, lo: int, hi: int) -> list[list[tuple[int, float]]]:
    p = 1.0 / np.arange(1, VOCAB + 1) ** 0.9
    p /= p.sum()
    perm = rng.permutation(VOCAB)
    out = []
    for _ in range(n):
        m = int(rng.integers(lo, hi))
        dims = np.unique(perm[rng.choice(VOCAB, size=m, p=p)])
        w = rng.gamma(2.0, 0.5, size=dims.size).astype(np.float16)
        out.append(list(zip(dims.tolist(), w.astype(float).tolist(), strict=True)))
    return out


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000, q))


def wide_lists(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, dims = 1_000_000, 40
    per = rng.integers(4, 12, size=n)
    row = np.repeat(np.arange(n), per)
    keys = rng.integers(0, dims, size=row.size).astype(np.uint32)
    order = np.lexsort((keys, row))
    keys, row = keys[order], row[order]
    keep = np.r_[True, (keys[1:] != keys[:-1]) | (row[1:] != row[:-1])]
    keys, row = keys[keep], row[keep]
    offsets = np.r_[0, np.cumsum(np.bincount(row, minlength=n))].astype(np.int32)
    weights = (rng.pareto(3.0, size=keys.size) * 0.3).astype(np.float16)
    column = pa.MapArray.from_arrays(pa.array(offsets), pa.array(keys), pa.array(weights))
    index = build_sparse_index(column, n)
    print(f"wide lists: {n} rows, {dims} dimensions, {index.n_postings} postings")
    for nd in (2, 5, 10, 20):
        qd = np.sort(rng.choice(dims, size=nd, replace=False)).astype(np.uint32)
        qw = rng.random(nd) + 0.1
        total = int(sum(index.offsets[d + 1] - index.offsets[d] for d in qd.tolist()))
        best = {}
        for name, threshold in (("maxscore", 0), ("all", 1 << 62)):
            ts = []
            for _ in range(3):
                t = time.perf_counter()
                index.search(qd, qw, None, 10, maxscore_min_postings=threshold)
                ts.append(time.perf_counter() - t)
            best[name] = min(ts)
        print(
            f"{nd:2d} dims, {total:8d} postings: MaxScore {best['maxscore'] * 1e3:7.1f} ms, "
            f"all {best['all'] * 1e3:7.1f} ms, ratio {best['maxscore'] / best['all']:.2f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--nq", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--wide-lists", action="store_true", help="long postings: MaxScore against scoring all")
    a = ap.parse_args()
    if a.wide_lists:
        wide_lists(a.seed)
        return
    rng = np.random.default_rng(a.seed)
    t = time.perf_counter()
    docs = _vectors(rng, a.n, 60, 140)
    queries = _vectors(rng, a.nq, 10, 30)
    print(
        f"data: {a.n} docs, {sum(len(d) for d in docs)} postings, {a.nq} queries ({time.perf_counter() - t:.1f} s)"
    )

    t = time.perf_counter()
    column = pa.array(docs, AttrType.parse("{}f16").arrow_type())
    data, summary = encode_spv("s", build_sparse_index(column, a.n))
    index = open_spv(open_sections(data, magic=MAGIC_SPV, what="spv.s"), a.n)
    print(
        f"lagoon: spv file {len(data) / 1e6:.1f} MB, {summary['blocks']} blocks, built and opened in {time.perf_counter() - t:.1f} s"
    )
    rows = np.repeat(np.arange(a.n), [len(d) for d in docs])
    cols = np.fromiter((dim for d in docs for dim, _ in d), dtype=np.int64)
    vals = np.fromiter((w for d in docs for _, w in d), dtype=np.float32)
    csr = sp.csr_matrix((vals, (rows, cols)), shape=(a.n, VOCAB))

    times: dict[str, list[float]] = {
        "lagoon top-k (MaxScore)": [],
        "lagoon all matches": [],
        "scipy CSR @ q": [],
    }
    agree = 0
    for q in queries:
        qd = np.asarray([d for d, _ in q], np.uint32)
        qw = np.asarray([w for _, w in q], np.float64)
        t0 = time.perf_counter()
        r1, s1 = index.search(qd, qw, None, a.k, maxscore_min_postings=0)
        top1 = r1[np.lexsort((r1, -s1))][: a.k]
        t1 = time.perf_counter()
        r2, s2 = index.search(qd, qw, None, None)
        top2 = r2[np.lexsort((r2, -s2))][: a.k]
        t2 = time.perf_counter()
        dense_q = np.zeros(VOCAB, np.float32)
        dense_q[qd] = qw
        scores = csr @ dense_q
        cand = np.argpartition(-scores, a.k)[: a.k]
        top3 = cand[np.lexsort((cand, -scores[cand]))]
        t3 = time.perf_counter()
        times["lagoon top-k (MaxScore)"].append(t1 - t0)
        times["lagoon all matches"].append(t2 - t1)
        times["scipy CSR @ q"].append(t3 - t2)
        agree += int(set(top1.tolist()) == set(top2.tolist()) == set(top3.tolist()))
    peer = float(np.median(times["scipy CSR @ q"]))
    for name, xs in times.items():
        print(
            f"{name:26s} p50 {_pct(xs, 50):7.2f} ms  p99 {_pct(xs, 99):7.2f} ms  QPS {1 / np.mean(xs):8.1f}  "
            f"p50 / scipy {np.median(xs) / peer:5.2f}"
        )
    print(f"top-{a.k} identical in all three: {agree}/{a.nq}")


if __name__ == "__main__":
    main()
