"""Several serving processes per node behind one port (``server.processes``).

A Lagoon server is stateless, so a node scales over its cores by running one serving process per
core: the supervisor (the ``lagoon-server`` process itself) binds the listening socket once and
starts N children that each run the whole HTTP app (uvicorn + the engine) on an inherited copy of
that socket; the kernel hands each new connection to whichever child is waiting in ``accept``,
so an idle process takes the next connection. Each child has its own ``Database`` (namespace
states, group committer per namespace, memory LRU); they share the disk cache folder (immutable,
verified files, written by rename) and the bucket, whose create-if-absent WAL slots make
concurrent committers in several processes as safe as on several nodes; within the node, with
``server.commit_routing``, each namespace's validated writes are handed to one owning process,
which commits them in its groups (``engine/routing.py``, docs/rfcs/0010-commit-routing.md); writes
a process commits itself take turns per namespace (``engine/nodelock.py``: a flock per namespace in a folder private to
the node), so no process starves the others (docs/rfcs/0001-serving-processes.md).

With ``server.embedded_indexer`` the indexer, compactor and GC run in one more child, at a lower
CPU priority (``server.indexer_nice``), so background indexing yields the cores to queries; its
segment cache is bounded by ``indexer.memory_bytes`` (a single-process server's indexer shares
the serving cache instead).

Invariants:
- Children are started with ``exec`` (never ``fork`` of a process holding object-store clients);
  their settings come from the supervisor over a pipe, so every process runs the same resolved
  configuration (``cache.memory_bytes`` is split between the serving processes: it is the node's
  budget).
- Metrics are aggregated over the processes (prometheus_client multiprocess mode in a private
  folder), so ``/metrics`` on any connection shows the node's counters.
- A stop signal to the supervisor is forwarded to every child; each drains as a single-process
  server does (``server.shutdown_grace_secs``); the supervisor exits 0 once they have exited.
  A child that dies is logged and started again (after a delay that grows while it keeps dying).
  A child that fails before it starts serving (bind, lifespan, bad keys file) stops the node.
  A supervisor killed outright (SIGKILL, a crash) takes its children with it at once, as a crash
  of a single-process server would: nothing keeps the port or commits for a dead node.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Any

import uvicorn

from lagoon.config import Settings
from lagoon.engine.nodelock import NODE_DIR_ENV, PROCESS_ENV
from lagoon.logs import log_event
from lagoon.server import DrainingServer, uvicorn_config

if TYPE_CHECKING:
    from lagoon.server.app_state import ServerState

log = logging.getLogger("lagoon.server")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
STARTUP_TIMEOUT_SECS = 120.0
MAX_AUTO_PROCESSES = 16
"""Cap of ``server.processes = 0`` (a container without a CPU limit sees every CPU of its host)."""


def usable_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota (a
    Kubernetes CPU limit), rounded up."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    with contextlib.suppress(OSError, ValueError):
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    return max(1, n)


def resolve_processes(settings: Settings) -> int:
    """``server.processes``, with 0 meaning one per usable CPU; always 1 on the memory backend
    (each process would have a store of its own)."""
    if settings.storage.backend == "memory":
        return 1
    n = settings.server.processes
    return n if n > 0 else min(usable_cpus(), MAX_AUTO_PROCESSES)


def child_settings(settings: Settings, processes: int) -> Settings:
    """What each serving process runs: no embedded indexer (it has its own process), and an equal
    share of the node's memory cache budget."""
    server = settings.server.model_copy(update={"embedded_indexer": False, "processes": 1})
    cache = settings.cache.model_copy(update={"memory_bytes": settings.cache.memory_bytes // processes})
    return settings.model_copy(update={"server": server, "cache": cache})


def bind_listener(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


@dataclass
class Child:
    role: str  # "server-<i>" or "indexer"
    proc: subprocess.Popen[bytes]
    ready_r: int
    ready: bool = False
    started: float = field(default_factory=time.monotonic)


class Supervisor:
    """Starts, watches and stops the serving processes (and the indexer process) of one node."""

    def __init__(self, settings: Settings, host: str, port: int, processes: int) -> None:
        self.settings = settings
        self.host, self.port = host, port
        self.processes = processes
        self.children: dict[str, Child] = {}
        self.stopping = threading.Event()
        self.sock: socket.socket | None = None
        self.metrics_dir = ""
        self.node_dir = ""
        self.restarts: dict[str, int] = {}

    # -- children --------------------------------------------------------------------------------

    def _spawn(self, role: str) -> Child:
        settings = child_settings(self.settings, self.processes)
        ready_r, ready_w = os.pipe()
        env = dict(os.environ)
        env[MULTIPROC_ENV] = self.metrics_dir
        env[NODE_DIR_ENV] = self.node_dir
        env.pop(PROCESS_ENV, None)
        if role.startswith("server-"):  # which serving process this is (engine/routing.py)
            env[PROCESS_ENV] = f"{role.removeprefix('server-')}/{self.processes}"
        args = [sys.executable, "-m", "lagoon.server.processes", role, str(ready_w)]
        fds = [ready_w]
        if role != "indexer":
            assert self.sock is not None
            args.append(str(self.sock.fileno()))
            fds.append(self.sock.fileno())
        else:
            settings = self.settings
        # A process group of its own, so a terminal's Ctrl-C reaches the supervisor only, which
        # forwards one SIGTERM (a second signal would make uvicorn skip the drain). The same
        # session, though: with the kernel's autogroup scheduling (one CPU group per session)
        # a new session would void the indexer's lower priority against the serving processes.
        proc = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            pass_fds=fds,
            env=env,
            process_group=0,
            preexec_fn=_die_with_parent_hook(os.getpid()),  # the supervisor has no threads
        )
        os.close(ready_w)
        if role == "indexer":  # at once, before it does any work (its threads inherit it)
            with contextlib.suppress(OSError):
                # Relative to the supervisor's own niceness: a node already started under `nice`
                # keeps the indexer below its serving children, and never raises its priority.
                base = os.getpriority(os.PRIO_PROCESS, 0)
                os.setpriority(os.PRIO_PROCESS, proc.pid, min(19, base + self.settings.server.indexer_nice))
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(pickle.dumps(settings))
            proc.stdin.close()
        return Child(role, proc, ready_r)

    def _wait_ready(self, child: Child, timeout: float) -> bool:
        """True once the child reported it serves; False if it exited or timed out first."""
        deadline = time.monotonic() + timeout
        os.set_blocking(child.ready_r, False)
        while time.monotonic() < deadline and not self.stopping.is_set():
            with contextlib.suppress(BlockingIOError):
                if os.read(child.ready_r, 1):
                    child.ready = True
                    return True
            if child.proc.poll() is not None:
                return False
            time.sleep(0.02)
        return False

    def _reap(self, child: Child) -> None:
        with contextlib.suppress(OSError):
            os.close(child.ready_r)
        if self.metrics_dir:
            from prometheus_client import multiprocess

            with contextlib.suppress(OSError):
                multiprocess.mark_process_dead(child.proc.pid, self.metrics_dir)  # type: ignore[no-untyped-call]

    # -- lifecycle -------------------------------------------------------------------------------

    def run(self) -> int:
        self.node_dir = tempfile.mkdtemp(prefix="lagoon-node-")
        self.metrics_dir = os.path.join(self.node_dir, "metrics")
        os.mkdir(self.metrics_dir)
        try:
            return self._run()
        finally:
            shutil.rmtree(self.node_dir, ignore_errors=True)

    def _run(self) -> int:
        try:
            self.sock = bind_listener(self.host, self.port)
        except OSError as e:
            log_event(log, f"cannot listen on {self.host}:{self.port}: {e}", level=logging.ERROR)
            return 3
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            roles = [f"server-{i}" for i in range(self.processes)]
            if self.settings.server.embedded_indexer:
                roles.append("indexer")
            for role in roles:
                self.children[role] = self._spawn(role)
            for role in roles:
                if not self._wait_ready(self.children[role], STARTUP_TIMEOUT_SECS):
                    if self.stopping.is_set():
                        break
                    log_event(log, f"{role} process failed to start; stopping", level=logging.ERROR)
                    self._stop_all()
                    return 3
            log_event(
                log,
                "serving",
                listen=f"{self.host}:{self.port}",
                processes=self.processes,
                indexer_process=self.settings.server.embedded_indexer,
            )
            while not self.stopping.is_set():
                self._watch()
                self.stopping.wait(0.2)
            self._stop_all()
            return 0
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        self.stopping.set()

    def _watch(self) -> None:
        for role, child in list(self.children.items()):
            code = child.proc.poll()
            if code is None:
                continue
            self._reap(child)
            n = self.restarts[role] = self.restarts.get(role, 0) + 1
            if time.monotonic() - child.started > 60:
                self.restarts[role] = n = 1  # it had been running a while: start the backoff over
            delay = min(30.0, 0.5 * 2 ** (n - 1))
            log_event(
                log,
                f"{role} process exited unexpectedly; restarting it",
                level=logging.ERROR,
                exit_code=code,
                restart_in_secs=delay,
            )
            if self.stopping.wait(delay):
                return
            new = self.children[role] = self._spawn(role)
            self._wait_ready(new, STARTUP_TIMEOUT_SECS)

    def _stop_all(self) -> None:
        if self.sock is not None:  # children still hold their copies while they drain
            self.sock.close()
            self.sock = None
        for child in self.children.values():
            if child.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.server.shutdown_grace_secs + 15.0
        for child in self.children.values():
            try:
                child.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log_event(log, f"{child.role} process did not stop in time; killing it", level=logging.ERROR)
                child.proc.kill()
                child.proc.wait()
            self._reap(child)


# --- the children ------------------------------------------------------------------------------


def _serve_child(settings: Settings, ready_fd: int, listen_fd: int) -> int:
    from lagoon.server.app import create_app

    sock = socket.socket(fileno=listen_fd)
    app = create_app(settings)
    config: uvicorn.Config = uvicorn_config(app, settings)
    server = ReadyServer(config, app.state.server, ready_fd)
    server.run(sockets=[sock])
    return 0 if server.started else 3


def _indexer_child(settings: Settings, ready_fd: int) -> int:
    import asyncio

    from lagoon.engine.scheduler import IndexerLoop

    async def main() -> None:
        from lagoon.storage import factory

        store = factory.open_store(settings.storage)
        loop = IndexerLoop(store, settings)
        stop = asyncio.Event()
        running = asyncio.get_running_loop()
        for s in (signal.SIGTERM, signal.SIGINT):
            running.add_signal_handler(s, stop.set)
        loop.start()
        os.write(ready_fd, b"1")
        try:
            await stop.wait()
        finally:
            await loop.stop()
            await store.close()

    asyncio.run(main())
    return 0


class ReadyServer(DrainingServer):
    """Tells the supervisor (one byte on a pipe) once the app's startup finished."""

    def __init__(self, config: uvicorn.Config, state: ServerState, ready_fd: int) -> None:
        super().__init__(config, state)
        self.ready_fd = ready_fd

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            with contextlib.suppress(OSError):
                os.write(self.ready_fd, b"1")


def _die_with_parent_hook(parent: int) -> Any:
    """Run in the child between fork and exec: die with the supervisor (``PR_SET_PDEATHSIG``
    survives exec), and at once if it is already gone. Set before exec, so a supervisor killed
    while its children still start never leaves one holding the port."""

    def hook() -> None:
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - not Linux
            return
        if os.getppid() != parent:
            os._exit(1)

    return hook


def _die_with_parent() -> None:
    """A supervisor that is killed (SIGKILL, a crash) takes its children with it at once, as the
    crash of a single-process server would: nothing keeps the port or commits for a dead node.
    Linux ``PR_SET_PDEATHSIG``; elsewhere ``_watch_parent`` drains within about a second."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return
    # (the supervisor already set this before exec; repeating it is harmless)


def _watch_parent() -> None:
    """Stop (SIGTERM to ourselves: a graceful drain) if the supervisor dies without stopping us."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="lagoon-parent-watch", daemon=True).start()


def child_main(argv: list[str]) -> int:
    from lagoon.logs import configure_logging

    _die_with_parent()
    role, ready_fd = argv[0], int(argv[1])
    settings: Settings = pickle.loads(sys.stdin.buffer.read())
    configure_logging(settings.observability)
    _watch_parent()
    if role == "indexer":
        return _indexer_child(settings, ready_fd)
    return _serve_child(settings, ready_fd, int(argv[2]))


if __name__ == "__main__":
    raise SystemExit(child_main(sys.argv[1:]))
