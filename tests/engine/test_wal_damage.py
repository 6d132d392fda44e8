"""A torn, corrupt or invalid WAL entry does not block its namespace until repair.

The namespace is written the real way (``Database.write``) on an fs bucket; then one unindexed
entry is damaged by hand (truncated, bit-flipped, or rewritten with a column of the wrong type as
an older build could have). A fresh node folds the damaged entry as empty (what `lagoon repair`
makes of it) and says so: every query's ``performance.damage`` names the entry and the repair
command; the other entries serve, writes commit after it, other namespaces are unaffected. The
indexer folds the entries before it and then fails on it, clearly, instead of folding it away.
After `lagoon repair` the same node serves without the flag and indexing goes on.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import msgspec
import pyarrow as pa
import pytest

from lagoon.config import Settings
from lagoon.engine.components import Components
from lagoon.engine.database import Database
from lagoon.engine.indexer import index_namespace
from lagoon.engine.ops.repair import check_namespace
from lagoon.errors import DataCorruption
from lagoon.format.framing import encode_frame
from lagoon.format.keys import NamespaceKeys
from lagoon.format.wal import MAGIC, decode_entry, table_to_ipc
from lagoon.storage import FsStore
from tests.engine.damage import flipped, truncated

pytestmark = pytest.mark.anyio
KEYS = NamespaceKeys.of("default", "docs")
SCHEMA = {"t": {"type": "string", "full_text_search": True}}


def _settings() -> Settings:
    return Settings(manifest={"poll_interval_ms": 1})  # type: ignore[arg-type]


def _wrong_type(p: Path) -> None:
    """Framed correctly, but the ``n`` column is a string: the schema says int."""
    entry = decode_entry(p.read_bytes())
    assert entry.docs is not None
    docs = entry.docs.set_column(
        entry.docs.column_names.index("n"), "n", pa.array(["x"] * entry.docs.num_rows)
    )
    body = {
        "seq": entry.seq,
        "nonce": entry.nonce,
        "created_at_ms": entry.created_at_ms,
        "writer": "old-build",
        "requests": 1,
        "docs": table_to_ipc(docs),
    }
    p.write_bytes(
        encode_frame(
            MAGIC, msgspec.msgpack.encode(body), format_version=1, min_reader_version=1, min_writer_version=1
        )
    )


DAMAGE: dict[str, Callable[[Path], None]] = {
    "truncated": truncated,
    "bit-flipped": flipped,
    "wrong-type": _wrong_type,
}


async def _build(root: Path) -> FsStore:
    store = FsStore(str(root))
    db = Database(store, _settings())
    for batch in range(4):  # seqs 1..4, ids batch*10 .. batch*10+4
        rows = [{"id": batch * 10 + i, "t": f"word{i} batch{batch}", "n": batch} for i in range(5)]
        await db.write("docs", {"upsert_rows": rows, **({"schema": SCHEMA} if batch == 0 else {})})
    await db.write("other", {"upsert_rows": [{"id": 1, "t": "fine"}]})
    await db.close()
    return store


async def _query(db: Database, namespace: str = "docs") -> tuple[list[int], list[str]]:
    res = await db.query(namespace, {"rank_by": ["id", "asc"], "top_k": 100})
    return [row["id"] for row in res["rows"]], res["performance"].get("damage", [])


@pytest.mark.parametrize("kind", sorted(DAMAGE))
async def test_damaged_wal_entry_is_skipped_and_named_until_repair(tmp_path: Path, kind: str) -> None:
    store = await _build(tmp_path)
    DAMAGE[kind](tmp_path / KEYS.wal(3))
    survivors = [i for b in (0, 1, 3) for i in range(b * 10, b * 10 + 5)]

    db = Database(store, _settings())
    try:
        ids, damage = await _query(db)
        assert ids == survivors
        assert len(damage) == 1 and damage[0].startswith("wal/3: ") and "lagoon repair" in damage[0]
        assert KEYS.root not in damage[0]  # named relative to the namespace: no object key in a body
        assert await _query(db, "other") == ([1], [])

        # Writes commit after the damaged entry, also those that read documents.
        res = await db.write("docs", {"upsert_rows": [{"id": 99, "t": "after", "n": 9}]})
        assert res["version"] == 5
        res = await db.write("docs", {"deletes": [0], "patch_rows": [{"id": 1, "n": 7}]})
        assert res["rows_deleted"] == 1 and res["rows_patched"] == 1
        ids, damage = await _query(db)
        assert ids == [*survivors[1:], 99] and len(damage) == 1

        # The indexer folds what precedes the damage, then refuses to fold it away.
        out = await index_namespace(store, KEYS, _settings(), Components(), force=True)
        assert out.status == "committed" and out.indexed_through == 2
        with pytest.raises(DataCorruption) as err:
            await index_namespace(store, KEYS, _settings(), Components(), force=True)
        assert "wal/3: " in str(err.value) and "lagoon repair" in str(err.value)

        # the dry run says what a node does meanwhile: queries skip the entry, the indexer stops
        plan = await check_namespace(store, "default", "docs", dry_run=True)
        (finding,) = [f for f in plan.errors if f.message.startswith("WAL entry 3 is unreadable")]
        assert "queries skip it" in finding.message and "the indexer stops at it" in finding.message

        report = await check_namespace(store, "default", "docs", dry_run=False)
        assert report.ok, [f.message for f in report.errors]
        ids, damage = await _query(db)  # the same node: the slot reads now
        assert ids == [*survivors[1:], 99] and damage == []
        out = await index_namespace(store, KEYS, _settings(), Components(), force=True)
        assert out.status == "committed" and out.indexed_through == 6
    finally:
        await db.close()
    fresh = Database(store, _settings())
    try:
        assert await _query(fresh) == ([*survivors[1:], 99], [])
    finally:
        await fresh.close()


async def test_entry_restored_in_place_is_read_again(tmp_path: Path) -> None:
    """A damaged read that later reads (the object restored from bucket versioning) is folded
    for real: nothing of it stays skipped."""
    store = await _build(tmp_path)
    path = tmp_path / KEYS.wal(3)
    good = path.read_bytes()
    flipped(path)
    db = Database(store, _settings())
    try:
        ids, damage = await _query(db)
        assert 20 not in ids and len(damage) == 1
        await db.write("docs", {"upsert_rows": [{"id": 21, "t": "newer", "n": 5}]})
        path.write_bytes(good)
        ids, damage = await _query(db)
        assert damage == [] and ids == sorted([*range(5), *range(10, 15), *range(20, 25), *range(30, 35)])
        res = await db.query(
            "docs",
            {"filters": ["id", "Eq", 21], "rank_by": ["id", "asc"], "top_k": 1, "include_attributes": ["n"]},
        )
        assert res["rows"][0]["n"] == 5
    finally:
        await db.close()


async def _build_schema_change(root: Path) -> FsStore:
    """seqs 1..4; seq 2 creates the attributes ``v`` (declared [2]f32 with ANN) and ``label``
    (inferred), which seqs 3 and 4 use without changing the schema again."""
    store = FsStore(str(root))
    db = Database(store, _settings())
    await db.write("docs", {"upsert_rows": [{"id": 0, "t": "zero", "n": 0}], "schema": SCHEMA})
    await db.write(
        "docs",
        {
            "upsert_rows": [{"id": 1, "t": "one", "n": 1, "v": [1.0, 0.0], "label": "a"}],
            "schema": {"v": {"type": "[2]f32", "ann": True}},
            "distance_metric": "euclidean_squared",
        },
    )
    await db.write("docs", {"upsert_rows": [{"id": 2, "t": "two", "n": 2, "v": [0.0, 1.0], "label": "b"}]})
    await db.write("docs", {"upsert_rows": [{"id": 3, "t": "three", "n": 3, "label": "c"}]})
    await db.close()
    return store


async def _rows(db: Database) -> dict[int, dict[str, object]]:
    res = await db.query("docs", {"rank_by": ["id", "asc"], "top_k": 100, "include_attributes": True})
    return {row.pop("id"): {k: v for k, v in row.items() if v is not None} for row in res["rows"]}


@pytest.mark.parametrize("kind", ["truncated", "bit-flipped"])
async def test_entries_after_a_damaged_schema_change_still_fold(tmp_path: Path, kind: str) -> None:
    """The damaged entry declared attributes the later entries use: readers fold the later
    entries under the schema their own tables declare, so only the damaged entry's documents
    are missing; repair keeps that schema in the empty entry it puts in the slot (the later
    entries stay valid for every reader and the indexer) and reports what is lost."""
    store = await _build_schema_change(tmp_path)
    DAMAGE[kind](tmp_path / KEYS.wal(2))
    want = {
        0: {"t": "zero", "n": 0},
        2: {"t": "two", "n": 2, "v": [0.0, 1.0], "label": "b"},
        3: {"t": "three", "n": 3, "label": "c"},
    }
    db = Database(store, _settings())
    try:
        assert await _rows(db) == want
        _, damage = await _query(db)
        assert len(damage) == 1 and damage[0].startswith("wal/2: ")
        res = await db.query("docs", {"filters": ["label", "Eq", "c"], "rank_by": ["id", "asc"], "top_k": 5})
        assert [r["id"] for r in res["rows"]] == [3]
        # the distance metric was set by the lost entry only: a vector write names it again
        body = {
            "upsert_rows": [{"id": 4, "label": "d", "v": [1.0, 1.0]}],
            "distance_metric": "euclidean_squared",
        }
        await db.write("docs", body)

        report = await check_namespace(store, "default", "docs", dry_run=False)
        assert report.ok, [f.message for f in report.errors]
        [lost] = [f for f in report.findings if f.check == "wal" and f.severity == "error"]  # entry 2 only
        assert lost.fixed and "the schema changed there" in lost.message, lost.message
        assert "label (string), v ([2]f32)" in lost.message and "recovered schema" in lost.fix
        out = await index_namespace(store, KEYS, _settings(), Components(), force=True)
        assert out.status == "committed" and out.indexed_through == 5
        assert (await check_namespace(store, "default", "docs")).ok
    finally:
        await db.close()
    fresh = Database(store, _settings())
    try:
        assert await _rows(fresh) == {**want, 4: {"label": "d", "v": [1.0, 1.0]}}
        assert (await _query(fresh))[1] == []
    finally:
        await fresh.close()
