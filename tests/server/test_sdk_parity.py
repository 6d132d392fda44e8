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
