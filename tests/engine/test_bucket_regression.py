"""A bucket that goes back (restored from an older backup, or recreated) is noticed: a node
drops what it cached for the namespace and reads the bucket again, so strong reads never answer
from state the bucket no longer holds, and writes never build on it.

The bucket is an fs folder; the "backup" is a copy of it taken mid-way, put back while a node
that read the newer state keeps running (as after a restore from bucket versioning)."""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest

from lagoon.config import Settings
from lagoon.engine.components import Components
from lagoon.engine.database import Database
from lagoon.engine.indexer import index_namespace
from lagoon.engine.writer import HEAD_SEEN_SECS
from lagoon.format.keys import NamespaceKeys
from lagoon.storage import FsStore

pytestmark = pytest.mark.anyio
KEYS = NamespaceKeys.of("default", "docs")


def _settings() -> Settings:
    return Settings(manifest={"poll_interval_ms": 1}, indexer={"flush_interval_secs": 0.01})  # type: ignore[arg-type]


async def _write(db: Database, ids: range, tag: str) -> None:
    await db.write("docs", {"upsert_rows": [{"id": i, "t": tag} for i in ids]})


async def _read(db: Database, **consistency: Any) -> dict[int, str]:
    body: dict[str, Any] = {"rank_by": ["id", "asc"], "top_k": 100, "include_attributes": ["t"]}
    if consistency:
        body["consistency"] = consistency
    res = await db.query("docs", body)
    return {r["id"]: r["t"] for r in res["rows"]}


def _copy_present(src: str, dst: str) -> None:
    """copy2, but a file the node removed meanwhile (a queue or temp file) is skipped."""
    try:
        shutil.copy2(src, dst)
    except FileNotFoundError:
        pass


def _backup(root: Path, backup: Path) -> None:
    """A copy of the live bucket folder: files that vanish while it is copied are left out."""
    shutil.copytree(root, backup, ignore=shutil.ignore_patterns(".tmp-*"), copy_function=_copy_present)


def _restore(backup: Path, root: Path) -> None:
    shutil.rmtree(root)
    shutil.copytree(backup, root)


@pytest.mark.parametrize("indexed", [False, True], ids=["wal-tail", "indexed"])
async def test_a_node_drops_its_cache_when_the_bucket_goes_back(tmp_path: Path, indexed: bool) -> None:
    root, backup = tmp_path / "bucket", tmp_path / "backup"
    store = FsStore(str(root))
    node = Database(store, _settings())
    await _write(node, range(3), "old")
    if indexed:
        assert (
            await index_namespace(store, KEYS, _settings(), Components(), force=True)
        ).status == "committed"
    _backup(root, backup)
    await _write(node, range(3, 6), "new")
    await _write(node, range(1), "new")
    if indexed:
        assert (
            await index_namespace(store, KEYS, _settings(), Components(), force=True)
        ).status == "committed"
    assert await _read(node) == {0: "new", 1: "old", 2: "old", 3: "new", 4: "new", 5: "new"}

    _restore(backup, root)
    want = {0: "old", 1: "old", 2: "old"}
    assert await _read(node) == want  # strong: the bucket's state, not the node's cache

    # Writes build on what the bucket holds: a fresh node sees them, and nothing is hidden
    # behind a hole in the WAL.
    await _write(node, range(7, 8), "after")
    fresh = Database(store, _settings())
    try:
        assert await _read(fresh) == {**want, 7: "after"}
    finally:
        await fresh.close()
    await node.close()


async def test_a_bucket_that_grew_again_after_the_restore_is_read_again(tmp_path: Path) -> None:
    """Another node wrote after the restore: the same seqs now hold other entries."""
    root, backup = tmp_path / "bucket", tmp_path / "backup"
    store = FsStore(str(root))
    node = Database(store, _settings())
    await _write(node, range(2), "old")
    _backup(root, backup)
    await _write(node, range(2, 3), "lost")
    assert await _read(node) == {0: "old", 1: "old", 2: "lost"}
    _restore(backup, root)
    other = Database(store, _settings())
    await _write(other, range(10, 14), "other")  # seq 2 again, holding another entry
    await other.close()
    assert await _read(node) == {0: "old", 1: "old", 10: "other", 11: "other", 12: "other", 13: "other"}
    await node.close()


async def test_a_branch_read_from_its_parents_wal_is_not_taken_for_a_bucket_gone_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A branch's head can be an entry of its parent's WAL (its fork range): what its view rests
    on is there, not under the branch's own prefix, so refreshes keep the cache."""
    store = FsStore(str(tmp_path))
    writer = Database(store, _settings())
    await _write(writer, range(3), "old")
    await _write(writer, range(3, 4), "old")
    await writer.branch("br", "docs")
    await writer.close()
    node = Database(store, _settings())
    try:
        with caplog.at_level(logging.WARNING, logger="lagoon.state"):
            for _ in range(3):
                res = await node.query("br", {"rank_by": ["id", "asc"], "top_k": 10})
                assert [r["id"] for r in res["rows"]] == [0, 1, 2, 3]
        assert not [r for r in caplog.records if "no longer holds" in r.getMessage()]
    finally:
        await node.close()


async def test_a_write_within_one_poll_interval_of_a_restore_builds_on_the_real_head(tmp_path: Path) -> None:
    """The node polls rarely (a minute), so no refresh runs between the restore and its next
    write: the commit itself must notice that the head it would build on is gone, or it would
    create the entry above a hole (the slot is free there too) where no reader looks. (A commit
    within ``HEAD_SEEN_SECS`` of the node's last one skips the check: a restore takes longer.)"""
    root, backup = tmp_path / "bucket", tmp_path / "backup"
    store = FsStore(str(root))
    rare = Settings(manifest={"poll_interval_ms": 60_000})  # type: ignore[arg-type]
    node = Database(store, rare)
    await _write(node, range(2), "old")
    _backup(root, backup)
    await _write(node, range(2, 4), "lost")
    await _write(node, range(4, 5), "lost")
    _restore(backup, root)
    await asyncio.sleep(HEAD_SEEN_SECS)
    await _write(node, range(10, 12), "after")  # no read in between: only the commit can tell
    assert sorted(p.name for p in (root / KEYS.wal_prefix).iterdir()) == [
        Path(KEYS.wal(1)).name,
        Path(KEYS.wal(2)).name,
    ]
    fresh = Database(store, _settings())
    try:
        assert await _read(fresh) == {0: "old", 1: "old", 10: "after", 11: "after"}
    finally:
        await fresh.close()
    await node.close()
