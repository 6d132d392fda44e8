"""A worker process for the multi-process lifecycle test (not a test module).

    python tests/engine/lifecycle/worker_proc.py STORE NODE SETTINGS_JSON [FAILPOINT]

Runs an ``IndexerLoop`` over STORE (a folder: ``FsStore(STORE)``; ``s3://bucket/prefix?...``: the
full S3 store stack, credentials from the environment) until SIGTERM, logging JSON events to stdout. With
``FAILPOINT`` (e.g. ``compactor.before_commit``, ``gc.before_delete``), the first time the worker
reaches it, it prints a ``paused`` line and stops itself with SIGSTOP; the test resumes it with
SIGCONT much later (a zombie).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

from lagoon.config import ObservabilitySettings, Settings
from lagoon.engine.components import Components
from lagoon.engine.scheduler import IndexerLoop
from lagoon.logs import configure_logging
from lagoon.storage.factory import store_from_url
from lagoon.storage.fs import FsStore


def main() -> None:
    root, node, settings_json = sys.argv[1], sys.argv[2], sys.argv[3]
    pause_at = sys.argv[4] if len(sys.argv) > 4 else None
    settings = Settings(**json.loads(settings_json))
    comps = Components(node_id=node)
    if pause_at:
        fired = False

        def stop_here() -> None:
            nonlocal fired
            if fired:
                return
            fired = True
            sys.stdout.write(json.dumps({"msg": "paused", "pid": os.getpid()}) + "\n")
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGSTOP)
            sys.stdout.write(json.dumps({"msg": "resumed"}) + "\n")
            sys.stdout.flush()

        comps.failpoints.arm(pause_at, stop_here)
    configure_logging(ObservabilitySettings(log_format="json", log_level="info"))

    async def run() -> None:
        store = store_from_url(root) if root.startswith("s3://") else FsStore(root, fsync=False)
        loop = IndexerLoop(store, settings, comps)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        loop.start()
        await stop.wait()
        await loop.stop()
        await store.close()

    asyncio.run(run())


if __name__ == "__main__":
    main()
