"""``lagoon bench`` runs end to end on a folder store and cleans up its scratch namespace."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from lagoon.cli.main import cli


def test_bench_runs_and_deletes_its_namespace(tmp_path: Path) -> None:
    root = tmp_path / "data"
    result = CliRunner().invoke(
        cli,
        ["bench", "--docs", "300", "--batch", "100", "--queries", "5", "--set", f"storage.root={root}"],
    )
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].split()[0] == "benchmark"
    names = [line.split(" (")[0] for line in lines[1:]]
    assert names == ["write", "vector top-10", "BM25 top-10", "vector top-10, filter 10%"]
    assert all(float(line.split()[-3]) > 0 for line in lines[1:])  # a positive rate on every row
    listing = CliRunner().invoke(cli, ["namespaces", "--set", f"storage.root={root}"])
    assert listing.exit_code == 0 and listing.output.strip() == ""


def test_bench_rejects_zero_sizes() -> None:
    result = CliRunner().invoke(cli, ["bench", "--docs", "0"])
    assert result.exit_code == 2 and "at least 1" in result.output
