"""``lagoon namespaces``: every page, prefix filter, orgs, deleted namespaces left out."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lagoon.config import Settings
from lagoon.engine.database import Database
from lagoon.engine.ops.namespaces import iter_namespaces
from lagoon.storage import FsStore, MemoryStore

pytestmark = pytest.mark.anyio


async def test_follows_every_page_and_filters() -> None:
    db = Database(MemoryStore(), Settings())
    names = [f"ns-{i:03d}" for i in range(25)] + ["other"]
    for name in names:
        await db.write(name, {"upsert_rows": [{"id": 1}]})
    await db.write("x", {"upsert_rows": [{"id": 1}]}, org="acme")
    await db.delete_namespace("ns-007")
    listed = [n async for n in iter_namespaces(db, page_size=4)]
    assert listed == sorted(n for n in names if n != "ns-007")
    assert [n async for n in iter_namespaces(db, prefix="ns-01", page_size=3)] == [
        f"ns-01{i}" for i in range(10)
    ]
    assert [n async for n in iter_namespaces(db, org="acme")] == ["x"]
    await db.close()


def test_group_config_file_is_used(tmp_path: Path) -> None:
    root = tmp_path / "data"
    asyncio.run(_one(root))
    cfg = tmp_path / "lagoon.toml"
    cfg.write_text(f'[storage]\nbackend = "fs"\nroot = "{root}"\n', encoding="utf-8")
    from click.testing import CliRunner

    from lagoon.cli import main as admin

    for args in (["--config", str(cfg), "namespaces"], ["namespaces", "--config", str(cfg)]):
        result = CliRunner().invoke(admin.cli, args, catch_exceptions=False)
        assert result.exit_code == 0 and result.stdout.split() == ["only"], args
    bad = CliRunner().invoke(admin.cli, ["namespaces", "--set", "storage.buket=x"], catch_exceptions=False)
    assert bad.exit_code == 2 and "storage.buket" in bad.stderr


async def _one(root: Path) -> None:
    db = Database(FsStore(root), Settings())
    await db.write("only", {"upsert_rows": [{"id": 1}]})
    await db.close()
