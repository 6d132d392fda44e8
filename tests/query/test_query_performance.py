"""Latency checks of the exhaustive executor against numpy floors measured in the same run (slow).

Ratios, not absolute numbers: the box is shared, so each check compares with a bare numpy
computation of the same size timed right next to it, and takes minimums over repetitions.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pytest

from lagoon.index.sources.table import LiveDocs
from lagoon.query.execute import execute_query
from lagoon.schema import AttributeSchema, AttrType, FtsConfig, Schema
from lagoon.wire.query import parse_request

pytestmark = pytest.mark.slow


def best_ms(fn: Callable[[], object], reps: int = 15) -> float:
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1000.0


def test_vector_top10_100k_x_128_is_one_matmul() -> None:
    n, d = 100_000, 128
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d), dtype=np.float32)
    schema = Schema(
        "uint",
        {"vector": AttributeSchema(AttrType("vector", dims=d, dtype="f32"), False, ann={})},
        "cosine_distance",
    )
    table = pa.table(
        {
            "id": pa.array(np.arange(n, dtype=np.uint64)),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), d),
        }
    )
    live = LiveDocs(schema, table)
    q = rng.standard_normal(d).astype(np.float32)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    for metric in ("cosine_distance", "euclidean_squared"):
        req = parse_request(
            {"rank_by": ["vector", "ANN", q.tolist()], "top_k": 10, "distance_metric": metric}, schema
        )
        execute_query(req, live)  # builds the cached matrices
        floor = best_ms(lambda: np.argpartition(unit @ q, 10)[:10])
        ours = best_ms(lambda req=req: execute_query(req, live))  # type: ignore[misc]
        assert ours < 3 * floor + 2.0, (metric, ours, floor)


def test_bm25_100k_short_docs_uses_postings() -> None:
    rng = np.random.default_rng(1)
    vocab = np.array([f"w{i}" for i in range(20_000)])
    n = 100_000
    lengths = rng.poisson(12, n) + 1
    words = vocab[np.minimum(rng.zipf(1.2, int(lengths.sum())), 20_000) - 1]
    splits = np.cumsum(lengths)[:-1]
    texts = [" ".join(p) for p in np.split(words, splits)]
    schema = Schema("uint", {"text": AttributeSchema(AttrType("string"), False, FtsConfig().to_json())}, None)
    live = LiveDocs(
        schema, pa.table({"id": pa.array(np.arange(n, dtype=np.uint64)), "text": pa.array(texts)})
    )
    live.text_index("text")
    reqs = [
        parse_request({"rank_by": ["text", "BM25", f"w{a} w{b} w{c}"], "top_k": 10}, schema)
        for a, b, c in rng.integers(50, 5000, size=(30, 3))
    ]
    per_query = best_ms(lambda: [execute_query(r, live) for r in reqs], reps=3) / len(reqs)
    # rescanning the text would cost far more than one pass over 100k floats per query
    floor = best_ms(lambda: np.zeros(n).argsort(kind="stable")[:10])
    assert per_query < 10 * floor + 5.0, (per_query, floor)
