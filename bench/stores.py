"""The stores the benchmarks run on: a local folder (``fs``) or a real S3 server (``seaweedfs``),
optionally with round-trip latency added (``rtt_ms``) to emulate a bucket in another building.

- ``fs``: ``FsStore`` on a temporary folder; ``rtt_ms`` delays every store call in-process.
- ``seaweedfs``: ``weed mini`` on loopback (``tests/seaweedfs.py``: free ports, signatures on),
  reached through ``S3Store``; ``rtt_ms`` puts ``bench/latency_proxy.py`` between them, so the
  delay is on the wire (per request and per new connection), as a real remote bucket's is.

``bench_store(kind, rtt_ms)`` yields a ``BenchStore`` that opens stores in this process
(``open()``) and gives the ``lagoon-server`` options and environment to use it from another
(``server_args()``, ``env``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.latency_proxy import LatencyProxy

KINDS = ("fs", "seaweedfs")
BUCKET = "lagoon-bench"


class Delayed:
    """Delays every request of an in-process store by ``rtt`` seconds (fs with added latency)."""

    def __init__(self, inner: Any, rtt: float) -> None:
        self.inner, self.rtt = inner, rtt

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name in ("get", "get_range", "get_ranges", "head", "put", "delete", "list_prefixes", "now"):

            async def call(*a: Any, **kw: Any) -> Any:
                await asyncio.sleep(self.rtt)
                return await attr(*a, **kw)

            return call
        if name == "list":

            async def listing(*a: Any, **kw: Any) -> Any:
                await asyncio.sleep(self.rtt)
                async for m in attr(*a, **kw):
                    yield m

            return listing
        return attr


@dataclass
class BenchStore:
    kind: str
    rtt_ms: float
    root: Path
    endpoint: str = ""
    env: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.kind + (f"+{self.rtt_ms:g}ms" if self.rtt_ms else "")

    def open(self, *, retry: bool = False) -> Any:
        """A store for this process (``retry=True``: the full stack servers use)."""
        from lagoon.config import StorageSettings
        from lagoon.storage.factory import open_store
        from lagoon.storage.fs import FsStore

        if self.kind == "fs":
            store: Any = FsStore(self.root / "store")
            return Delayed(store, self.rtt_ms / 1000) if self.rtt_ms else store
        for name, value in self.env.items():
            os.environ[name] = value
        settings = StorageSettings(backend="s3", bucket=BUCKET, endpoint=self.endpoint, region="us-east-1")
        if retry:
            return open_store(settings)
        from lagoon.storage.s3 import S3Store

        return S3Store(BUCKET, endpoint=self.endpoint, region="us-east-1")

    def server_args(self) -> list[str]:
        """``lagoon-server`` options that point it at this store (fs: no added latency)."""
        if self.kind == "fs":
            return ["--storage-backend", "fs", "--storage-root", str(self.root / "store")]
        return [
            "--storage-backend",
            "s3",
            "--set",
            f"storage.bucket={BUCKET}",
            "--set",
            f"storage.endpoint={self.endpoint}",
            "--set",
            "storage.region=us-east-1",
            "--set",
            f"cache.dir={self.root / 'cache'}",
        ]


@contextlib.contextmanager
def bench_store(kind: str, rtt_ms: float = 0.0) -> Iterator[BenchStore]:
    if kind not in KINDS:
        raise SystemExit(f"unknown store {kind!r}: use one of {', '.join(KINDS)}")
    with tempfile.TemporaryDirectory(prefix=f"lagoon-bench-{kind}-") as tmp:
        root = Path(tmp)
        if kind == "fs":
            yield BenchStore(kind, rtt_ms, root)
            return
        from tests.seaweedfs import SeaweedFS

        server = SeaweedFS(root / "seaweedfs", buckets=(BUCKET,)).start()
        proxy = None
        try:
            endpoint = server.endpoint
            if rtt_ms:
                proxy = LatencyProxy("127.0.0.1", server.ports["s3"], rtt_ms).start()
                endpoint = proxy.endpoint
            yield BenchStore(kind, rtt_ms, root, endpoint=endpoint, env=server.env())
        finally:
            if proxy is not None:
                proxy.stop()
            server.stop()
