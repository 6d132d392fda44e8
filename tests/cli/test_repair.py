"""The `lagoon` command line of tests/engine/ops/test_repair.py: the same operations through the CLI
shell (flags, output, exit status)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from lagoon.storage import FsStore
from tests.cli.conftest import run_lagoon
from tests.engine.ops.test_repair import build

pytestmark = pytest.mark.anyio


def test_cli_repair(tmp_path: Path) -> None:
    root = tmp_path / "data"

    async def setup() -> None:
        fs = FsStore(root)
        await build(fs, "good")
        keys = await build(fs, "bad")
        await fs.put(keys.current, b"garbage")
        await build(fs, "other", org="acme")
        await fs.close()

    asyncio.run(setup())
    dry = run_lagoon(["repair", "--dry-run"], root=root)
    assert dry.exit_code == 1, dry.output
    assert "default/bad: 1 error " in dry.stdout and "default/good: OK" in dry.stdout
    assert "acme/other" not in dry.stdout and "errors remain in default/bad" in dry.stderr
    one = run_lagoon(["repair", "--dry-run", "--namespace", "good", "--json"], root=root)
    assert one.exit_code == 0 and [n["namespace"] for n in json.loads(one.stdout)["namespaces"]] == ["good"]
    fixed = run_lagoon(["repair"], root=root)
    assert fixed.exit_code == 0 and "1 fix applied" in fixed.stdout
    current = (root / "default" / "bad" / "manifest" / "CURRENT").read_bytes()
    assert current == (root / "default" / "bad" / "manifest" / f"{3:020d}.json").read_bytes()
    everything = run_lagoon(["repair", "--dry-run", "--all-orgs"], root=root)
    assert everything.exit_code == 0 and "acme/other: OK" in everything.stdout
    usage = run_lagoon(["repair", "--all-orgs", "--org", "acme"], root=root)
    assert usage.exit_code == 2
