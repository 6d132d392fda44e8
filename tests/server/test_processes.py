"""Several serving processes behind one port (``server.processes``): a real ``lagoon-server``.

The supervisor starts N serving children plus, with the embedded indexer, one niced indexer
child; they share the listening socket, the bucket and the disk cache. These tests check what a
user of such a node relies on: every process serves the same data (strong reads see writes made
through any process), ``/metrics`` counts the whole node, a crashed child is replaced while the
others keep serving, and a stop signal drains and leaves no process behind.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from lagoon.cli.server import TUNED_MALLOC, tune_allocator
from lagoon.config import Settings, load_settings
from lagoon.server.processes import child_settings, resolve_processes, usable_cpus
from tests.server.conftest import LiveServer


def children(pid: int) -> list[int]:
    out: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            out += [int(c) for c in f.read().split()]
    return out


def cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode()


def nice_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[16])


def environ_of(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        pairs = [kv.decode().partition("=") for kv in f.read().split(b"\0") if kv]
    return {k: v for k, _, v in pairs}


def test_the_server_tunes_the_allocator_unless_the_environment_does() -> None:
    env = {"PATH": "/bin"}
    assert tune_allocator(env) == TUNED_MALLOC and env == {"PATH": "/bin", **TUNED_MALLOC}
    own = {"MALLOC_ARENA_MAX": "4", "MALLOC_MMAP_THRESHOLD_": "131072"}  # an operator's choice is kept
    assert tune_allocator(own) == {} and own == {"MALLOC_ARENA_MAX": "4", "MALLOC_MMAP_THRESHOLD_": "131072"}


def roles(pid: int) -> dict[str, int]:
    out = {}
    for c in children(pid):
        m = re.search(r"lagoon\.server\.processes (\S+)", cmdline(c))
        if m:
            out[m.group(1)] = c
    return out


def fresh(url: str, method: str, path: str, **kw: object) -> httpx.Response:
    """One request on a new connection (the kernel hands each connection to an idle process)."""
    with httpx.Client(base_url=url, timeout=30) as c:
        return c.request(method, path, **kw)  # type: ignore[arg-type]


def counter(text: str, route: str, status: str = "200") -> float:
    total = 0.0
    for line in text.splitlines():
        labels = f'route="{route}"' in line and f'status="{status}"' in line
        if line.startswith("lagoon_http_requests_total{") and labels:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_the_supervisor_imports_no_engine() -> None:
    """The supervisor of several serving processes never serves: what it imports (lagoon-server's
    command, lagoon.server, lagoon.server.processes) leaves out the app, the engine and numba, so
    its children start at once instead of after an import they repeat anyway."""
    code = (
        "import sys, lagoon.cli.server, lagoon.server, lagoon.server.processes; "
        "print(sorted(m for m in ('lagoon.server.app', 'lagoon.engine.database', 'lagoon.engine.routing', "
        "'lagoon.server.audit', 'numba', 'scipy', 'pyarrow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    from lagoon.server import create_app  # still importable from the package, when asked for

    assert callable(create_app)


def test_auto_processes_follow_the_usable_cpus() -> None:
    assert usable_cpus() >= 1
    auto = Settings()
    assert auto.server.processes == 0
    assert resolve_processes(auto) == min(usable_cpus(), 16)
    fixed = load_settings(overrides={"server": {"processes": 3}}, environ=False)
    assert resolve_processes(fixed) == 3
    # a memory store lives in one process: never split it
    memory = load_settings(
        overrides={"server": {"processes": 3}, "storage": {"backend": "memory"}}, environ=False
    )
    assert resolve_processes(memory) == 1
    # each serving process gets an equal share of the node's memory cache, and never the indexer
    s = load_settings(
        overrides={"server": {"embedded_indexer": True}, "cache": {"memory_bytes": 1000}}, environ=False
    )
    child = child_settings(s, 4)
    assert child.cache.memory_bytes == 250
    assert child.server.embedded_indexer is False and child.server.processes == 1


def test_processes_serve_one_node(tmp_path: Path) -> None:
    server = LiveServer(
        tmp_path / "data",
        tmp_path / "server.log",
        ("--set", "server.processes=2", "--embedded-indexer"),
    )
    try:
        r = roles(server.proc.pid)
        assert set(r) == {"server-0", "server-1", "indexer"}, server.log()
        for pid in r.values():  # every process runs with the tuned allocator (lagoon.cli.server)
            assert environ_of(pid).items() >= TUNED_MALLOC.items(), environ_of(pid)
        own = os.getpriority(os.PRIO_PROCESS, 0)
        assert nice_of(r["indexer"]) == min(19, own + 10) and nice_of(r["server-0"]) == own

        # writes and strong reads on fresh connections, spread over both processes
        for i in range(12):
            body = {
                "upsert_rows": [{"id": i, "vector": [1.0, float(i)]}],
                "distance_metric": "euclidean_squared",
            }
            assert fresh(server.url, "POST", "/v2/namespaces/multi", json=body).status_code == 200
            q = {"rank_by": ["id", "asc"], "top_k": 100}
            rows = fresh(server.url, "POST", "/v2/namespaces/multi/query", json=q).json()["rows"]
            assert [row["id"] for row in rows] == list(range(i + 1))

        # /metrics counts the node, whichever process answers the scrape
        for _ in range(10):
            assert fresh(server.url, "GET", "/healthz").status_code == 200
        for _ in range(4):
            text = fresh(server.url, "GET", "/metrics").text
            assert counter(text, "healthz") >= 10
            assert counter(text, "query") == 12
            assert counter(text, "write") == 12

        # a serving process that dies is replaced; the node keeps answering meanwhile
        os.kill(r["server-1"], signal.SIGKILL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert fresh(server.url, "GET", "/healthz").status_code == 200
            now = roles(server.proc.pid)
            if now.get("server-1") not in (None, r["server-1"]):
                break
            time.sleep(0.2)
        else:
            pytest.fail("the killed serving process was not replaced:\n" + server.log())
        assert "server-1 process exited unexpectedly" in server.log()
        q = {"rank_by": ["id", "asc"], "top_k": 100}
        for _ in range(6):
            assert len(fresh(server.url, "POST", "/v2/namespaces/multi/query", json=q).json()["rows"]) == 12
        kids = list(roles(server.proc.pid).values())
    finally:
        code = server.stop()
    assert code == 0, server.log()
    for pid in kids:  # every child is gone (drained and exited), none left orphaned
        status = Path(f"/proc/{pid}/status")
        assert not status.exists() or "zombie" in status.read_text().lower()


def indexing_series(text: str) -> list[str]:
    names = ("lagoon_indexing_lag_seconds", "lagoon_wal_tail_bytes", "lagoon_segment_count")
    names += ("lagoon_compaction_running",)
    return sorted(line.rsplit(" ", 1)[0] for line in text.splitlines() if line.startswith(names))


def test_a_replaced_indexer_process_leaves_no_series_behind(tmp_path: Path) -> None:
    """The indexing gauges read as on a worker (one series per namespace, no pid label), also after
    the indexer child died and was replaced: a dead child's last values (a lag that would keep an
    alert firing, a compaction it was running) are not exported next to the new child's."""
    server = LiveServer(
        tmp_path / "data",
        tmp_path / "server.log",
        ("--set", "server.processes=2", "--embedded-indexer"),
    )
    want = [
        "lagoon_compaction_running",
        'lagoon_indexing_lag_seconds{namespace="default/ix"}',
        'lagoon_segment_count{namespace="default/ix"}',
        'lagoon_wal_tail_bytes{namespace="default/ix"}',
    ]

    def wait_for_series(what: str) -> None:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            text = fresh(server.url, "GET", "/metrics").text
            if 'lagoon_segment_count{namespace="default/ix"' in text:
                assert indexing_series(text) == want, text
                return
            time.sleep(0.2)
        pytest.fail(f"{what}:\n" + server.log())

    try:
        body = {"upsert_rows": [{"id": 1, "vector": [1.0, 2.0]}], "distance_metric": "euclidean_squared"}
        assert fresh(server.url, "POST", "/v2/namespaces/ix", json=body).status_code == 200
        wait_for_series("the indexer exported no series of the namespace")
        old = roles(server.proc.pid)["indexer"]
        os.kill(old, signal.SIGKILL)
        deadline = time.monotonic() + 180
        while roles(server.proc.pid).get("indexer") in (None, old):
            assert time.monotonic() < deadline, "the indexer process was not replaced:\n" + server.log()
            time.sleep(0.2)
        wait_for_series("the new indexer exported no series of the namespace")
    finally:
        server.stop()


def test_a_port_in_use_fails_at_once(tmp_path: Path) -> None:
    """The supervisor binds the port itself: a port in use is one clear line and exit status 3,
    not a supervisor whose children keep failing."""
    import socket
    import subprocess

    from tests.server.conftest import REPO, server_env

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        exe = REPO / ".venv" / "bin" / "lagoon-server"
        proc = subprocess.run(
            [str(exe), "--listen", f"127.0.0.1:{port}", "--set", "server.processes=2"],
            env=server_env(tmp_path / "data"),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 3
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stdout + proc.stderr


def test_a_killed_supervisor_takes_its_children_and_frees_the_port(tmp_path: Path) -> None:
    """kill -9 of lagoon-server is a crash of the node: its serving processes go with it at once
    (nothing keeps the port, nothing commits for a dead node), so a new server can bind at once."""
    server = LiveServer(tmp_path / "data", tmp_path / "server.log", ("--set", "server.processes=2"))
    kids = list(roles(server.proc.pid).values())
    assert len(kids) == 2
    server.proc.kill()
    server.proc.wait(10)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(Path(f"/proc/{k}").exists() for k in kids):
        time.sleep(0.05)
    for k in kids:
        status = Path(f"/proc/{k}/status")
        assert not status.exists() or "zombie" in status.read_text().lower()
    server.stop()
    import socket

    with socket.socket() as s:  # nobody listens on the port any more
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", server.port))
        s.listen(1)
