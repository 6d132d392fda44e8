"""Multi-vector ANN/kNN queries (``[attr, "ANN", [[...], [...]]]``) over a segment plus the WAL
tail: ``$dist`` is the sum of the query vectors' distances (late interaction with one vector per
document), worked out by hand; the reduction to one search vector is checked against brute force."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from lagoon.engine.database import Database
from lagoon.errors import InvalidRequest
from lagoon.index.vector.kernels import exact_dist
from lagoon.storage.memory import MemoryStore
from lagoon.wire.query import multi_vector_query
from tests.engine.lifecycle.helpers import NS, segment_and_tail

SCHEMA = {
    "a": {"type": "[2]f32", "ann": {"distance_metric": "euclidean_squared"}},
    "b": {"type": "[2]f32", "ann": {"distance_metric": "cosine_distance"}},
}
DOCS = [
    {"id": 1, "a": [0.0, 0.0], "b": [1.0, 0.0]},
    {"id": 2, "a": [3.0, 4.0], "b": [0.0, 1.0]},
    {"id": 3, "a": [1.0, 1.0], "b": [1.0, 1.0]},  # WAL tail
    {"id": 4, "a": None, "b": None},  # WAL tail, no vectors
]


@pytest.fixture
async def db() -> Any:
    database = await segment_and_tail(MemoryStore(), DOCS[:2], DOCS[2:], schema=SCHEMA)
    yield database
    await database.close()


async def _rows(db: Database, body: dict[str, Any]) -> list[tuple[Any, float]]:
    return [(r["id"], r["$dist"]) for r in (await db.query(NS, body))["rows"]]


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["ANN", "kNN"])
async def test_multi_vector_sums_distances(db: Database, mode: str) -> None:
    extra = {"filters": ["id", "Gte", 0]} if mode == "kNN" else {}
    # euclidean², query (0,0) and (2,0): id 1: 0 + 4 = 4; id 2: 25 + 17 = 42; id 3: 2 + 2 = 4
    got = await _rows(db, {"rank_by": ["a", mode, [[0.0, 0.0], [2.0, 0.0]]], **extra})
    assert [i for i, _ in got] == [1, 3, 2]
    assert [d for _, d in got] == pytest.approx([4.0, 4.0, 42.0], abs=1e-5)
    # cosine, query (1,0) and (0,2): id 1: 0 + 1; id 2: 1 + 0; id 3: 2·(1 − 1/√2)
    got = await _rows(db, {"rank_by": ["b", mode, [[1.0, 0.0], [0.0, 2.0]]], "top_k": 2, **extra})
    assert [i for i, _ in got] == [3, 1]
    assert [d for _, d in got] == pytest.approx([2 - math.sqrt(2), 1.0], abs=1e-6)
    # one vector in the list is the plain query
    one = await _rows(db, {"rank_by": ["a", mode, [[3.0, 4.0]]], **extra})
    plain = await _rows(db, {"rank_by": ["a", mode, [3.0, 4.0]], **extra})
    assert one == plain and [i for i, _ in one] == [2, 3, 1]


@pytest.mark.anyio
async def test_multi_vector_errors(db: Database) -> None:
    for body, message in [
        ({"rank_by": ["a", "ANN", [[1.0, 0.0], [1.0]]]}, r"rank_by\[2\]\[1\]: vector has 1 dimensions"),
        ({"rank_by": ["a", "ANN", [[1.0, 0.0]] * 257]}, "at most 256 vectors"),
        ({"rank_by": ["a", "ANN", [[1.0, float("nan")], [0.0, 1.0]]]}, "NaN"),
    ]:
        with pytest.raises(InvalidRequest, match=message):
            await db.query(NS, body)


@pytest.mark.parametrize("metric", ["euclidean_squared", "cosine_distance"])
def test_reduction_equals_the_sum_of_distances(metric: str) -> None:
    rng = np.random.default_rng(3)
    docs = rng.normal(size=(200, 8)).astype(np.float32)
    docs[0] = 0.0  # a zero document vector
    for n in (2, 3, 7):
        q = rng.normal(size=(n, 8)).astype(np.float32)
        if n == 3:
            q[1] = 0.0  # a zero query vector
        want = sum(exact_dist(docs, q[i], metric) for i in range(n))
        v, scale, offset = multi_vector_query(q, metric)
        got = scale * exact_dist(docs, v, metric) + offset
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
