"""A missing, truncated or bit-flipped segment file takes down only what needs it.

The namespace is built the real way (``Database.write`` + ``index_namespace``) on an fs bucket
with several segments; then one file of one segment is damaged by hand, as an operator's storage
incident would. Queries of that namespace answer ``DataCorruption`` naming the damaged object and
the repair command (no traceback, no generic error), other namespaces answer, and writes that do
not read documents (upserts) still commit; writes that must read documents (deletes, patches) fail with the same clear error.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from lagoon.config import Settings
from lagoon.engine.components import Components
from lagoon.engine.database import Database
from lagoon.engine.indexer import index_namespace
from lagoon.errors import DataCorruption
from lagoon.format.keys import NamespaceKeys
from lagoon.storage import FsStore
from tests.engine.damage import flipped, truncated

pytestmark = pytest.mark.anyio
KEYS = NamespaceKeys.of("default", "docs")
SCHEMA = {"t": {"type": "string", "full_text_search": True}}


def _missing(p: Path) -> None:
    p.unlink()


DAMAGE: dict[str, Callable[[Path], None]] = {
    "missing": _missing,
    "truncated": truncated,
    "bit-flipped": flipped,
}


async def _build(root: Path) -> FsStore:
    store = FsStore(str(root))
    settings = Settings()
    db = Database(store, settings)
    for batch in range(3):
        rows = [{"id": batch * 10 + i, "t": f"word{i} batch{batch}", "n": batch} for i in range(5)]
        await db.write("docs", {"upsert_rows": rows, **({"schema": SCHEMA} if batch == 0 else {})})
        out = await index_namespace(store, KEYS, settings, Components(), force=True)
        assert out.status == "committed"
    await db.write("other", {"upsert_rows": [{"id": 1, "t": "fine"}]})
    await db.close()
    return store


async def _ids(db: Database, namespace: str) -> list[int]:
    res = await db.query(namespace, {"rank_by": ["id", "asc"], "top_k": 100})
    return [row["id"] for row in res["rows"]]


@pytest.mark.parametrize(
    ("kind", "file"),
    [("missing", "docs"), ("truncated", "docs"), ("bit-flipped", "docs"), ("missing", "fts.t")],
)
async def test_damaged_segment_file_fails_queries_clearly_and_spares_the_rest(
    tmp_path: Path, kind: str, file: str
) -> None:
    store = await _build(tmp_path)
    segments = sorted({m.key.split("/")[3] async for m in store.list(KEYS.segment_prefix)})
    assert len(segments) == 3
    victim = KEYS.segment_file(segments[1], file)
    DAMAGE[kind](tmp_path / victim)

    db = Database(store, Settings())
    try:
        with pytest.raises(DataCorruption) as err:
            await db.query("docs", {"rank_by": ["id", "asc"], "top_k": 100})
        message = str(err.value)
        assert segments[1] in message
        assert ("missing" in message) if kind == "missing" else ("corrupt" in message)
        assert "lagoon repair" in message
        assert err.value.status == 409 and not err.value.retryable  # NamespaceDamaged: never retried

        # Other namespaces are unaffected.
        assert await _ids(db, "other") == [1]

        # Blind writes only append to the WAL: they commit, and are durable.
        res = await db.write("docs", {"upsert_rows": [{"id": 99, "t": "after", "n": 9}]})
        assert res["rows_upserted"] == 1
        wal = [m.key async for m in store.list(KEYS.wal_prefix)]
        # Writes that must read the documents (deletes count what they delete, patches merge)
        # fail with the same clear error and write nothing.
        for body in ({"deletes": [0]}, {"patch_rows": [{"id": 11, "n": 5}]}):
            with pytest.raises(DataCorruption, match="lagoon repair"):
                await db.write("docs", body)
        assert [m.key async for m in store.list(KEYS.wal_prefix)] == wal

        # A query asking for a segment that is still damaged keeps failing clearly, also after the
        # indexer folded the new writes into a newer manifest.
        out = await index_namespace(store, KEYS, Settings(), Components(), force=True)
        assert out.status == "committed"
        with pytest.raises(DataCorruption, match=segments[1]):
            await db.query("docs", {"rank_by": ["id", "asc"], "top_k": 100})
    finally:
        await db.close()


@pytest.mark.parametrize("kind", ["missing", "truncated"])
async def test_gc_keeps_the_wal_entries_of_a_segment_whose_file_is_missing_or_truncated(
    tmp_path: Path, kind: str
) -> None:
    """The WAL entries a segment was indexed from are the other copy of its rows: GC past grace
    does not delete them while the listing shows a file of that segment missing or cut short, so
    ``lagoon repair`` rebuilds the segment with every row; once repaired, GC deletes them."""
    from lagoon.engine import manifest_store
    from lagoon.engine.gc import collect_garbage
    from lagoon.engine.ops.repair import check_namespace

    store = await _build(tmp_path)
    latest = await manifest_store.read_latest(store, KEYS)
    assert latest is not None and [(s.seq_from, s.seq_to) for s in latest.segments] == [
        (1, 1),
        (2, 2),
        (3, 3),
    ]
    middle = latest.segments[1]
    DAMAGE[kind](tmp_path / KEYS.segment_prefix / middle.id / "docs")
    quick = Settings(indexer={"gc_grace_secs": 0.01})  # type: ignore[arg-type]
    time.sleep(0.1)

    await collect_garbage(store, KEYS, quick, Components())
    wal = sorted(p.name for p in (tmp_path / KEYS.wal_prefix).iterdir())
    assert wal == [Path(KEYS.wal(2)).name, Path(KEYS.wal(3)).name]  # entry 1's segment is intact

    report = await check_namespace(store, "default", "docs", dry_run=False)
    assert report.ok, [f.message for f in report.errors]
    db = Database(store, Settings())
    try:
        assert await _ids(db, "docs") == [b * 10 + i for b in range(3) for i in range(5)]
    finally:
        await db.close()
    time.sleep(0.1)
    await collect_garbage(store, KEYS, quick, Components())
    wal_dir = tmp_path / KEYS.wal_prefix
    assert not wal_dir.exists() or not list(wal_dir.iterdir())
