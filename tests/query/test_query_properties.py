"""Property tests: exact vector search + filters, and order-by, against brute-force numpy oracles."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lagoon.index.sources.table import LiveDocs
from lagoon.query.execute import execute_query
from lagoon.schema import AttributeSchema, AttrType, Schema
from lagoon.wire.query import parse_request

CATS = ["a", "b", "c"]


@st.composite
def datasets(draw: st.DrawFn) -> dict[str, Any]:
    """Sizes and shape knobs come from hypothesis; the bulk values from a seeded numpy generator
    (fast to generate; hypothesis still shrinks the sizes and the seed)."""
    n = draw(st.integers(0, 60))
    dims = draw(st.integers(1, 6))
    integer = draw(st.booleans())  # small integers make exact ties common
    null_rate = draw(st.sampled_from([0.0, 0.2, 0.7]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if integer:
        matrix = rng.integers(-3, 4, size=(n, dims)).astype(float)
    else:
        matrix = rng.uniform(-10, 10, size=(n, dims)).astype(np.float32).astype(float)
    present = rng.random(n) >= null_rate
    vectors = [matrix[i].tolist() if present[i] else None for i in range(n)]
    ids = rng.choice(10_000, size=n, replace=False).tolist()
    cats = [None if x == 3 else CATS[x] for x in rng.integers(0, 4, size=n).tolist()]
    nums = [None if x == 6 else x - 3 for x in rng.integers(0, 7, size=n).tolist()]
    return {"dims": dims, "vectors": vectors, "ids": ids, "cat": cats, "n": nums, "integer": integer}


def build(data: dict[str, Any], dtype: str, metric: str) -> LiveDocs:
    dims = data["dims"]
    vt = AttrType("vector", dims=dims, dtype=dtype)
    schema = Schema(
        "uint",
        {
            "v": AttributeSchema(vt, filterable=False, ann={}),
            "cat": AttributeSchema(AttrType("string")),
            "n": AttributeSchema(AttrType("int")),
        },
        metric,
    )
    vecs = data["vectors"]
    flat = np.array([x if x is not None else [0.0] * dims for x in vecs], dtype=np.float32).reshape(-1)
    child = pa.array(flat.astype(np.float16 if dtype == "f16" else np.float32))
    mask = pa.array([x is None for x in vecs], type=pa.bool_())
    table = pa.table(
        {
            "id": pa.array(data["ids"], pa.uint64()),
            "v": pa.FixedSizeListArray.from_arrays(child, dims, mask=mask),
            "cat": pa.array(data["cat"], pa.string()),
            "n": pa.array(data["n"], pa.int64()),
        }
    )
    return LiveDocs(schema, table)


FILTERS: list[tuple[Any, Any]] = [
    (None, lambda c, n: True),
    (["cat", "Eq", "a"], lambda c, n: c == "a"),
    (["cat", "In", ["a", "b"]], lambda c, n: c in ("a", "b")),
    (["n", "Gt", 0], lambda c, n: n is not None and n > 0),
    (["n", "Lt", 0], lambda c, n: n is None or n < 0),  # Lt matches null
    (["Or", [["cat", "Eq", "c"], ["n", "Eq", None]]], lambda c, n: c == "c" or n is None),
    (["Not", ["cat", "Eq", None]], lambda c, n: c is not None),
]


def oracle(
    data: dict[str, Any], q: np.ndarray, metric: str, dtype: str, keep: list[bool]
) -> list[tuple[float, int]]:
    out = []
    for doc_id, v, ok in zip(data["ids"], data["vectors"], keep, strict=True):
        if v is None or not ok:
            continue
        x = np.asarray(v, dtype=np.float16 if dtype == "f16" else np.float32).astype(np.float64)
        qq = q.astype(np.float64)
        if metric == "euclidean_squared":
            d = float(np.sum((x - qq) ** 2))
        else:
            denom = float(np.linalg.norm(x) * np.linalg.norm(qq))
            d = 1.0 - (float(x @ qq) / denom if denom > 0 else 0.0)
        out.append((d, doc_id))
    return sorted(out)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=datasets(),
    metric=st.sampled_from(["cosine_distance", "euclidean_squared"]),
    dtype=st.sampled_from(["f32", "f16"]),
    fi=st.integers(0, len(FILTERS) - 1),
    k=st.integers(1, 15),
    offset=st.integers(0, 5),
    qseed=st.integers(0, 2**32 - 1),
)
def test_vector_search_matches_bruteforce(
    data: dict[str, Any], metric: str, dtype: str, fi: int, k: int, offset: int, qseed: int
) -> None:
    live = build(data, dtype, metric)
    rng = np.random.default_rng(qseed)
    q = rng.integers(-3, 4, size=data["dims"]).astype(np.float32)
    if not q.any():
        q[0] = 1.0
    flt, pred = FILTERS[fi]
    body: dict[str, Any] = {"rank_by": ["v", "kNN", q.tolist()], "top_k": k, "offset": offset}
    if flt is not None:
        body["filters"] = flt
    rows = execute_query(parse_request(body, live.schema), live)["rows"]
    keep = [bool(pred(c, n)) for c, n in zip(data["cat"], data["n"], strict=True)]
    expect = oracle(data, q, metric, dtype, keep)[offset : offset + k]
    assert len(rows) == len(expect)
    got = [r["$dist"] for r in rows]
    np.testing.assert_allclose(got, [d for d, _ in expect], rtol=1e-5, atol=1e-5)
    by_id = {doc_id: d for d, doc_id in oracle(data, q, metric, dtype, keep)}
    for r in rows:  # each returned row is a candidate, with its own exact distance
        assert r["id"] in by_id
        assert abs(r["$dist"] - by_id[r["id"]]) <= 1e-6 * max(1.0, abs(by_id[r["id"]]))
    assert got == sorted(got)
    if metric == "euclidean_squared" and data["integer"]:
        # integer data: distances are exact, so ties must be broken by id exactly like the oracle
        assert [r["id"] for r in rows] == [doc_id for _, doc_id in expect]


@settings(max_examples=100, deadline=None)
@given(data=datasets(), desc=st.booleans(), k=st.integers(1, 50), fi=st.integers(0, len(FILTERS) - 1))
def test_order_by_matches_sort(data: dict[str, Any], desc: bool, k: int, fi: int) -> None:
    live = build(data, "f32", "cosine_distance")
    flt, pred = FILTERS[fi]
    body: dict[str, Any] = {"rank_by": ["n", "desc" if desc else "asc"], "top_k": k}
    if flt is not None:
        body["filters"] = flt
    rows = execute_query(parse_request(body, live.schema), live)["rows"]
    docs = [
        (n, doc_id) for doc_id, c, n in zip(data["ids"], data["cat"], data["n"], strict=True) if pred(c, n)
    ]
    # null is the smallest value: first ascending, last descending; ties by ascending id
    low = -(10**9)
    key = (
        (lambda t: (-(t[0] if t[0] is not None else low), t[1]))
        if desc
        else (lambda t: (t[0] if t[0] is not None else low, t[1]))
    )
    assert [r["id"] for r in rows] == [doc_id for _, doc_id in sorted(docs, key=key)[:k]]
