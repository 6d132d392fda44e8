"""``lagoon-worker`` as a process: indexes what writers left in the bucket, stops on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
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
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        store = FsStore(tmp_path, fsync=False)
        deadline = time.monotonic() + 30
        while asyncio.run(manifest_store.read_latest(store, KEYS)) is None:
            assert time.monotonic() < deadline and proc.poll() is None, "the worker indexed nothing"
            time.sleep(0.05)
        assert asyncio.run(live_view(store)) == model.docs
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out.decode()
    messages = [json.loads(line).get("msg") for line in out.decode().splitlines() if line.startswith("{")]
    assert "worker started" in messages and "index build committed" in messages
    assert messages[-1] == "worker stopped"
