"""Exhaustive-scan query latency: Lagoon's engine next to the peers, in the same process and run.

- vector top-10 on N x 128 calibrated vectors (bench/benchdata.py), all in the unindexed WAL tail,
  compared with numpy brute force (X @ q + argpartition over the same float32 matrix);
- BM25 top-10 on N short real-text documents (lagoon.index.text.corpus), all in the WAL tail,
  compared with bm25s (and tantivy when the `bench` dependency group is installed).

Lagoon is measured through the embedded engine (query parsing, snapshot, execution, row
shaping), warm, one query at a time. Reports p50/p99 and the ratio Lagoon / peer.

    .venv/bin/python bench/query_bench.py [--n 100000] [--queries 200]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lagoon
from bench.benchdata import queries as bench_queries
from bench.benchdata import vectors as bench_vectors
from lagoon.index.text.corpus import corpus, sample_queries


def pct(samples: list[float], p: float) -> float:
    s = sorted(samples)
    return 1000 * s[min(len(s) - 1, int(p * len(s)))]


def timed(fn: Any, args: list[Any]) -> list[float]:
    out = []
    for a in args:
        t0 = time.perf_counter()
        fn(a)
        out.append(time.perf_counter() - t0)
    return out


def report(name: str, lagoon_t: list[float], peer: str, peer_t: list[float]) -> None:
    lp50, lp99, pp50, pp99 = pct(lagoon_t, 0.5), pct(lagoon_t, 0.99), pct(peer_t, 0.5), pct(peer_t, 0.99)
    print(
        f"{name:<28} lagoon p50={lp50:7.2f}ms p99={lp99:7.2f}ms | {peer:<14} p50={pp50:7.2f}ms "
        f"p99={pp99:7.2f}ms | ratio p50={lp50 / pp50:5.2f}x p99={lp99 / pp99:5.2f}x",
        flush=True,
    )


def load(ns: Any, rows: list[dict[str, Any]], extra: dict[str, Any]) -> None:
    for i in range(0, len(rows), 5000):
        ns.write(upsert_rows=rows[i : i + 5000], **(extra if i == 0 else {}))


def bench_vectors_case(db: Any, n: int, nq: int) -> None:
    x = bench_vectors(n, 128)
    q = bench_queries(nq, 128)
    ns = db.namespace("vec")
    rows = [{"id": i, "vector": x[i]} for i in range(n)]
    t0 = time.perf_counter()
    load(ns, rows, {"distance_metric": "cosine_distance"})
    print(f"loaded {n} vectors in {time.perf_counter() - t0:.1f}s", flush=True)
    ns.query(rank_by=("vector", "ANN", q[0]), top_k=10)  # warm caches (normalised matrix)

    def lagoon_q(v: np.ndarray) -> Any:
        return ns.query(rank_by=("vector", "ANN", v), top_k=10, consistency={"level": "eventual"})

    def numpy_q(v: np.ndarray) -> Any:
        d = x @ v
        top = np.argpartition(-d, 10)[:10]
        return top[np.argsort(-d[top])]

    got = lagoon_q(q[1])["rows"]
    assert [r["id"] for r in got] == [int(i) for i in numpy_q(q[1])]
    qs = list(q)
    report(f"vector top-10 {n}x128", timed(lagoon_q, qs), "numpy", timed(numpy_q, qs))


def bench_text_case(db: Any, n: int, nq: int) -> None:
    docs = corpus(n)
    qtexts = sample_queries([d["text"] for d in docs], nq, seed=1)
    ns = db.namespace("text")
    rows = [{"id": d["id"], "text": d["text"]} for d in docs]
    t0 = time.perf_counter()
    load(ns, rows, {"schema": {"text": {"type": "string", "full_text_search": True}}})
    print(f"loaded {n} documents in {time.perf_counter() - t0:.1f}s", flush=True)
    t0 = time.perf_counter()
    ns.query(rank_by=("text", "BM25", qtexts[0]), top_k=10)
    print(f"first BM25 query (builds postings) {time.perf_counter() - t0:.1f}s", flush=True)

    def lagoon_q(text: str) -> Any:
        return ns.query(rank_by=("text", "BM25", text), top_k=10, consistency={"level": "eventual"})

    lagoon_t = timed(lagoon_q, qtexts)

    import bm25s

    from lagoon.index.text.analyze import Analyzer
    from lagoon.schema import FtsConfig

    analyzer = Analyzer(FtsConfig())
    tokens = analyzer.tokenize_many([d["text"] for d in docs])
    retriever = bm25s.BM25(method="lucene", k1=1.2, b=0.75)
    retriever.index(tokens, show_progress=False)

    def bm25s_q(text: str) -> Any:
        return retriever.retrieve([analyzer.tokens(text)], k=10, show_progress=False)

    report(f"BM25 top-10 {n} docs", lagoon_t, "bm25s", timed(bm25s_q, qtexts))
    try:
        import tantivy
    except ImportError:
        print("tantivy not installed (scripts/bootstrap --group bench): skipped", flush=True)
        return
    schema_b = tantivy.SchemaBuilder()
    schema_b.add_integer_field("id", stored=True)
    schema_b.add_text_field("text", stored=False)
    tschema = schema_b.build()
    index = tantivy.Index(tschema)
    writer = index.writer(num_threads=1)
    for d in docs:
        writer.add_document(tantivy.Document(id=d["id"], text=d["text"]))
    writer.commit()
    index.reload()
    searcher = index.searcher()

    def tantivy_q(text: str) -> Any:
        query = index.parse_query(" ".join(analyzer.tokens(text)) or "x", ["text"])
        return searcher.search(query, 10).hits

    report(f"BM25 top-10 {n} docs", lagoon_t, "tantivy", timed(tantivy_q, qtexts))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args()
    # The exhaustive engine alone: no background indexer folding the WAL into segments mid-run.
    with lagoon.open("memory://", indexer=False) as db:
        bench_vectors_case(db, args.n, args.queries)
        bench_text_case(db, args.n, args.queries)


if __name__ == "__main__":
    main()
