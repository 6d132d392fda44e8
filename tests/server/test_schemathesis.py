"""Schemathesis against ``/openapi.json`` of a live server (reliability plan T14).

Checks ``not_a_server_error`` (nothing a client can send gets a 5xx) and
``response_schema_conformance`` (every response matches the document), with a bounded number of
examples per operation. The one documented 5xx, 501 for ``branch`` with ``at_version``, is allowed
for that operation only. The default run uses a fixed seed so failures replay; the ``slow`` run
uses many more examples, a fresh seed, and one pass per role with auth on. Two more slow passes,
with auth on (so a request without the key is negative data too):

- positive mode (requests the document allows): every status, content type and header of every
  response is documented as well as its body;
- negative mode (requests the document forbids: wrong types, patterns, missing parts): every one
  is refused with a 4xx (``negative_data_rejection``), none gets a 5xx.

Positive data is not required to be accepted: the document cannot say every rule a write or query
obeys (a copy cannot be combined with documents, ``rerank_by`` only at the top of a multi-query),
so a schema-valid request may still be a 400 that names the rule.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from lagoon.auth import create_key
from lagoon.server.openapi import build_openapi

from .conftest import REPO, LiveServer

CONFIG = """\
[[operations]]
include-operation-id = "branchNamespace"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "501"]
"""


DEFAULT_CHECKS = "not_a_server_error,response_schema_conformance"
CONFORMANCE = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_headers_conformance,response_schema_conformance"
)


def run_schemathesis(
    server: LiveServer,
    tmp_path: Path,
    *,
    examples: int,
    seed: int | None,
    headers: tuple[str, ...] = (),
    mode: str = "all",
    checks: str = DEFAULT_CHECKS,
) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    cmd = [
        str(REPO / ".venv" / "bin" / "schemathesis"),
        "--config-file",
        str(config),
        "--no-color",
        "run",
        f"{server.url}/openapi.json",
        "--checks",
        checks,
        "--mode",
        mode,
        "--max-examples",
        str(examples),
        "--generation-database",
        "none",
        "--workers",
        "1",
        "--request-timeout",
        "30",
    ]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    for header in headers:
        cmd += ["--header", header]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=1800)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-20000:] + "\n--- server log ---\n" + server.log()[-5000:]
    selected = re.search(r"Selected: (\d+)/(\d+)", output)
    tested = re.search(r"Tested: (\d+)", output)
    assert selected and tested, output[-3000:]
    assert selected.group(1) == selected.group(2) == tested.group(1), output[-3000:]
    assert int(tested.group(1)) >= len(build_openapi()["paths"]), output[-3000:]


def test_schemathesis_default(live_server: LiveServer, tmp_path: Path) -> None:
    run_schemathesis(live_server, tmp_path, examples=50, seed=20260601)


@pytest.mark.slow
def test_schemathesis_many_examples(live_server: LiveServer, tmp_path: Path) -> None:
    run_schemathesis(live_server, tmp_path, examples=500, seed=None)


def admin_server(tmp_path: Path) -> tuple[LiveServer, str]:
    keys_file = tmp_path / "keys.toml"
    key, _ = create_key(keys_file, "acme", "admin")
    server = LiveServer(tmp_path / "data", tmp_path / "server.log", LAGOON_AUTH__KEYS_FILE=str(keys_file))
    return server, f"Authorization: Bearer {key}"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "checks"),
    [("positive", CONFORMANCE), ("negative", "not_a_server_error,negative_data_rejection")],
    ids=["positive-conforms", "negative-refused"],
)
def test_schemathesis_by_mode_with_auth(tmp_path: Path, mode: str, checks: str) -> None:
    server, header = admin_server(tmp_path)
    try:
        run_schemathesis(
            server, tmp_path, examples=100, seed=None, headers=(header,), mode=mode, checks=checks
        )
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.parametrize("role", ["reader", "writer", "admin"])
def test_schemathesis_per_role_with_auth(tmp_path: Path, role: str) -> None:
    keys_file = tmp_path / "keys.toml"
    key, _ = create_key(keys_file, "acme", role)
    server = LiveServer(tmp_path / "data", tmp_path / "server.log", LAGOON_AUTH__KEYS_FILE=str(keys_file))
    try:
        run_schemathesis(server, tmp_path, examples=100, seed=None, headers=(f"Authorization: Bearer {key}",))
    finally:
        server.stop()
