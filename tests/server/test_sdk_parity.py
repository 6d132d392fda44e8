"""Behaviours where Lagoon differed from turbopuffer's API, each driven through the official
Python SDK (3.1.0) against a real ``lagoon-server`` process (``max_retries=0``: a retryable
status the server should not have sent shows as the error itself, not as four retries)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import turbopuffer

from .conftest import LiveServer


@pytest.fixture(scope="module")
def tpuf(live_server: LiveServer) -> Iterator[turbopuffer.Turbopuffer]:
    client = turbopuffer.Turbopuffer(api_key="x", base_url=live_server.url, max_retries=0)
    yield client
    client.close()


def rows(ns: Any) -> dict[Any, dict[str, Any]]:
    res = ns.query(rank_by=("id", "asc"), top_k=100, include_attributes=True)
    return {
        r.id: {k: v for k, v in r.model_dump().items() if k not in ("id", "vector") and v is not None}
        for r in res.rows
    }


def test_conditions_on_an_attribute_the_write_adds(tpuf: turbopuffer.Turbopuffer, unique: str) -> None:
    """A condition may name an attribute no stored document has yet (the same write adds it):
    it is null in every stored document, as turbopuffer's null semantics say (``Lt`` matches
    null). Lagoon used to read the column from the stored snapshot, which does not have it, and
    answered 503 ``commit failed; retry``."""
    ns = tpuf.namespace(unique)
    ns.write(upsert_rows=[{"id": 1, "t": "a"}, {"id": 2, "t": "b"}])
    # id 1 exists, its v is null and null Lt 5 holds; id 3 is new: applied unconditionally
    res = ns.write(
        upsert_rows=[{"id": 1, "t": "a2", "v": 5}, {"id": 3, "t": "c", "v": 1}],
        upsert_condition=("v", "Lt", {"$ref_new": "v"}),
        return_affected_ids=True,
    )
    assert sorted(res.upserted_ids or []) == [1, 3]
    # w is new in this patch: null in id 2, so Eq null holds and NotEq null does not
    res = ns.write(
        patch_rows=[{"id": 2, "w": 10}], patch_condition=("w", "Eq", None), return_affected_ids=True
    )
    assert res.patched_ids == [2]
    res = ns.write(
        patch_rows=[{"id": 1, "x": 1}], patch_condition=("x", "NotEq", None), return_affected_ids=True
    )
    assert res.patched_ids == []
    assert rows(ns) == {1: {"t": "a2", "v": 5}, 2: {"t": "b", "w": 10}, 3: {"t": "c", "v": 1}}


RETURNED_LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def small_responses(tmp_path_factory: pytest.TempPathFactory) -> Iterator[turbopuffer.Turbopuffer]:
    """A server whose queries may return at most 64 KiB of rows (limits.max_returned_bytes)."""
    root = tmp_path_factory.mktemp("returned")
    server = LiveServer(
        root / "data", root / "server.log", LAGOON_LIMITS__MAX_RETURNED_BYTES=str(RETURNED_LIMIT)
    )
    client = turbopuffer.Turbopuffer(api_key="x", base_url=server.url, max_retries=0)
    yield client
    client.close()
    server.stop()


def test_a_query_returning_more_than_the_byte_limit_is_a_400(
    small_responses: turbopuffer.Turbopuffer, unique: str
) -> None:
    """One small request could make the node build a response of any size (16 queries x top_k
    10,000 x documents up to 64 MiB): the rows a request returns are bounded by
    limits.max_returned_bytes, refused with a 400 naming it, before the rows are read when the
    namespace's average document predicts it."""
    ns = small_responses.namespace(unique)
    ns.write(upsert_rows=[{"id": i, "text": "x" * 1000} for i in range(200)])
    # 20 rows x ~1 KB fit; 200 rows (~200 KB) do not; ids alone do
    assert len(ns.query(rank_by=("id", "asc"), top_k=20, include_attributes=["text"]).rows) == 20
    with pytest.raises(turbopuffer.BadRequestError) as e:
        ns.query(rank_by=("id", "asc"), top_k=200, include_attributes=["text"])
    assert "limits.max_returned_bytes" in str(e.value) and "top_k" in str(e.value)
    assert [r.id for r in ns.query(rank_by=("id", "asc"), top_k=200).rows] == list(range(200))
    # a multi-query counts all its queries: 4 x 30 rows pass the limit though each fits alone
    one = {"rank_by": ("id", "asc"), "top_k": 30, "include_attributes": ["text"]}
    assert len(ns.multi_query(queries=[one]).results[0].rows) == 30
    with pytest.raises(turbopuffer.BadRequestError) as e:
        ns.multi_query(queries=[one] * 4)
    assert "limits.max_returned_bytes" in str(e.value)


def test_one_large_document_among_small_ones_is_counted_as_it_is(
    small_responses: turbopuffer.Turbopuffer, unique: str
) -> None:
    """The average predicts these rows fit; the rows as read do not (one holds 100 KB)."""
    ns = small_responses.namespace(unique)
    ns.write(upsert_rows=[{"id": i, "text": "y" * 10} for i in range(1000)])
    ns.write(upsert_rows=[{"id": 1000, "text": "z" * 100_000}])
    assert len(ns.query(rank_by=("id", "asc"), top_k=50, include_attributes=["text"]).rows) == 50
    with pytest.raises(turbopuffer.BadRequestError) as e:
        ns.query(rank_by=("id", "desc"), top_k=50, include_attributes=["text"])
    assert "limits.max_returned_bytes" in str(e.value) and "at least" in str(e.value)


def test_max_and_sum_take_their_clauses_flat_too(tpuf: turbopuffer.Turbopuffer, unique: str) -> None:
    """turbopuffer's docs wrap a signed attribute as ``["Max", 0, ["Attribute", "clicks"]]``; the
    SDK's types nest the clauses in a list. Both forms rank alike (the flat one was a 400)."""
    ns = tpuf.namespace(unique)
    ns.write(upsert_rows=[{"id": i, "clicks": i - 2} for i in range(5)])

    def ranked(rank_by: Any) -> list[tuple[int, float]]:
        return [(r.id, r["$dist"]) for r in ns.query(rank_by=rank_by, top_k=3).rows]

    expected = [(4, 2.0), (3, 1.0), (0, 0.0)]  # max(0, clicks), ties by id
    assert ranked(("Max", [0, ("Attribute", "clicks")])) == expected
    assert ranked(("Max", 0, ("Attribute", "clicks"))) == expected
    # max(1, clicks) + max(0, clicks): 4 -> 4, 3 -> 2, then 1 for the rest
    flat_sum = ("Sum", ("Max", 1, ("Attribute", "clicks")), ("Max", 0, ("Attribute", "clicks")))
    assert ranked(flat_sum) == [(4, 4.0), (3, 2.0), (0, 1.0)]
    with pytest.raises(turbopuffer.BadRequestError, match="finite and >= 0"):
        ns.query(rank_by=("Max", -1, ("Attribute", "clicks")), top_k=3)
