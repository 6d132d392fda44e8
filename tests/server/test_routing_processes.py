"""Commit routing through a real ``lagoon-server`` with two serving processes
(engine/routing.py): writes to one namespace received by either process are committed by its
owning process only; when the owner is killed mid-load no acknowledged write is lost and writes
go on being acknowledged; a stop signal during the load drains it, and everything acknowledged
is there when the node comes back.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx

from lagoon.engine.routing import owner_index
from lagoon.format.keys import DEFAULT_ORG
from lagoon.format.wal import decode_entry
from tests.server.conftest import LiveServer
from tests.server.test_processes import roles

NS = "routed"


def wal_writers(root: Path) -> list[str]:
    entries = sorted(
        (decode_entry(p.read_bytes()) for p in root.glob(f"**/{NS}/wal/*.wal")), key=lambda e: e.seq
    )
    return [e.writer for e in entries]


class Writers:
    """``n`` clients writing 10-row upserts until stopped, each request on a new connection (the
    kernel hands it to a process waiting in ``accept``: both receive writes); ``acked`` holds
    every id of a 200 answer, ``statuses`` every answer or transport error."""

    def __init__(self, url: str, n: int) -> None:
        self.url = url
        self.stop = threading.Event()
        self.acked: set[int] = set()
        self.statuses: list[int | str] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(w,)) for w in range(n)]
        for t in self.threads:
            t.start()

    def _run(self, w: int) -> None:
        k = 0
        while not self.stop.is_set():
            ids = [w * 1_000_000 + k * 10 + j for j in range(10)]
            k += 1
            body = {"upsert_rows": [{"id": i, "n": i % 97, "vector": [1.0, float(i % 13)]} for i in ids]}
            body["distance_metric"] = "euclidean_squared"
            try:
                r = httpx.post(f"{self.url}/v2/namespaces/{NS}", json=body, timeout=60)
                status: int | str = r.status_code
            except httpx.HTTPError as e:  # a connection to the killed process, or a stopped node
                status = type(e).__name__
            with self.lock:
                self.statuses.append(status)
                if status == 200:
                    self.acked.update(ids)

    def oks(self) -> int:
        with self.lock:
            return sum(s == 200 for s in self.statuses)

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(120)


def routed(url: str, outcome: str) -> float:
    total = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith("lagoon_routed_writes_total{") and f'outcome="{outcome}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def live_ids(url: str) -> set[int]:
    out: set[int] = set()
    last = None
    while True:  # page by id
        q: dict[str, object] = {"rank_by": ["id", "asc"], "top_k": 1200, "include_attributes": []}
        if last is not None:
            q["filters"] = ["id", "Gt", last]
        r = httpx.post(f"{url}/v2/namespaces/{NS}/query", json=q, timeout=60)
        r.raise_for_status()
        rows = r.json()["rows"]
        out.update(row["id"] for row in rows)
        if len(rows) < 1200:
            return out
        last = rows[-1]["id"]


def wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_namespace_is_committed_by_its_owner_and_survives_its_death_and_a_drain(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = LiveServer(
        data, tmp_path / "server.log", ("--set", "server.processes=2", "--set", "server.commit_routing=true")
    )
    try:
        owner = f"server-{owner_index(DEFAULT_ORG, NS, 2)}"
        # /readyz answers once one process serves: until the owner listens, the other commits
        # what it receives itself (documented fallback); once a write was forwarded, the link is up
        writers = Writers(server.url, 6)
        wait_for(lambda: routed(server.url, "forwarded") > 0, 120, "a write forwarded to the owner")
        writers.join()
        assert set(writers.statuses) == {200}
        settled, warm = len(wal_writers(data)), writers.acked
        writers = Writers(server.url, 6)
        wait_for(lambda: writers.oks() >= 60, 120, "60 acknowledged writes")
        writers.join()
        assert set(writers.statuses) == {200}
        assert routed(server.url, "forwarded") > 0  # the other process received writes too
        later = wal_writers(data)[settled:]
        assert len(later) > 0 and len(set(later)) == 1  # every entry committed by one process
        for _ in range(4):  # strong reads on fresh connections, whichever process answers
            assert live_ids(server.url) == warm | writers.acked

        # the owner dies under load: nothing acknowledged is lost, writes go on
        writers = Writers(server.url, 6)
        wait_for(lambda: writers.oks() >= 20, 120, "writes before the kill")
        os.kill(roles(server.proc.pid)[owner], signal.SIGKILL)
        before = writers.oks()
        wait_for(lambda: writers.oks() >= before + 30, 120, "writes acknowledged after the kill")
        writers.join()
        assert set(writers.statuses) <= {200, 503, "RemoteProtocolError", "ReadError", "ConnectError"}, set(
            writers.statuses
        )
        acked = writers.acked
        assert acked <= live_ids(server.url)

        # a stop signal under load: the drain answers what it took; all acknowledged is kept
        wait_for(lambda: owner in roles(server.proc.pid), 120, "the owner's restart")
        writers = Writers(server.url, 6)
        wait_for(lambda: writers.oks() >= 20, 120, "writes before the stop")
        assert server.stop() == 0, server.log()
        writers.join()
        acked |= writers.acked
    finally:
        server.stop()
    server = LiveServer(
        data, tmp_path / "server2.log", ("--set", "server.processes=2", "--set", "server.commit_routing=true")
    )
    try:
        assert acked <= live_ids(server.url)
    finally:
        assert server.stop() == 0
