"""The `lagoon` command line of tests/engine/ops/test_doctor.py: the same operations through the CLI
shell (flags, output, exit status)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.conftest import run_lagoon


def test_cli_doctor_on_fs(tmp_path: Path) -> None:
    result = run_lagoon(["doctor", "--rounds", "20", "--threads", "2"], root=tmp_path / "store")
    assert result.exit_code == 0, result.output
    # 20 rounds cannot vouch for the store (60 contended rounds are needed): it says so plainly
    assert "WARN  create-race: 20 rounds x 4 writers" in result.stdout and "inconclusive" in result.stdout
    assert "INCONCLUSIVE: create-race, if-match-race" in result.stdout
    assert "OK: the store provides every guarantee" not in result.stdout
    as_json = run_lagoon(["doctor", "--rounds", "5", "--json"], root=tmp_path / "store")
    report = json.loads(as_json.stdout)
    assert report["ok"] is True and {c["check"] for c in report["checks"]} >= {"create-race", "clock"}


def test_cli_doctor_on_memory_has_no_second_process() -> None:
    result = run_lagoon(["doctor", "--rounds", "5", "--set", "storage.backend=memory"])
    assert result.exit_code == 0, result.output
    assert "no second process" in result.stdout
