"""Write-path semantics through the engine: validation before writing, ids and types, conditions,
by-filter operations, namespace lifecycle, group commit, races and ambiguous store outcomes."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import numpy as np
import pytest

from lagoon.config import Settings
from lagoon.engine.components import Components
from lagoon.engine.database import Database
from lagoon.errors import Forbidden, InvalidRequest, NotFound
from lagoon.format import keys
from lagoon.storage.base import ObjectStore
from lagoon.storage.faulty import FaultyStore
from lagoon.storage.instrumented import InstrumentedStore
from lagoon.storage.memory import MemoryStore

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def db_on(store: ObjectStore, node: str = "n1", poll_ms: int = 1000) -> Database:
    return Database(store, Settings(manifest={"poll_interval_ms": poll_ms}), Components(node_id=node))  # type: ignore[arg-type]


async def docs(db: Database, ns: str = "ns") -> dict[Any, dict[str, Any]]:
    snap = await db.snapshot("default", ns)
    return {r.pop("id"): r for r in snap.live_table().to_pylist()}


async def wal_count(store: ObjectStore, ns: str = "ns") -> int:
    return len([m async for m in store.list(keys.NamespaceKeys.of("default", ns).wal_prefix)])


async def test_upsert_then_read_back_all_types() -> None:
    db = db_on(MemoryStore())
    res = await db.write(
        "ns",
        {
            "upsert_rows": [
                {"id": 1, "vector": [0.5, 0.25], "title": "hi", "n": 3, "f": 1.5, "ok": True, "tags": ["a"]},
                {"id": 2, "vector": base64.b64encode(np.array([1, 2], "<f4").tobytes()).decode(), "n": 4},
            ],
            "distance_metric": "euclidean_squared",
            "schema": {"when": "datetime", "u": "uuid"},
        },
    )
    assert res["status"] == "OK" and res["rows_upserted"] == 2 and res["rows_affected"] == 2
    got = await docs(db)
    assert got[1]["title"] == "hi" and got[1]["n"] == 3 and got[1]["f"] == 1.5 and got[1]["tags"] == ["a"]
    assert got[2]["vector"] == [1.0, 2.0] and got[2]["title"] is None
    schema = await db.get_schema("ns")
    assert schema["id"] == {"type": "uint"}
    assert schema["vector"]["type"] == "[2]f32" and schema["n"]["type"] == "int"
    assert schema["when"]["type"] == "datetime" and schema["u"]["type"] == "uuid"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"upsert_rows": [{"id": 1}, {"id": 1}]}, "appears more than once"),
        ({"upsert_rows": [{"id": 1, "n": 1}, {"id": 2, "n": "x"}]}, r"upsert_rows\[1\]\.n: expected int"),
        ({"upsert_rows": [{"id": 1, "m": 1}, {"id": 2, "m": "x"}]}, "conflicts"),
        ({"upsert_rows": [{"id": 1, "vector": [1.0, 2.0]}]}, "distance_metric is required"),
        ({"upsert_rows": [{"id": -1}]}, r"0\.\.2\^64-1"),
        ({"upsert_rows": [{"id": "x" * 65}]}, "64 bytes"),
        ({"upsert_rows": [{"id": 1, "$x": 1}]}, "may not start with"),
        ({"upsert_rows": [{"title": "no id"}]}, "'id' is required"),
        ({"upsert_columns": {"id": [1, 2], "n": [1]}}, "equally long"),
        ({"bogus": 1}, "unknown write field"),
        ({"distance_metric": "dot"}, "distance_metric"),
        ({"upsert_rows": [{"id": 1, "vector": "!!"}], "distance_metric": "cosine_distance"}, "base64"),
        ({"schema": {"x": "decimal"}}, "unknown type"),
        ({"delete_by_filter": ["n", "Bogus", 1]}, "delete_by_filter"),
    ],
)
async def test_bad_requests_are_rejected_and_change_nothing(body: dict[str, Any], message: str) -> None:
    store = MemoryStore()
    db = db_on(store)
    await db.write("ns", {"upsert_rows": [{"id": 7, "n": 1}]})
    before = await wal_count(store)
    with pytest.raises(InvalidRequest, match=message):
        await db.write("ns", body)
    assert await wal_count(store) == before
    assert await docs(db) == {7: {"n": 1}}


async def test_type_is_fixed_after_first_write() -> None:
    db = db_on(MemoryStore())
    await db.write("ns", {"upsert_rows": [{"id": 1, "n": 1}]})
    with pytest.raises(InvalidRequest, match=r"upsert_rows\[0\]\.n: expected int"):
        await db.write("ns", {"upsert_rows": [{"id": 2, "n": "text"}]})
    with pytest.raises(InvalidRequest, match="string"):
        await db.write("ns", {"upsert_rows": [{"id": "a"}]})


async def test_vector_dimension_mismatch() -> None:
    db = db_on(MemoryStore())
    await db.write(
        "ns", {"upsert_rows": [{"id": 1, "vector": [1, 2, 3]}], "distance_metric": "cosine_distance"}
    )
    with pytest.raises(InvalidRequest, match="3"):
        await db.write("ns", {"upsert_rows": [{"id": 2, "vector": [1, 2]}]})


async def test_patch_merges_and_ignores_missing_ids() -> None:
    db = db_on(MemoryStore())
    await db.write("ns", {"upsert_rows": [{"id": 1, "a": "x", "b": 1}]})
    res = await db.write("ns", {"patch_rows": [{"id": 1, "b": 2}, {"id": 99, "b": 3}]})
    assert res["rows_patched"] == 1
    assert await docs(db) == {1: {"a": "x", "b": 2}}


async def test_patch_cannot_touch_vectors() -> None:
    db = db_on(MemoryStore())
    await db.write("ns", {"upsert_rows": [{"id": 1, "vector": [1, 2]}], "distance_metric": "cosine_distance"})
    with pytest.raises(InvalidRequest, match="cannot be patched"):
        await db.write("ns", {"patch_rows": [{"id": 1, "vector": [3, 4]}]})


async def test_conditional_upsert_with_ref_new() -> None:
    db = db_on(MemoryStore())
    await db.write("ns", {"upsert_rows": [{"id": 1, "v": 5}, {"id": 2, "v": 5}]})
    cond = ["v", "Lt", {"$ref_new": "v"}]
    res = await db.write(
        "ns",
        {
            "upsert_rows": [{"id": 1, "v": 3}, {"id": 2, "v": 9}, {"id": 3, "v": 1}],
            "upsert_condition": cond,
            "return_affected_ids": True,
        },
    )
    assert sorted(res["upserted_ids"]) == [2, 3]  # 1 kept (5 < 3 false); 3 is new: applied
    assert await docs(db) == {1: {"v": 5}, 2: {"v": 9}, 3: {"v": 1}}


async def test_insert_only_condition_and_delete_condition() -> None:
    db = db_on(MemoryStore())
    await db.write("ns", {"upsert_rows": [{"id": 1, "v": 1}, {"id": 2, "v": 2}]})
    await db.write("ns", {"upsert_rows": [{"id": 1, "v": 100}], "upsert_condition": ["id", "Eq", None]})
    assert (await docs(db))[1] == {"v": 1}
    res = await db.write("ns", {"deletes": [1, 2], "delete_condition": ["v", "Gt", 1]})
    assert res["rows_deleted"] == 1
    assert await docs(db) == {1: {"v": 1}}


async def test_delete_and_patch_by_filter_order() -> None:
    db = db_on(MemoryStore())
    await db.write("ns", {"upsert_rows": [{"id": i, "k": i % 3, "s": "old"} for i in range(9)]})
    res = await db.write(
        "ns",
        {
            "delete_by_filter": ["k", "Eq", 0],
            "patch_by_filter": {"filters": ["k", "In", [0, 1]], "patch": {"s": "new"}},
        },
    )
    assert res["rows_deleted"] == 3 and res["rows_patched"] == 3  # deletes apply first
    got = await docs(db)
    assert sorted(got) == [1, 2, 4, 5, 7, 8]
    assert {i: d["s"] for i, d in got.items()} == {1: "new", 2: "old", 4: "new", 5: "old", 7: "new", 8: "old"}


async def test_namespace_lifecycle() -> None:
    store = MemoryStore()
    db = db_on(store)
    with pytest.raises(NotFound):
        await db.metadata("ns")
    with pytest.raises(NotFound):
        await db.write("ns", {"deletes": [1]})
    with pytest.raises(NotFound):
        await db.write("ns", {"upsert_rows": [{"id": 1}], "create_namespace": False})
    await db.write("ns", {"upsert_rows": [{"id": 1, "a": "x"}]})
    meta = await db.metadata("ns")
    assert meta["approx_row_count"] == 1 and meta["index"]["status"] == "updating"
    assert (await db.delete_namespace("ns")) == {"status": "OK", "rows_deleted": 1}
    with pytest.raises(NotFound):
        await db.query("ns", {"rank_by": ["id", "asc"], "top_k": 10})
    other = db_on(store, "n2")
    with pytest.raises(NotFound):
        await other.metadata("ns")
    await db.write("ns", {"upsert_rows": [{"id": "s", "a": 1}]})  # recreated with another id type
    assert await docs(other) == {"s": {"a": 1}}
    await db.write("empty", {"create_namespace": True, "schema": {"id": "uuid"}})
    assert (await db.get_schema("empty"))["id"] == {"type": "uuid"}


async def test_read_only_namespace_refuses_writes() -> None:
    db = db_on(MemoryStore())
    await db.write("ns", {"upsert_rows": [{"id": 1}]})
    await db.update_metadata("ns", {"read_only": True})
    with pytest.raises(Forbidden, match="read-only"):
        await db.write("ns", {"upsert_rows": [{"id": 2}]})
    await db.update_metadata("ns", {"read_only": False})
    await db.write("ns", {"upsert_rows": [{"id": 2}]})


async def test_group_commit_batches_concurrent_requests() -> None:
    store = InstrumentedStore(MemoryStore())
    db = db_on(store)
    await db.write("ns", {"upsert_rows": [{"id": 0}]})
    results = await asyncio.gather(
        *(db.write("ns", {"upsert_rows": [{"id": i, "n": i}]}) for i in range(1, 51))
    )
    assert all(r["rows_upserted"] == 1 for r in results)
    commits = db.handle("default", "ns").committer.commits
    assert commits < 10, commits  # 50 requests, a handful of WAL entries
    assert len(await docs(db)) == 51


async def test_two_nodes_race_for_slots_and_nothing_is_lost() -> None:
    store = MemoryStore()
    a, b = db_on(store, "a"), db_on(store, "b")
    await a.write("ns", {"upsert_rows": [{"id": 0}]})
    await b.snapshot("default", "ns")

    async def writer(db: Database, base: int) -> None:
        for i in range(20):
            await db.write("ns", {"upsert_rows": [{"id": base + i, "n": i}]})

    await asyncio.gather(writer(a, 1000), writer(b, 2000))
    for db in (a, b):
        got = await docs(db)
        assert sorted(got) == [0, *range(1000, 1020), *range(2000, 2020)]


async def test_strong_read_sees_other_nodes_writes_and_eventual_may_lag() -> None:
    store = MemoryStore()
    a, b = db_on(store, "a", poll_ms=60_000), db_on(store, "b", poll_ms=60_000)
    await a.write("ns", {"upsert_rows": [{"id": 1}]})
    await b.query("ns", {"rank_by": ["id", "asc"], "top_k": 10})
    await a.write("ns", {"upsert_rows": [{"id": 2}]})
    eventual = await b.query(
        "ns", {"rank_by": ["id", "asc"], "top_k": 10, "consistency": {"level": "eventual"}}
    )
    assert [r["id"] for r in eventual["rows"]] == [1]  # within the poll interval: stale is allowed
    strong = await b.query("ns", {"rank_by": ["id", "asc"], "top_k": 10})
    assert [r["id"] for r in strong["rows"]] == [1, 2]


@pytest.mark.parametrize("seed", range(8))
async def test_ambiguous_puts_are_settled(seed: int) -> None:
    """The store applies some PUTs but reports failure; acknowledged writes must all be there and
    failed ones absent."""
    inner = MemoryStore()
    faulty = FaultyStore(inner, seed=seed, p_error_after=0.3, p_error_before=0.1, ops={"put"})
    db = db_on(faulty)
    acked, failed = set(), set()
    for i in range(30):
        try:
            await db.write("ns", {"upsert_rows": [{"id": i}]})
            acked.add(i)
        except Exception:
            failed.add(i)
    fresh = db_on(inner, "checker")
    got = set(await docs(fresh))
    assert acked <= got
    assert not (got & failed), "a write reported as failed became visible"


async def test_fence_blocks_a_late_put() -> None:
    """A PUT reported as failed, whose slot is still empty, is fenced so it can never land later."""
    inner = MemoryStore()
    faulty = FaultyStore(inner, seed=1)
    db = db_on(faulty)
    await db.write("ns", {"upsert_rows": [{"id": 1}]})
    faulty.arm("put", "error_before", key=lambda k: k.endswith("00000000000000000002.wal"))
    res = await db.write("ns", {"upsert_rows": [{"id": 2}]})
    assert res["rows_upserted"] == 1
    wal = [m.key async for m in inner.list("default/ns/wal/")]
    assert len(wal) == 3  # seq 2 holds the fence, the write committed at seq 3
    assert set(await docs(db_on(inner, "x"))) == {1, 2}


async def test_max_namespaces_limit() -> None:
    settings = Settings(limits={"max_namespaces": 2})  # type: ignore[arg-type]
    db = Database(MemoryStore(), settings, Components(node_id="n"))
    await db.write("a", {"upsert_rows": [{"id": 1}]})
    await db.write("b", {"upsert_rows": [{"id": 1}]})
    await db.write("a", {"upsert_rows": [{"id": 2}]})  # existing namespaces keep working
    with pytest.raises(Forbidden, match="max_namespaces"):
        await db.write("c", {"upsert_rows": [{"id": 1}]})
    with pytest.raises(Forbidden, match="max_namespaces"):
        await db.write("c", {"create_namespace": True, "schema": {"id": "uint"}})
    await db.delete_namespace("b")
    await db.write("c", {"upsert_rows": [{"id": 1}]})  # room again after a delete
    assert sorted(n["id"] for n in (await db.list_namespaces())["namespaces"]) == ["a", "c"]


async def test_a_group_is_bounded_by_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Concurrent writes larger together than ``MAX_GROUP_BYTES`` are committed as several
    entries, none over the bound by more than its last request, and all of them land."""
    from lagoon.engine import writer

    monkeypatch.setattr(writer, "MAX_GROUP_BYTES", 3000)
    store = InstrumentedStore(MemoryStore())
    db = db_on(store)
    await db.write("ns", {"upsert_rows": [{"id": 0}]})
    body = {"upsert_rows": [{"id": i, "text": "x" * 90} for i in range(10)]}  # ~1 KB logical
    size = (await db.write("ns", body))["billing"]["billable_logical_bytes_written"]
    assert 900 < size < 1500
    committer = db.handle("default", "ns").committer
    before = committer.commits
    writes = [
        {"upsert_rows": [{"id": 100 * k + i, "text": "x" * 90} for i in range(10)]} for k in range(1, 13)
    ]
    await asyncio.gather(*(db.write("ns", w) for w in writes))
    entries = committer.commits - before
    per_group = -(-3000 // size)  # requests taken until their bytes reach the bound
    assert -(-12 // per_group) <= entries < 12  # grouped, but never more than the bound allows
    assert len(await docs(db)) == 10 + 120
