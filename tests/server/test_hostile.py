"""Hostile clients against a real ``lagoon-server`` (loopback, auth on, two orgs, bounded in time).

What one client must never be able to do to the others, each reproduced with the request that
used to do it:
- catastrophic patterns (a Regex with a 1000-fold counted repetition over 120 documents of
  50 KB, an IGlob of 1000 ``*ǆ``, an Or of 4,000 globs): refused up front with a 400 by default;
  with the up-front check disabled, eight of them at once must not stall ``/healthz`` or another
  org's queries, must stop at the request deadline, and the CPU must be idle within a second of
  their end;
- a client that goes away mid-query or mid-body: logged as 499 (``client_disconnected``), never
  as a 5xx, and its query stops;
- a compression bomb, a huge JSON attribute: the event loop keeps routing (``/healthz`` p99);
- oversized or too many request headers: 431 before any route runs, no key needed.

``/healthz`` must keep p99 < 50 ms during each attack — or, when the machine itself is busier
than that (these cores are shared with whatever else runs), under twice the p99 an idle server
gets in the same minute.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import random
import socket
import statistics
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from lagoon.auth import create_key
from tests.server.conftest import LiveServer
from tests.server.test_connections import read_all

DOCS = 120
DOC_BYTES = 50_000
DEADLINE_SECS = 2.5
REGEX = "[\\x{0}-\\x{10FFFF}]{1000}c"
IGLOB = "*ǆ" * 1000
SCHEMA = {"s": {"type": "string", "regex": True, "glob": True}}


def or_of_globs(n: int = 4000) -> list[Any]:
    return ["Or", [["s", "Glob", f"*{i:05d}x*"] for i in range(n)]]


CATASTROPHIC = {
    "regex": ["s", "Regex", REGEX],
    "iglob": ["s", "IGlob", IGLOB],
    "or-4000-globs": or_of_globs(),
}


# --- helpers -----------------------------------------------------------------------------------


def tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def cpu_seconds(pid: int) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except OSError:
            pass
    return total


def p99(values: list[float]) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(0.99 * (len(s) - 1)))]


class Prober:
    """Requests on fresh connections (as a kubelet probes) every ``interval`` while running."""

    def __init__(self, fn: Callable[[], httpx.Response], interval: float = 0.01) -> None:
        self.fn, self.interval = fn, interval
        self.latencies: list[float] = []
        self.statuses: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.fn()  # not timed: builds this thread's client
        while not self._stop.is_set():
            t0 = time.perf_counter()
            r = self.fn()
            self.latencies.append(time.perf_counter() - t0)
            self.statuses.append(r.status_code)
            self._stop.wait(self.interval)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


HEALTHZ_P99 = 0.050
"""The target (slow suite, ``strict``): /healthz p99 during any single hostile request."""
LOOSE_P99 = 0.250
"""The default suite's bound: it runs on shared, often oversubscribed cores, where a 50 ms p99 is
not the server's to keep; a loop that blocks on request work (seconds) still fails it."""


def healthz_bound(h: Hostile, strict: bool) -> float:
    """The p99 /healthz must stay under during an attack: the target, or (default suite) the loose
    bound or five times what this machine gives an idle server right now, whichever is larger."""
    if strict:
        return HEALTHZ_P99
    with Prober(lambda: h.fresh("GET", "/healthz")) as idle:
        time.sleep(1.5)
    return max(LOOSE_P99, 5 * p99(idle.latencies))


def summary(latencies: list[float]) -> str:
    ms = [x * 1000 for x in latencies]
    return f"n={len(ms)} p50={statistics.median(ms):.1f}ms p99={p99(ms):.1f}ms max={max(ms):.1f}ms"


def access_lines(server: LiveServer) -> list[dict[str, Any]]:
    out = []
    for line in server.log().splitlines():
        if line.startswith("{") and '"lagoon.server.access"' in line:
            out.append(json.loads(line))
    return out


def wait_cpu_idle(pid: int, since: float, window: float = 1.0) -> float:
    """CPU seconds the server used during [since + 1 s, since + 1 s + window]."""
    time.sleep(max(0.0, since + 1.0 - time.monotonic()))
    c0 = cpu_seconds(pid)
    time.sleep(window)
    return cpu_seconds(pid) - c0


# --- the server --------------------------------------------------------------------------------


class Hostile:
    def __init__(self, server: LiveServer, keys: dict[str, str]) -> None:
        self.server, self.keys = server, keys
        self._local = threading.local()

    def h(self, who: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.keys[who]}"}

    def fresh(self, method: str, path: str, who: str | None = None, **kw: Any) -> httpx.Response:
        """One request on a new TCP connection (``connection: close``; a client object is built
        once per thread: building one costs tens of milliseconds, far more than the request)."""
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = httpx.Client(base_url=self.server.url, timeout=60)
        headers = {"connection": "close", **(self.h(who) if who else {}), **kw.pop("headers", {})}
        return client.request(method, path, headers=headers, **kw)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    root = tmp_path_factory.mktemp("hostile")
    keys_file = root / "keys.toml"
    keys = {
        "acme": create_key(keys_file, "acme", "admin")[0],
        "globex": create_key(keys_file, "globex", "admin")[0],
    }
    server = LiveServer(
        root / "data",
        root / "server.log",
        (
            "--keys-file",
            str(keys_file),
            "--set",
            "server.processes=2",
            "--set",
            f"server.request_timeout_secs={DEADLINE_SECS}",
            "--set",
            "limits.max_query_work=0",  # the up-front refusal is tested on its own below
            "--set",
            f"server.max_body_bytes={48 << 20}",  # a bomb crosses it well within the deadline
        ),
        LAGOON_OBSERVABILITY__LOG_LEVEL="info",
    )
    h = Hostile(server, keys)
    rng = random.Random(5)
    alphabet = "abdefghijklmnopqrstuvwxyz "

    def text() -> str:
        # "c" only in the first 1000 characters and no digits: every document holds the pattern's
        # literals (no index can rule it out), yet nothing matches, so RE2 scans every byte of
        # every document — the worst case (~17 s of one core for the Regex here)
        chars = [rng.choice(alphabet) for _ in range(DOC_BYTES)]
        chars[::100] = ["ǆ"] * len(chars[::100])  # 500 per document: the IGlob advances, never matches
        chars[10:900:50] = ["c"] * len(chars[10:900:50])
        return "".join(chars)

    rows = [{"id": i, "s": text(), "n": i} for i in range(DOCS)]
    r = h.fresh("POST", "/v2/namespaces/big", "acme", json={"upsert_rows": rows, "schema": SCHEMA})
    assert r.status_code == 200, r.text
    small = [{"id": i, "n": i} for i in range(100)]
    assert h.fresh("POST", "/v2/namespaces/small", "globex", json={"upsert_rows": small}).status_code == 200
    try:
        yield h
    finally:
        server.stop()


SIMPLE = {"rank_by": ["n", "desc"], "top_k": 5, "filters": ["n", "Gte", 10]}


def test_eight_catastrophic_queries_do_not_stall_the_node(hostile: Hostile) -> None:
    eight_catastrophic_queries(hostile, strict=False)


@pytest.mark.slow
def test_eight_catastrophic_queries_keep_healthz_under_50ms(hostile: Hostile) -> None:
    eight_catastrophic_queries(hostile, strict=True)


def eight_catastrophic_queries(hostile: Hostile, *, strict: bool) -> None:
    h = hostile
    pid = h.server.proc.pid
    for _ in range(3):  # warm both processes on the other org's namespace
        assert h.fresh("POST", "/v2/namespaces/small/query", "globex", json=SIMPLE).status_code == 200

    async def attack() -> list[tuple[int, float, str]]:
        async with httpx.AsyncClient(base_url=h.server.url, timeout=60, headers=h.h("acme")) as c:

            async def one(flt: Any) -> tuple[int, float, str]:
                t0 = time.perf_counter()
                r = await c.post(
                    "/v2/namespaces/big/query", json={"rank_by": ["id", "asc"], "top_k": 10, "filters": flt}
                )
                return r.status_code, time.perf_counter() - t0, r.text[:300]

            kinds = list(CATASTROPHIC.values())
            return await asyncio.gather(*(one(kinds[i % len(kinds)]) for i in range(8)))

    bound = healthz_bound(h, strict)
    health = Prober(lambda: h.fresh("GET", "/healthz"))
    other = Prober(lambda: h.fresh("POST", "/v2/namespaces/small/query", "globex", json=SIMPLE), 0.05)
    with health, other:
        started = time.monotonic()
        results = asyncio.run(attack())
        ended = time.monotonic()
    idle_cpu = wait_cpu_idle(pid, ended)

    statuses = [s for s, _, _ in results]
    durations = [d for _, d, _ in results]
    # each was stopped at its deadline (503) or, on a fast enough core, finished in time with the
    # right (empty) answer; the Regex takes several seconds of a core even then, so some stopped;
    # none ran on much past the deadline
    assert set(statuses) <= {200, 503}, results
    assert all('"rows":[]' in body for s, _, body in results if s == 200), results
    assert statuses.count(503) >= 3, results
    assert max(durations) < DEADLINE_SECS + 1.5, durations
    assert ended - started < DEADLINE_SECS + 2.0
    # the node kept serving everyone else
    assert set(health.statuses) == {200} and set(other.statuses) == {200}
    assert len(health.latencies) >= 20
    assert p99(health.latencies) < bound, f"healthz (bound {bound * 1000:.0f} ms) " + summary(
        health.latencies
    )
    assert p99(other.latencies) < (0.5 if strict else 4 * bound), "other org " + summary(other.latencies)
    # and the work stopped with the requests: the CPU is idle a second after their end
    assert idle_cpu < 0.25, f"server used {idle_cpu:.2f} CPU-s in the second after the attack ended"
    print(
        f"\nhealthz {summary(health.latencies)} (bound {bound * 1000:.0f} ms); "
        f"other org's query {summary(other.latencies)}; "
        f"CPU in [end+1s, end+2s]: {idle_cpu:.3f} s"
    )


def test_a_client_that_leaves_mid_query_stops_it_and_is_logged_as_499(hostile: Hostile) -> None:
    h = hostile
    pid = h.server.proc.pid
    body = json.dumps({"rank_by": ["id", "asc"], "top_k": 10, "filters": CATASTROPHIC["regex"]}).encode()
    with socket.create_connection(("127.0.0.1", h.server.port)) as s:
        s.sendall(
            b"POST /v2/namespaces/big/query HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            + f"authorization: Bearer {h.keys['acme']}\r\ncontent-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        time.sleep(1.0)  # the query is running now
    left = time.monotonic()
    idle_cpu = wait_cpu_idle(pid, left)
    assert idle_cpu < 0.25, f"server used {idle_cpu:.2f} CPU-s in the second after the client left"
    # and mid-body: headers promise 1 MB, 10 bytes arrive, the client goes away
    with socket.create_connection(("127.0.0.1", h.server.port)) as s:
        s.sendall(
            b"POST /v2/namespaces/big HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            + f"authorization: Bearer {h.keys['acme']}\r\ncontent-length: 1000000\r\n\r\n".encode()
            + b'{"upsert_r'
        )
        time.sleep(0.3)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        gone = [x for x in access_lines(h.server) if x.get("client_disconnected")]
        if {x.get("route") for x in gone} >= {"query", "write"}:
            break
        time.sleep(0.2)
    gone = [x for x in access_lines(h.server) if x.get("client_disconnected")]
    assert {x["route"] for x in gone} >= {"query", "write"}, gone
    assert all(x["status"] == 499 and x["level"] == "info" for x in gone)
    text = h.fresh("GET", "/metrics").text
    assert 'status="499"' in text
    five = [
        ln for ln in text.splitlines() if ln.startswith("lagoon_http_requests_total") and 'status="500"' in ln
    ]
    assert not five, five


def test_bodies_that_cost_cpu_do_not_stall_the_loop(hostile: Hostile) -> None:
    bodies_that_cost_cpu(hostile, strict=False)


@pytest.mark.slow
def test_bodies_that_cost_cpu_keep_healthz_under_50ms(hostile: Hostile) -> None:
    bodies_that_cost_cpu(hostile, strict=True)


def bodies_that_cost_cpu(hostile: Hostile, *, strict: bool) -> None:
    h = hostile
    bound = healthz_bound(h, strict)
    bomb = zlib.compress(b"\0" * (300 << 20), 9)  # 300 KB on the wire, 300 MB inflated
    with Prober(lambda: h.fresh("GET", "/healthz")) as health:
        time.sleep(0.2)
        r = h.fresh(
            "POST", "/v2/namespaces/bomb", "acme", content=bomb, headers={"content-encoding": "deflate"}
        )
        assert r.status_code == 413, r.text
        assert "server.max_body_bytes" in r.json()["error"]
        gz = gzip.compress(b"[" * (1 << 20))  # not JSON: refused after inflating, 400
        r = h.fresh("POST", "/v2/namespaces/bomb", "acme", content=gz, headers={"content-encoding": "gzip"})
        assert r.status_code == 400
        time.sleep(0.2)
    assert set(health.statuses) == {200}
    assert p99(health.latencies) < bound, "healthz during a compression bomb " + summary(health.latencies)
    print(f"\nhealthz during a 300 MB compression bomb: {summary(health.latencies)}")

    big = {"upsert_rows": [{"id": 1, "t": "x" * (20 << 20)}]}  # one 20 MiB attribute value
    with Prober(lambda: h.fresh("GET", "/healthz")) as health:
        time.sleep(0.2)
        r = h.fresh("POST", "/v2/namespaces/bigattr", "acme", json=big)
        assert r.status_code < 500, r.text
        time.sleep(0.2)
    assert p99(health.latencies) < bound, "healthz during a 20 MiB attribute " + summary(health.latencies)
    print(f"healthz during a write of a 20 MiB attribute: {summary(health.latencies)}")


def test_header_limits_answer_431_without_a_key(hostile: Hostile) -> None:
    h = hostile

    def raw(request: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", h.server.port)) as s:
            try:
                s.sendall(request)
            except (BrokenPipeError, ConnectionResetError):
                pass
            s.settimeout(10)
            return read_all(s)

    huge = raw(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * (8 << 20) + b"\r\n\r\n")
    assert huge.startswith(b"HTTP/1.1 431 "), huge[:200]
    assert b"server.max_header_bytes" in huge
    many = raw(
        b"GET /healthz HTTP/1.1\r\nhost: x\r\n" + b"".join(b"x-%d: 1\r\n" % i for i in range(500)) + b"\r\n"
    )
    assert many.startswith(b"HTTP/1.1 431 ") and b"server.max_headers" in many
    ok = raw(
        b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n" + b"x-fine: " + b"b" * 4000 + b"\r\n\r\n"
    )
    assert ok.startswith(b"HTTP/1.1 200 ")
    # a large body after small headers is not a header problem
    body = json.dumps({"upsert_rows": [{"id": 7, "t": "y" * 300_000}]}).encode()
    r = h.fresh(
        "POST", "/v2/namespaces/hdr", "acme", content=body, headers={"content-type": "application/json"}
    )
    assert r.status_code == 200, r.text
