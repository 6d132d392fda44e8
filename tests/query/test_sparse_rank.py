"""Score ranking touches only the documents a BM25 term matches (``sparse_clause``); it must rank
exactly like the dense definition (every document scored, 0 where nothing matches) for any tree
of BM25 / Sum / Max / Product clauses, with and without filters."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lagoon.index.vector.kernels import topk_smallest
from lagoon.query.execute import rank, score_clause, sparse_clause
from lagoon.wire.query import parse_request
from tests.query.test_query_execute import attr, fts, make_live

WORDS = ["alpha", "beta", "gamma", "delta", "eps", "zeta"]
ATTRS = {
    "title": attr("string", full_text_search=fts()),
    "body": attr("string", full_text_search=fts()),
    "n": attr("int"),
}


def leaf() -> st.SearchStrategy[Any]:
    query = st.lists(st.sampled_from(WORDS), min_size=1, max_size=3).map(" ".join)
    return st.tuples(st.sampled_from(["title", "body"]), query).map(lambda t: [t[0], "BM25", t[1]])


def clauses() -> st.SearchStrategy[Any]:
    return st.recursive(
        leaf(),
        lambda inner: st.one_of(
            st.lists(inner, min_size=1, max_size=3).map(lambda cs: ["Sum", cs]),
            st.lists(inner, min_size=1, max_size=3).map(lambda cs: ["Max", cs]),
            st.tuples(st.sampled_from([0.0, 0.5, 2.0]), inner).map(lambda t: ["Product", t[0], t[1]]),
        ),
        max_leaves=5,
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(0, 40),
    clause=clauses(),
    filtered=st.booleans(),
    top_k=st.integers(1, 12),
)
def test_sparse_ranking_equals_the_dense_definition(
    seed: int, n: int, clause: Any, filtered: bool, top_k: int
) -> None:
    rng = np.random.default_rng(seed)

    def text() -> str | None:
        k = int(rng.integers(0, 5))
        return None if k == 0 else " ".join(rng.choice(WORDS, size=k).tolist())

    rows = [
        {"id": i * 3 + 1, "title": text(), "body": text(), "n": int(rng.integers(0, 4))} for i in range(n)
    ]
    live = make_live(ATTRS, rows, chunks=2 if n else 1)
    body: dict[str, Any] = {"rank_by": clause, "top_k": top_k}
    if filtered:
        body["filters"] = ["n", "Lt", 2]
    req = parse_request(body, live.schema)
    assert sparse_clause(req.rank_by.clause, live) is not None  # type: ignore[union-attr]

    dense = score_clause(req.rank_by.clause, live)  # type: ignore[union-attr]
    dense[~live.filter_mask(req.filters)] = 0.0
    cand = np.flatnonzero(dense > 0)
    top = cand[topk_smallest(-dense[cand], live.id_rank()[cand], top_k)]

    got = rank(req, live)  # type: ignore[arg-type]
    assert got.positions.tolist() == top.tolist()
    assert got.dists is not None and got.dists.tolist() == dense[top].tolist()  # bit for bit
