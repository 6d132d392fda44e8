"""A production-shaped Lagoon cluster on one S3 bucket, as child processes: N ``lagoon-server`` and
M ``lagoon-worker`` nodes, configured only through ``LAGOON_*`` variables and the standard
``AWS_*`` credential chain, each with its own cache folder and log file. ``kill9`` and ``start``
let a test crash and restart any of them; a restarted server keeps its port.

A node is a process tree (``lagoon-server`` is a supervisor with serving children in sessions of
their own, see ``server.processes``): ``kill9`` sends SIGKILL to the whole tree at once, as a
crashed pod or machine loses all of a node's processes. (Killing the supervisor alone leaves its
children serving, and holding the port, until they notice and drain.) ``wait_ready`` restarts a node that exits while starting
(e.g. its port still held for a moment), as a process supervisor with a restart policy would.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.seaweedfs import free_port

REPO = Path(__file__).resolve().parents[2]


def _exe(name: str) -> list[str]:
    local = Path(sys.executable).parent / name
    if local.exists():
        return [str(local)]
    module = {"lagoon-server": "lagoon.server", "lagoon-worker": "lagoon.worker"}[name]
    return [sys.executable, "-m", module]


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from /proc), children before grandchildren."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as f:
                stat = f.read()
        except OSError:
            continue
        parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])  # field 4: ppid
    out: list[int] = []
    frontier = [pid]
    while frontier:
        frontier = [p for p, parent in parents.items() if parent in frontier]
        out += frontier
    return out


@dataclass
class Node:
    name: str
    kind: str  # "server" | "worker"
    port: int  # server: HTTP API; worker: /metrics
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} is running"
        cmd = [*_exe(f"lagoon-{self.kind}")]
        if self.kind == "server":
            cmd += ["--listen", f"127.0.0.1:{self.port}"]
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts + 1} ---\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                cmd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=REPO,
                start_new_session=True,  # its own process group: kill9 takes the children too
            )
        self.starts += 1

    def wait_ready(self, timeout: float = 180.0) -> None:
        """Until the node answers; bounded generously: at load 12+ on 2 cores start-up took over 60 s."""
        path = "/readyz" if self.kind == "server" else "/metrics"
        deadline = time.monotonic() + timeout
        restarts = 0
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                if restarts >= 20:
                    raise RuntimeError(
                        f"{self.name} exited with {self.proc.returncode}:\n{self.log()[-3000:]}"
                    )
                restarts += 1  # restart policy: try again shortly
                time.sleep(0.5)
                self.start()
                continue
            try:
                if httpx.get(self.url + path, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s:\n{self.log()[-3000:]}")

    def kill9(self) -> None:
        """SIGKILL to the node's whole process tree (the supervisor and every descendant)."""
        assert self.proc is not None
        for pid in [self.proc.pid, *descendants(self.proc.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (a graceful stop); SIGKILL to the group after ``timeout``."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
        return self.proc.returncode

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class Cluster:
    """Servers and workers sharing ``s3://bucket/prefix`` at ``endpoint``."""

    root: Path
    bucket: str
    prefix: str
    endpoint: str
    region: str
    aws_env: dict[str, str]
    settings: dict[str, str] = field(default_factory=dict)  # extra LAGOON_* variables
    nodes: dict[str, Node] = field(default_factory=dict)

    def _env(self, name: str, extra: dict[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("LAGOON_", "AWS_"))}
        env.update(self.aws_env)
        env.update(
            LAGOON_STORAGE__BACKEND="s3",
            LAGOON_STORAGE__BUCKET=self.bucket,
            LAGOON_STORAGE__PREFIX=self.prefix,
            LAGOON_STORAGE__ENDPOINT=self.endpoint,
            LAGOON_STORAGE__REGION=self.region,
            LAGOON_CACHE__DIR=str(self.root / name / "cache"),
            LAGOON_OBSERVABILITY__LOG_LEVEL="warning",
            PYTHONUNBUFFERED="1",
        )
        env.update(self.settings)
        env.update(extra)
        return env

    def add(self, kind: str, name: str) -> Node:
        (self.root / name).mkdir(parents=True, exist_ok=True)
        port = free_port()
        extra = {"LAGOON_OBSERVABILITY__METRICS_LISTEN": f"127.0.0.1:{port}"} if kind == "worker" else {}
        node = Node(name, kind, port, self._env(name, extra), self.root / name / f"{name}.log")
        self.nodes[name] = node
        return node

    @property
    def servers(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.kind == "server"]

    @property
    def workers(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.kind == "worker"]

    def start_all(self) -> None:
        for node in self.nodes.values():
            node.start()
        for node in self.nodes.values():
            node.wait_ready()

    def stop_all(self) -> dict[str, int | None]:
        return {name: node.stop() for name, node in self.nodes.items()}
