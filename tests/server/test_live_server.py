"""A real ``lagoon-server`` process: startup warning, slow bodies, graceful shutdown, and the rule
that an acknowledged write is durable whatever the shutdown timing (checked by reading the data
directory back with an in-process engine after the server is gone)."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from lagoon.config import Settings
from lagoon.engine.database import Database
from lagoon.storage.factory import open_store

from .conftest import LiveServer


def rows(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"id": start + i, "vector": [float(i % 7), 1.0, 0.5], "text": "lagoon " * 8} for i in range(n)]


def counts_on_disk(root: Path, ns: str, ranges: list[tuple[int, int]]) -> list[int]:
    """Documents of ``ns`` with ids in each [lo, hi), read from the fs backend in-process."""

    async def read() -> list[int]:
        settings = Settings(storage={"backend": "fs", "root": str(root)})
        db = Database(open_store(settings.storage), settings)
        try:
            out = []
            for lo, hi in ranges:
                body = {
                    "filters": ["And", [["id", "Gte", lo], ["id", "Lt", hi]]],
                    "aggregate_by": {"n": ["Count"]},
                }
                out.append(int((await db.query(ns, body))["aggregations"]["n"]))
            return out
        finally:
            await db.close()

    return asyncio.run(read())


def in_flight(url: str) -> float:
    text = httpx.get(url + "/metrics", timeout=5).text
    m = re.search(r"^lagoon_http_requests_in_flight (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def test_auth_off_warning_and_default_org(live_server: LiveServer, unique: str) -> None:
    assert (
        httpx.post(f"{live_server.url}/v2/namespaces/{unique}", json={"upsert_rows": [{"id": 1}]}).status_code
        == 200
    )
    assert (live_server.root / "default" / unique).is_dir()
    assert "AUTHENTICATION IS OFF" in live_server.log()


def test_json_logs_of_a_real_server_carry_no_terminal_escapes(tmp_path: Path) -> None:
    """uvicorn's own records (startup, shutdown) are JSON lines like ours, without its
    ``color_message`` copy of the message with ANSI colour escapes."""
    server = LiveServer(tmp_path / "data", tmp_path / "server.log", LAGOON_OBSERVABILITY__LOG_LEVEL="info")
    assert (
        httpx.post(f"{server.url}/v2/namespaces/logs", json={"upsert_rows": [{"id": 1}]}).status_code == 200
    )
    assert server.stop() == 0
    text = server.log()
    records = [orjson.loads(line) for line in text.splitlines()]
    uvicorn = [r for r in records if r["logger"].startswith("uvicorn")]
    assert any("Started server process" in r["msg"] for r in uvicorn), text
    assert "\x1b" not in text and "\\u001b" not in text, text
    assert not [r for r in records if "color_message" in r], text


def test_slow_body_then_graceful_shutdown(tmp_path: Path) -> None:
    root = tmp_path / "data"
    server = LiveServer(
        root,
        tmp_path / "server.log",
        LAGOON_SERVER__REQUEST_TIMEOUT_SECS="2",
        LAGOON_SERVER__SHUTDOWN_GRACE_SECS="30",
    )
    # 1. A body that never completes gets 408 at the deadline, not a hung connection.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(
            b"POST /v2/namespaces/a HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"upsert_rows": '
        )
        t0 = time.monotonic()
        data = b""
        while not data.endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        assert time.monotonic() - t0 < 8
    assert data.startswith(b"HTTP/1.1 408"), data
    assert b'"status":"error"' in data and b"deadline" in data

    # 2. A write in flight when SIGTERM arrives finishes and is acknowledged; the process exits.
    body = orjson.dumps({"upsert_rows": rows(20000), "distance_metric": "euclidean_squared"})
    result: dict[str, Any] = {}

    def big_write() -> None:
        try:
            r = httpx.post(
                f"{server.url}/v2/namespaces/big",
                content=body,
                headers={"content-type": "application/json"},
                timeout=60,
            )
            result["status"], result["body"] = r.status_code, r.json()
        except httpx.HTTPError as e:
            result["error"] = repr(e)

    t = threading.Thread(target=big_write)
    t.start()
    deadline = time.monotonic() + 20
    while in_flight(server.url) < 2 and time.monotonic() < deadline:  # the /metrics request is one
        time.sleep(0.005)
    server.proc.send_signal(signal.SIGTERM)
    t.join(60)
    assert server.stop() in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once drained
    assert result.get("status") == 200, result
    assert result["body"]["rows_upserted"] == 20000
    assert counts_on_disk(root, "big", [(0, 20000)]) == [20000]


def test_acknowledged_writes_survive_abrupt_shutdown(tmp_path: Path) -> None:
    """With no grace, in-flight writes are cut off; whatever was answered 200 must be durable."""
    root = tmp_path / "data"
    server = LiveServer(root, tmp_path / "server.log", LAGOON_SERVER__SHUTDOWN_GRACE_SECS="0")
    acked: list[int] = []
    unexpected: list[tuple[int, str]] = []

    def writer(worker: int) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for batch in range(1000):
                start = (worker * 1000 + batch) * 100
                try:
                    r = client.post(
                        "/v2/namespaces/acks",
                        json={"upsert_rows": rows(100, start), "distance_metric": "euclidean_squared"},
                    )
                except httpx.HTTPError:
                    return  # cut off: not acknowledged
                if r.status_code == 200:
                    acked.append(start)
                else:
                    if r.status_code != 503:  # 503: refused while shutting down, not acknowledged
                        unexpected.append((r.status_code, r.text))
                    return

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(acked) < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    server.proc.send_signal(signal.SIGTERM)
    server.proc.wait(60)
    for t in threads:
        t.join(60)
    server.stop()
    assert not unexpected, unexpected
    assert len(acked) >= 10
    found = counts_on_disk(root, "acks", [(start, start + 100) for start in acked])
    assert found == [100] * len(acked)
