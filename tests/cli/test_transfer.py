"""The `lagoon` command line of tests/engine/ops/test_transfer.py: the same operations through the CLI
shell (flags, output, exit status)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from lagoon.config import Settings
from lagoon.engine.database import Database
from tests.cli.conftest import run_lagoon
from tests.engine.ops.test_transfer import doc, fill

pytestmark = pytest.mark.anyio


def test_cli_export_import_round_trip(tmp_path: Path) -> None:
    root = tmp_path / "data"

    async def setup() -> None:
        from lagoon.storage import FsStore

        database = Database(FsStore(root), Settings())
        await fill(database, "docs", [doc(i) for i in range(1, 40)])
        await database.close()

    asyncio.run(setup())
    out = tmp_path / "docs.jsonl"
    result = run_lagoon(["export", "--namespace", "docs", "--out", str(out), "--page-size", "10"], root=root)
    assert result.exit_code == 0, result.output
    assert "Exported 39 documents" in result.stderr and not (tmp_path / "docs.jsonl.partial").exists()
    result = run_lagoon(["import", "--namespace", "copy", "--in", str(out), "--batch-size", "8"], root=root)
    assert result.exit_code == 0, result.output
    assert "imported 39 documents in 5 writes" in result.stderr
    again = run_lagoon(["import", "--namespace", "copy", "--in", str(out)], root=root)
    assert again.exit_code == 1 and "already exists" in again.stderr
    resumed = run_lagoon(["import", "--namespace", "copy", "--in", str(out), "--allow-existing"], root=root)
    assert resumed.exit_code == 0, resumed.output
    stdout = run_lagoon(["export", "--namespace", "copy", "--out", "-"], root=root)
    assert stdout.exit_code == 0
    exported = [json.loads(line) for line in stdout.stdout.splitlines()]
    original = [json.loads(line) for line in out.read_text().splitlines()]
    assert exported[1:] == original[1:] and exported[0]["namespace"] == "copy"
    piped = run_lagoon(["import", "--namespace", "piped", "--in", "-"], root=root, input=out.read_text())
    assert piped.exit_code == 0, piped.output
    listed = run_lagoon(["namespaces"], root=root)
    assert listed.stdout.split() == ["copy", "docs", "piped"]


def test_cli_errors_exit_nonzero(tmp_path: Path) -> None:
    root = tmp_path / "data"
    missing = run_lagoon(["export", "--namespace", "nope", "--out", str(tmp_path / "x.jsonl")], root=root)
    assert missing.exit_code == 1 and "nope" in missing.stderr and not (tmp_path / "x.jsonl").exists()
    bad_name = run_lagoon(["export", "--namespace", "no/slash", "--out", "x"], root=root)
    assert bad_name.exit_code == 2
    no_file = run_lagoon(["import", "--namespace", "a", "--in", str(tmp_path / "absent.jsonl")], root=root)
    assert no_file.exit_code == 1 and "absent.jsonl" in no_file.stderr
