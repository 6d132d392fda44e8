"""Fixtures of the operator-command tests: a clean environment and a CLI runner."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from lagoon.cli import main
from lagoon.logs import _LagoonHandler


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No LAGOON_* variable leaks in; no logging handler installed by a command leaks out."""
    for name in list(os.environ):
        if name.upper().startswith("LAGOON_"):
            monkeypatch.delenv(name)
    yield
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _LagoonHandler):
            root.removeHandler(handler)
    root.setLevel(logging.WARNING)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def run_lagoon(args: list[str], *, root: Path | None = None, input: str | None = None) -> Result:
    """``lagoon ARGS`` in-process; with ``root``, the fs backend in that folder."""
    extra = ["--set", "storage.backend=fs", "--set", f"storage.root={root}"] if root is not None else []
    command: click.Command = main.cli
    return CliRunner().invoke(command, [*args, *extra], input=input, catch_exceptions=False)
