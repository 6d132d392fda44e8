"""Clients that hold connections without finishing a request: a head trickled a byte at a time
(slowloris), connections opened and left silent, more connections than the process may hold.
Each is bounded by ``server.header_timeout_secs`` / ``server.max_connections`` on a real
``lagoon-server`` (one serving process, so the connection count is the process's)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import LiveServer

HEAD_TIMEOUT = 1.5
MAX_CONNECTIONS = 24


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root: Path = tmp_path_factory.mktemp("connections")
    s = LiveServer(
        root / "data",
        root / "server.log",
        LAGOON_SERVER__PROCESSES="1",
        LAGOON_SERVER__HEADER_TIMEOUT_SECS=str(HEAD_TIMEOUT),
        LAGOON_SERVER__MAX_CONNECTIONS=str(MAX_CONNECTIONS),
    )
    yield s
    s.stop()


def connect(server: LiveServer) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", server.port))
    s.settimeout(30)
    return s


def read_all(s: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return data


def read_healthz(s: socket.socket) -> bytes:
    """One whole ``/healthz`` response (its head and body may come in separate reads)."""
    data = b""
    while not data.endswith(b'{"status":"ok"}'):
        chunk = s.recv(65536)
        assert chunk, data
        data += chunk
    return data


def test_a_trickled_head_gets_408_at_the_head_deadline(server: LiveServer) -> None:
    s = connect(server)
    t0 = time.monotonic()
    s.sendall(b"POST /v2/namespaces/x/query HTTP/1.1\r\nhost: a\r\n")
    answer = b""
    try:
        for i in range(100):  # one header line every 0.2 s: 20 s if nothing stopped it
            s.sendall(b"x-%d: y\r\n" % i)
            time.sleep(0.2)
    except (BrokenPipeError, ConnectionResetError):
        pass
    answer = read_all(s)
    elapsed = time.monotonic() - t0
    s.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b'"status":"error"' in answer and b"server.header_timeout_secs" in answer
    assert HEAD_TIMEOUT - 0.1 < elapsed < HEAD_TIMEOUT + 10, elapsed


def test_a_silent_connection_is_closed_at_the_head_deadline(server: LiveServer) -> None:
    s = connect(server)
    t0 = time.monotonic()
    assert read_all(s) == b""  # closed, nothing said
    elapsed = time.monotonic() - t0
    s.close()
    assert HEAD_TIMEOUT - 0.1 < elapsed < HEAD_TIMEOUT + 10, elapsed


def test_the_next_request_on_a_kept_alive_connection_has_its_own_deadline(server: LiveServer) -> None:
    s = connect(server)
    s.sendall(b"GET /healthz HTTP/1.1\r\nhost: a\r\n\r\n")
    first = read_healthz(s)
    assert first.startswith(b"HTTP/1.1 200 "), first
    time.sleep(HEAD_TIMEOUT + 0.5)  # longer than the head deadline, shorter than keep-alive (5 s)
    t0 = time.monotonic()
    s.sendall(b"GET /healthz HTTP/1.1\r\n")  # a head begun and never finished
    answer = read_all(s)
    elapsed = time.monotonic() - t0
    s.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert HEAD_TIMEOUT - 0.1 < elapsed < HEAD_TIMEOUT + 10, elapsed


def test_a_slow_but_steady_client_is_served(server: LiveServer) -> None:
    """A head split over a few writes within the deadline is served normally."""
    s = connect(server)
    for part in (b"GET /healthz HTTP/1.1\r\n", b"host: a\r\n", b"connection: close\r\n\r\n"):
        s.sendall(part)
        time.sleep(HEAD_TIMEOUT / 5)
    answer = read_all(s)
    s.close()
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]


def test_connections_beyond_the_limit_are_closed_and_the_server_keeps_serving(server: LiveServer) -> None:
    held = [connect(server) for _ in range(MAX_CONNECTIONS)]
    try:
        # each held connection starts a request, so the server has accepted it before the next
        for s in held:
            s.sendall(b"GET /healthz HTTP/1.1\r\nhost: a\r\n\r\n")
            assert read_healthz(s).startswith(b"HTTP/1.1 200 ")
        extra = connect(server)
        try:
            extra.sendall(b"GET /healthz HTTP/1.1\r\nhost: a\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        t0 = time.monotonic()
        assert read_all(extra) == b""  # closed on accept, well before any deadline
        assert time.monotonic() - t0 < HEAD_TIMEOUT
        extra.close()
    finally:
        for s in held:
            s.close()
    deadline = time.monotonic() + 10
    while True:  # the held connections' slots come back as the server sees them close
        try:
            r = httpx.get(server.url + "/healthz", timeout=5)
            if r.status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server did not serve again after the held connections closed"
        time.sleep(0.1)
    assert "too many open connections" in server.log()


def test_a_request_on_a_kept_alive_connection_may_outlast_the_keep_alive_timeout(
    server: LiveServer,
) -> None:
    """The keep-alive timer a response starts (uvicorn: 5 s) stops when the next request arrives.
    It did not (the protocol's own data_received skipped it), so any request on a reused
    connection (the SDK pools them) still running 5 s after the previous response was cut off:
    the client saw a dropped connection, and retried."""
    s = connect(server)
    s.sendall(b"GET /healthz HTTP/1.1\r\nhost: a\r\n\r\n")
    read_healthz(s)
    body = b'{"rank_by": ["id", "asc"], "top_k": 1}'
    s.sendall(
        b"POST /v2/namespaces/keepalive/query HTTP/1.1\r\nhost: a\r\ncontent-type: application/json\r\n"
        b"connection: close\r\ncontent-length: %d\r\n\r\n" % len(body) + body[:10]
    )
    time.sleep(6.5)  # the rest of the body comes after uvicorn's 5 s keep-alive timeout
    s.sendall(body[10:])
    answer = read_all(s)
    s.close()
    assert answer.startswith(b"HTTP/1.1 404 "), answer[:300]  # the namespace does not exist
    assert b"keepalive" in answer


def test_a_head_over_the_byte_limit_gets_431_however_it_arrives(server: LiveServer) -> None:
    """A head past ``server.max_header_bytes`` (64 KiB) sent in one write, so the server may read
    it whole in one socket read (the parser completes it at once), on a new connection and on a
    kept-alive one, is 431; one just under the limit is served."""
    big = b"GET /healthz HTTP/1.1\r\nhost: a\r\nconnection: close\r\nx-big: " + b"a" * 100_000 + b"\r\n\r\n"
    s = connect(server)
    s.sendall(big)
    answer = read_all(s)
    s.close()
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"server.max_header_bytes" in answer
    s = connect(server)
    s.sendall(b"GET /healthz HTTP/1.1\r\nhost: a\r\n\r\n")
    assert read_healthz(s).startswith(b"HTTP/1.1 200 ")  # read whole: the next bytes are the 431
    s.sendall(big)
    answer = read_all(s)
    s.close()
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    s = connect(server)
    s.sendall(
        b"GET /healthz HTTP/1.1\r\nhost: a\r\nconnection: close\r\nx-fine: " + b"b" * 60_000 + b"\r\n\r\n"
    )
    answer = read_all(s)
    s.close()
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
