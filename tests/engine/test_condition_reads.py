"""What conditional and by-filter writes read of the current documents: only what they need.

A condition is evaluated on the columns it names (``id`` and ``v`` here), never on the whole
documents: a namespace whose documents carry a large text attribute pays for ``v`` only. Patches
read the documents they apply to whole (the WAL entry holds patched documents whole), and only
those that pass the condition. A by-filter write takes the ids of at most its cap (+1) matches.
The reads are observed at the snapshot's document source, which every lookup goes through.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from lagoon.config import Settings
from lagoon.engine import writer
from lagoon.engine.components import Components
from lagoon.engine.database import Database
from lagoon.engine.indexer import index_namespace
from lagoon.errors import InvalidRequest
from lagoon.format.keys import NamespaceKeys
from lagoon.index.sources.composite import CompositeSource
from lagoon.storage.memory import MemoryStore

pytestmark = pytest.mark.anyio
BODY = "lorem ipsum " * 2000  # 24 KB per document
N = 40


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def fetched(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[int, tuple[str, ...]]]]:
    """(rows, attributes) of every fetch from a snapshot's documents."""
    calls: list[tuple[int, tuple[str, ...]]] = []
    real = CompositeSource.fetch_rows

    def spy(self: CompositeSource, positions: np.ndarray, attributes: Any) -> Any:
        calls.append((len(positions), tuple(attributes)))
        return real(self, positions, attributes)

    monkeypatch.setattr(CompositeSource, "fetch_rows", spy)
    yield calls


async def seeded(max_query_work: int = 0) -> Database:
    """N documents with a large text, half of them in a segment, half in the WAL tail."""
    store = MemoryStore()
    settings = Settings(limits={"max_query_work": max_query_work})  # type: ignore[arg-type]
    db = Database(store, settings, Components(node_id="n1"))
    rows = [{"id": i, "v": i, "body": BODY} for i in range(N)]
    schema = {"body": {"type": "string", "regex": True}}
    await db.write("ns", {"upsert_rows": rows[: N // 2], "schema": schema})
    await index_namespace(
        store, NamespaceKeys.of("default", "ns"), settings, Components(node_id="ix"), force=True
    )
    await db.write("ns", {"upsert_rows": rows[N // 2 :]})
    return db


async def doc(db: Database, i: int) -> dict[str, Any]:
    res = await db.query(
        "ns", {"rank_by": ["id", "asc"], "filters": ["id", "Eq", i], "include_attributes": True}
    )
    [row] = res["rows"]
    return dict(row)


def attributes_read(calls: list[tuple[int, tuple[str, ...]]]) -> set[str]:
    return {a for _, attrs in calls for a in attrs}


IDS = [5, 25]  # one in the segment, one in the tail
CONDITIONAL = {
    "upsert_condition": {
        "upsert_rows": [{"id": i, "v": -1} for i in IDS],
        "upsert_condition": ["v", "Lt", 0],
    },
    "patch_condition": {"patch_rows": [{"id": i, "v": -1} for i in IDS], "patch_condition": ["v", "Lt", 0]},
    "delete_condition": {"deletes": IDS, "delete_condition": ["v", "Lt", 0]},
}


@pytest.mark.parametrize("case", sorted(CONDITIONAL))
async def test_a_condition_reads_only_the_attributes_it_names(
    case: str, fetched: list[tuple[int, tuple[str, ...]]]
) -> None:
    db = await seeded()
    fetched.clear()
    out = await db.write("ns", CONDITIONAL[case])
    assert out["rows_affected"] == 0  # the condition holds for none
    assert fetched and attributes_read(fetched) <= {"id", "v"}, fetched
    assert (await doc(db, 5))["body"] == BODY


async def test_a_conditional_patch_reads_whole_only_the_documents_that_pass(
    fetched: list[tuple[int, tuple[str, ...]]],
) -> None:
    db = await seeded()
    fetched.clear()
    ids = [3, 5, 23, 25]
    out = await db.write(
        "ns", {"patch_rows": [{"id": i, "v": 100 + i} for i in ids], "patch_condition": ["v", "In", [5, 25]]}
    )
    assert out["rows_patched"] == 2
    whole = [(rows, attrs) for rows, attrs in fetched if "body" in attrs]
    assert sum(rows for rows, _ in whole) == 2, fetched  # the two that passed, nothing else
    for i in ids:
        got = await doc(db, i)
        assert got["body"] == BODY and got["v"] == (100 + i if i in (5, 25) else i)


async def test_an_upsert_condition_with_ref_new_still_sees_the_new_values() -> None:
    db = await seeded()
    out = await db.write(
        "ns",
        {
            "upsert_rows": [{"id": 5, "v": 4}, {"id": 25, "v": 26}],
            "upsert_condition": ["v", "Lt", {"$ref_new": "v"}],
        },
    )
    assert out["rows_upserted"] == 1
    assert (await doc(db, 25)) == {"id": 25, "v": 26, "body": None}  # replaced whole
    assert (await doc(db, 5))["body"] == BODY


async def test_a_by_filter_write_takes_the_ids_of_at_most_its_cap_of_matches(
    fetched: list[tuple[int, tuple[str, ...]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    db = await seeded()
    monkeypatch.setattr(writer, "MAX_DELETE_BY_FILTER_ROWS", 7)
    fetched.clear()
    with pytest.raises(InvalidRequest, match="more than 7"):
        await db.write("ns", {"delete_by_filter": ["v", "Gte", 0]})
    assert fetched and all(rows <= 8 for rows, _ in fetched) and attributes_read(fetched) == {"id"}, fetched
    out = await db.write("ns", {"delete_by_filter": ["v", "Gte", 0], "delete_by_filter_allow_partial": True})
    assert out["rows_deleted"] == 7 and out["rows_remaining"] is True
    res = await db.query("ns", {"rank_by": ["id", "asc"], "top_k": 100})
    assert [r["id"] for r in res["rows"]] == list(range(7, N))


CATASTROPHIC = ["body", "Regex", "[\\x{0}-\\x{10FFFF}]{1000}c"]  # thousands of RE2 steps per byte
PRICED = {
    "delete_by_filter": {"delete_by_filter": CATASTROPHIC},
    "patch_by_filter": {"patch_by_filter": {"filters": CATASTROPHIC, "patch": {"v": 0}}},
    "upsert_condition": {"upsert_rows": [{"id": 5, "v": 0}], "upsert_condition": CATASTROPHIC},
    "patch_condition": {"patch_rows": [{"id": 5, "v": 0}], "patch_condition": CATASTROPHIC},
    "delete_condition": {"deletes": [5], "delete_condition": CATASTROPHIC},
}


@pytest.mark.parametrize("case", sorted(PRICED))
async def test_a_write_filter_too_expensive_to_evaluate_is_refused_before_it_runs(case: str) -> None:
    """The patterns of a write's filter or condition are priced like a query's (docs/limits.md),
    over the documents they would run on; above ``limits.max_query_work`` the write is a 400
    naming its field and nothing is written. The limit is lowered to what 1 MB of text allows
    for a pattern RE2 runs on its DFA (by default it is 1e10: 10 s of one core)."""
    db = await seeded(max_query_work=10 * N * len(BODY))
    head = (await db.snapshot("default", "ns")).head
    with pytest.raises(InvalidRequest, match=f"^{case} too expensive"):
        await db.write("ns", PRICED[case])
    assert (await db.snapshot("default", "ns")).head == head
    cheap = ["body", "Regex", "^lorem"]  # the same fields with a pattern RE2 runs on its DFA
    out = await db.write("ns", {"deletes": [5], "delete_condition": cheap})
    assert out["rows_deleted"] == 1
