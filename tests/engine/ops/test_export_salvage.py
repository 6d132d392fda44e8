"""``lagoon export --salvage``: every document some object of a damaged namespace still holds is
exported (a damaged segment is rebuilt in memory from its intact files or the WAL entries it
covers), and what is missing or was rebuilt is named (stderr, ``ExportStats``, the file's end
marker); a plain export of a damaged namespace is refused with a clear error and writes no file. The namespace is built the
real way on an fs bucket and damaged by hand (a segment file, an unindexed WAL entry)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from lagoon.config import Settings
from lagoon.engine.components import Components
from lagoon.engine.database import Database
from lagoon.engine.indexer import index_namespace
from lagoon.engine.ops.transfer import export_to_path, import_from_path
from lagoon.errors import DataCorruption
from lagoon.format.keys import NamespaceKeys
from lagoon.storage import FsStore
from tests.cli.conftest import run_lagoon

pytestmark = pytest.mark.anyio
KEYS = NamespaceKeys.of("default", "docs")


async def _build(root: Path) -> list[str]:
    """Segments of batches 0, 1, 2 (ids b*10 .. b*10+4), then an unindexed entry (ids 30..34)."""
    store = FsStore(str(root))
    db = Database(store, Settings())
    segments = []
    for batch in range(4):
        rows = [{"id": batch * 10 + i, "t": f"w{i} b{batch}"} for i in range(5)]
        await db.write("docs", {"upsert_rows": rows})
        if batch < 3:
            out = await index_namespace(store, KEYS, Settings(), Components(), force=True)
            assert out.status == "committed" and out.segment_id
            segments.append(out.segment_id)
    await db.close()
    await store.close()
    return segments


def _ids(path: Path) -> tuple[list[int], dict[str, object]]:
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    return [d["id"] for d in lines[1:-1]], lines[-1]


@pytest.mark.parametrize("what", ["segment-wal", "segment-nowal", "wal", "wal-hole"])
async def test_salvage_exports_what_reads_and_names_what_it_skipped(tmp_path: Path, what: str) -> None:
    """The export holds every document some object still holds: a damaged segment whose WAL
    entries are retained is read from them (nothing missing); once GC removed them its
    documents are missing and named; a damaged unindexed entry's documents are missing."""
    root = tmp_path / "bucket"
    segments = await _build(root)
    rebuilt = what == "segment-wal"
    if what.startswith("segment"):
        (root / KEYS.segment_file(segments[1], "docs")).unlink()
        if not rebuilt:
            (root / KEYS.wal(2)).unlink()  # what GC does once the grace period has passed
        lost, named = set() if rebuilt else set(range(10, 15)), segments[1]
    elif what == "wal":
        wal = root / KEYS.wal(4)
        wal.write_bytes(wal.read_bytes()[:40])
        lost, named = set(range(30, 35)), "wal/4: "
    else:  # entry 4 gone, entry 5 after the hole: readers stop at 3, the bucket still holds 5
        writer = Database(FsStore(str(root)), Settings())
        await writer.write("docs", {"upsert_rows": [{"id": 40 + i, "t": f"w{i} b4"} for i in range(5)]})
        await writer.close()
        (root / KEYS.wal(4)).unlink()
        lost, named = set(range(30, 35)), "wal/4: missing"
    out = tmp_path / "docs.jsonl"
    store = FsStore(str(root))
    db = Database(store, Settings())
    try:
        with pytest.raises(DataCorruption, match="--salvage") as err:
            await export_to_path(db, "docs", str(out))
        assert named in str(err.value)
        assert not out.exists() and not Path(f"{out}.partial").exists()

        before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
        stats = await export_to_path(db, "docs", str(out), salvage=True)
        assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before  # nothing written
        batches = 5 if what == "wal-hole" else 4
        want = sorted({b * 10 + i for b in range(batches) for i in range(5)} - lost)
        ids, end = _ids(out)
        assert ids == want and stats.documents == len(want)
        damage = stats.rebuilt if rebuilt else stats.skipped
        assert len(damage) == 1 and named in damage[0], (stats.rebuilt, stats.skipped)
        assert (stats.skipped == []) is rebuilt
        if rebuilt:
            assert "WAL entries 2..2" in damage[0] and "nothing missing" in damage[0]
        assert end["skipped"] == stats.skipped and end["rebuilt"] == stats.rebuilt

        restored = await import_from_path(db, "restored", str(out))
        assert restored.documents == len(want)
        res = await db.query(
            "restored", {"rank_by": ["id", "asc"], "top_k": 100, "include_attributes": ["t"]}
        )
        assert [r["id"] for r in res["rows"]] == want
        assert all(r["t"] == f"w{r['id'] % 10} b{r['id'] // 10}" for r in res["rows"])
    finally:
        await db.close()


def test_cli_export_salvage(tmp_path: Path) -> None:
    root = tmp_path / "bucket"
    segments = asyncio.run(_build(root))
    (root / KEYS.segment_file(segments[0], "docs")).write_bytes(b"garbage")
    out = tmp_path / "docs.jsonl"
    refused = run_lagoon(["export", "--namespace", "docs", "--out", str(out)], root=root)
    assert refused.exit_code != 0 and "--salvage" in refused.output and not out.exists()
    done = run_lagoon(["export", "--namespace", "docs", "--out", str(out), "--salvage"], root=root)
    assert done.exit_code == 0, done.output
    assert f"Rebuilt (damaged): segment {segments[0]}" in done.output  # from WAL entry 1
    assert _ids(out)[0] == [i for b in range(4) for i in range(b * 10, b * 10 + 5)]
