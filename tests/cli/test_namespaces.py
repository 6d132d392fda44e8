"""The `lagoon` command line of tests/engine/ops/test_namespaces.py: the same operations through the CLI
shell (flags, output, exit status)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lagoon.config import Settings
from lagoon.engine.database import Database
from lagoon.storage import FsStore
from tests.cli.conftest import run_lagoon

pytestmark = pytest.mark.anyio


def test_cli_lists_names(tmp_path: Path) -> None:
    root = tmp_path / "data"

    async def setup() -> None:
        db = Database(FsStore(root), Settings())
        for name in ("b", "a", "c-1", "c-2"):
            await db.write(name, {"upsert_rows": [{"id": 1}]})
        await db.write("z", {"upsert_rows": [{"id": 1}]}, org="acme")
        await db.close()

    asyncio.run(setup())
    assert run_lagoon(["namespaces"], root=root).stdout.split() == ["a", "b", "c-1", "c-2"]
    assert run_lagoon(["namespaces", "--prefix", "c-"], root=root).stdout.split() == ["c-1", "c-2"]
    assert run_lagoon(["namespaces", "--org", "acme"], root=root).stdout.split() == ["z"]
    assert run_lagoon(["namespaces", "--org", "Bad_Org"], root=root).exit_code == 2
    empty = run_lagoon(["namespaces"], root=tmp_path / "empty")
    assert empty.exit_code == 0 and empty.stdout == ""
