"""FsStore specifics: crash safety of puts (no torn object, temp files swept), layout limits."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lagoon.storage import (
    AlreadyExists,
    FsStore,
    IfMatch,
    InvalidKey,
    ObjectNotFound,
    PutMode,
    StorageError,
    StoreUnavailable,
)
from lagoon.storage.fs import LOCK_DIR

pytestmark = pytest.mark.anyio


class Crash(BaseException):
    """Stands for the process dying: not an Exception, so nothing may swallow it."""


def temp_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob(".tmp-*"))


@pytest.mark.parametrize(("mode", "call"), [(PutMode.CREATE, "link"), (PutMode.OVERWRITE, "replace")])
async def test_crash_between_temp_write_and_publish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, call: str
) -> None:
    root = tmp_path / "store"
    store = FsStore(root)
    await store.put("keep/old", b"old object")

    def crash(*args: object, **kwargs: object) -> None:
        raise Crash

    with monkeypatch.context() as m:
        m.setattr(os, call, crash)
        m.setattr(os, "unlink", lambda *a, **k: None)  # a dead process cleans nothing up
        with pytest.raises(Crash):
            await store.put("wal/00000001.wal", b"new entry", mode)
        with pytest.raises(Crash):
            await store.put("keep/old", b"new object", mode)
    assert not (root / "wal" / "00000001.wal").exists()  # absent, not torn
    with pytest.raises(ObjectNotFound):
        await store.get("wal/00000001.wal")
    assert await store.get("keep/old") == b"old object"  # untouched
    assert len(temp_files(root)) == 2
    assert [m.key async for m in store.list("")] == ["keep/old"]  # temp files are never listed

    assert FsStore(root).swept == 0  # younger than the grace period: maybe a live writer's
    assert len(temp_files(root)) == 2
    assert FsStore(root, sweep_grace_secs=0).swept == 2
    assert temp_files(root) == []


CRASHING_WRITER = """
import asyncio, os, sys
from lagoon.storage import FsStore, PutMode
store = FsStore(sys.argv[1])
asyncio.run(store.put("stays", b"before the crash"))
os.link = lambda *a, **k: os._exit(17)  # die between the fsynced temp file and publishing it
asyncio.run(store.put("wal/1", b"x" * 100_000, PutMode.CREATE))
"""


def test_killed_writer_leaves_no_object_and_its_temp_is_swept(tmp_path: Path) -> None:
    root = tmp_path / "store"
    proc = subprocess.run(
        [sys.executable, "-c", CRASHING_WRITER, str(root)], capture_output=True, timeout=120
    )
    assert proc.returncode == 17, proc.stderr.decode()
    assert not (root / "wal" / "1").exists()
    [leftover] = temp_files(root)
    assert leftover.stat().st_size == 100_000
    old = time.time() - 3600
    os.utime(leftover, (old, old))
    store = FsStore(root)
    assert store.swept == 1
    assert temp_files(root) == []
    assert sorted(p.name for p in root.rglob("*") if p.is_file() and LOCK_DIR not in p.parts) == ["stays"]


async def test_failed_publish_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "store"
    store = FsStore(root)

    def disk_error(*args: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", disk_error)
    with pytest.raises(StoreUnavailable):
        await store.put("k", b"v")
    monkeypatch.undo()
    assert temp_files(root) == []
    with pytest.raises(ObjectNotFound):
        await store.get("k")


async def test_object_and_folder_cannot_share_a_name(tmp_path: Path) -> None:
    store = FsStore(tmp_path)
    await store.put("a", b"object")
    with pytest.raises(StorageError) as info:
        await store.put("a/b", b"below an object")
    assert not info.value.transient
    await store.put("d/e", b"1")
    for mode in (PutMode.OVERWRITE, PutMode.CREATE):
        with pytest.raises(StorageError) as info:
            await store.put("d", b"over a folder", mode)
        assert not isinstance(info.value, AlreadyExists)
    with pytest.raises(ObjectNotFound):
        await store.get("d")
    await store.delete("d")  # a folder is not an object: nothing to delete
    assert await store.get("d/e") == b"1"


async def test_etag_changes_on_every_write(tmp_path: Path) -> None:
    store = FsStore(tmp_path)
    etags = {(await store.put("k", b"same bytes")).etag for _ in range(50)}
    assert len(etags) == 50
    current = await store.head("k")
    await store.put("k", b"same bytes", IfMatch(current.etag or ""))


async def test_internal_files_are_invisible_and_folders_pruned(tmp_path: Path) -> None:
    store = FsStore(tmp_path)
    v1 = await store.put("ns/a/x", b"1")
    await store.put("ns/a/x", b"2", IfMatch(v1.etag or ""))  # creates lock files
    assert (tmp_path / LOCK_DIR).is_dir()
    (tmp_path / "ns" / "b").mkdir()
    (tmp_path / "ns" / "b" / ".tmp-deadbeef").write_bytes(b"half")  # a folder with only a temp file
    assert await store.list_prefixes("") == ["ns/"]
    assert await store.list_prefixes("ns/") == ["ns/a/"]
    assert [m.key async for m in store.list("")] == ["ns/a/x"]
    await store.delete("ns/a/x")
    assert not (tmp_path / "ns" / "a").exists()  # empty folders go away with their last object
    with pytest.raises(InvalidKey):
        await store.put("../escape", b"x")
    assert not (tmp_path.parent / "escape").exists()
    await store.close()


async def test_large_reads_and_writes_run_in_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    calls: list[str] = []
    real = asyncio.to_thread

    async def spy(fn: object, /, *args: object) -> object:
        calls.append(getattr(fn, "__name__", "?"))
        return await real(fn, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(asyncio, "to_thread", spy)
    store = FsStore(tmp_path, inline_read_bytes=1000)
    await store.put("small", b"x" * 10)
    await store.put("large", b"x" * 5000)
    calls.clear()
    await store.get("small")
    await store.head("large")
    assert calls == []  # inline: a thread hop costs more than the read
    await store.get("large")
    await store.get_ranges("large", [(0, 3000)])
    assert calls == ["_read_sync", "_read_sync"]
