"""Fixtures of the HTTP server tests: in-process apps (real engine over a memory store, or a fake
engine for failure paths) and a real ``lagoon-server`` process on a free loopback port."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from lagoon.config import Settings
from lagoon.server import create_app
from lagoon.storage.memory import MemoryStore

REPO = Path(__file__).resolve().parents[2]
ERROR_KEYS = {"status", "error"}


def assert_error(resp: httpx.Response, status: int, *fragments: str) -> dict[str, Any]:
    """The response is turbopuffer's error body with ``status`` and a message containing ``fragments``."""
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == ERROR_KEYS, body
    assert body["status"] == "error"
    assert isinstance(body["error"], str) and body["error"]
    for fragment in fragments:
        assert fragment in body["error"], (fragment, body["error"])
    assert resp.headers.get("x-request-id")
    return body


def memory_settings(**sections: dict[str, Any]) -> Settings:
    data: dict[str, Any] = {"storage": {"backend": "memory"}}
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return Settings(**data)


@pytest.fixture
def make_client() -> Iterator[Callable[..., TestClient]]:
    """``make_client(settings=None, engine=None, **create_app_kwargs)`` -> a started TestClient."""
    clients: list[TestClient] = []

    def make(
        settings: Settings | None = None, engine: Any = None, store: Any = None, **kwargs: Any
    ) -> TestClient:
        if engine is not None:
            kwargs["engine_factory"] = lambda store, s, c: engine
            store = store or MemoryStore()
        app = create_app(settings or memory_settings(), store=store, **kwargs)
        client = TestClient(app)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in reversed(clients):
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    """A client of an app with the real engine over a fresh memory store (opened by the app's
    lifespan through the storage factory, so object-store metrics are live), auth off."""
    return make_client()


# --- a real server process -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("LAGOON_")}
    env.update(
        LAGOON_STORAGE__BACKEND="fs",
        LAGOON_STORAGE__ROOT=str(root),
        LAGOON_OBSERVABILITY__LOG_LEVEL="warning",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class LiveServer:
    """A ``lagoon-server`` child process on 127.0.0.1:<free port>."""

    def __init__(self, root: Path, log_path: Path, args: tuple[str, ...] = (), **env: str) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = log_path.open("wb")
        exe = REPO / ".venv" / "bin" / "lagoon-server"
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "lagoon.server"]
        self.proc = subprocess.Popen(
            [*cmd, "--listen", f"127.0.0.1:{self.port}", *args],
            env=server_env(root, **env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=log_path.parent,
        )
        try:
            self.wait_healthy()
        except BaseException:
            self.stop(signal.SIGKILL)  # a server that never became ready is not left running
            raise

    def wait_healthy(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"lagoon-server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"lagoon-server did not become ready:\n{self.log()}")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One real server for the session (fs storage in a temp dir, auth off)."""
    root = tmp_path_factory.mktemp("lagoon-live")
    server = LiveServer(root / "data", root / "server.log")
    yield server
    server.stop()


@pytest.fixture
def unique() -> str:
    """A short unique namespace prefix, so tests sharing a live server never collide."""
    return "t" + uuid.uuid4().hex[:10]


def run(coro: Any) -> Any:
    return asyncio.run(coro)
