"""``lagoon-worker`` as a process: indexes what writers left in the bucket, stops on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from lagoon.engine import manifest_store
from lagoon.storage.fs import FsStore

from .helpers import KEYS, NS, Model, db_on, live_view, make_settings

WORKER = Path(sys.executable).parent / "lagoon-worker"


def test_lagoon_worker_indexes_and_stops_on_sigterm(tmp_path: Path) -> None:
    model = Model()

    async def write() -> None:
        db = db_on(FsStore(tmp_path, fsync=False), make_settings())
        await db.write(NS, model.upsert_body([1, 2, 3], 7))
        model.upserted([1, 2, 3], 7)
        await db.close()

    asyncio.run(write())
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAGOON_")}
    with socket.socket() as sock:  # a free loopback port for the worker's /metrics
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [
            str(WORKER),
            "--storage-backend",
            "fs",
            "--storage-root",
            str(tmp_path),
            "--set",
            "indexer.poll_interval_secs=0.05",
            "--set",
            "indexer.flush_interval_secs=0.01",
            "--set",
            f"observability.metrics_listen=127.0.0.1:{port}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        store = FsStore(tmp_path, fsync=False)
        deadline = time.monotonic() + 120
        while asyncio.run(manifest_store.read_latest(store, KEYS)) is None:
            assert time.monotonic() < deadline and proc.poll() is None, "the worker indexed nothing"
            time.sleep(0.05)
        assert asyncio.run(live_view(store)) == model.docs
        while True:  # the worker's own metrics endpoint reports what it did
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
                text = resp.read().decode()
            if 'lagoon_index_builds_total{outcome="committed"} 1.0' in text:
                break
            assert time.monotonic() < deadline, text
            time.sleep(0.05)
        assert "lagoon_indexing_lag_seconds" in text and "lagoon_compaction_running" in text
        assert "lagoon_objstore_requests_total" in text
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out.decode()
    messages = [json.loads(line).get("msg") for line in out.decode().splitlines() if line.startswith("{")]
    assert "worker started" in messages and "index build committed" in messages
    assert "serving metrics" in messages
    assert messages[-1] == "worker stopped"
