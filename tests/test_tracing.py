"""Tracing (observability.otlp_endpoint): the query path's spans and their nesting, in process;
and a real ``lagoon-server`` exporting them over OTLP/HTTP to a collector on loopback."""

from __future__ import annotations

import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import numpy as np
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider

from lagoon.config import Settings
from lagoon.engine.database import Database
from lagoon.engine.indexer import index_namespace
from lagoon.format.keys import NamespaceKeys
from lagoon.storage.instrumented import InstrumentedStore
from lagoon.storage.memory import MemoryStore
from lagoon.tracing import traces_url
from tests.engine.lifecycle.helpers import components


class Capture(SpanProcessor):
    """Keeps finished spans only while ``on`` (the provider is process-wide)."""

    def __init__(self) -> None:
        self.on = False
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        if self.on:
            self.spans.append(span)


@pytest.fixture(scope="module")
def capture() -> Iterator[Capture]:
    cap = Capture()
    provider = TracerProvider()
    provider.add_span_processor(cap)
    trace.set_tracer_provider(provider)  # once per process; later sets are ignored
    yield cap
    cap.on = False


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_query_spans_nest_from_query_to_parts_and_store(capture: Capture) -> None:
    assert isinstance(trace.get_tracer_provider(), TracerProvider)  # ours (set once per process)
    store = InstrumentedStore(MemoryStore())
    settings = Settings()
    writer = Database(store, settings, components("w"))
    rng = np.random.default_rng(0)
    rows = [{"id": i, "vector": rng.standard_normal(8).tolist(), "t": f"w{i % 7}"} for i in range(300)]
    await writer.write("ns", {"upsert_rows": rows[:200], "distance_metric": "euclidean_squared"})
    await index_namespace(store, NamespaceKeys.of("default", "ns"), settings, components("i"), force=True)
    await writer.write("ns", {"upsert_rows": rows[200:]})  # a WAL tail next to the segment
    await writer.close()

    capture.on = True
    db = Database(store, settings, components("reader"))  # cold: its store requests are traced
    res = await db.query(
        "ns", {"rank_by": ["vector", "ANN", [0.0] * 8], "top_k": 5, "filters": ["t", "Eq", "w3"]}
    )
    capture.on = False
    await db.close()
    assert len(res["rows"]) == 5

    by_id = {s.context.span_id: s for s in capture.spans if s.context is not None}

    def parent(s: ReadableSpan) -> str | None:
        return by_id[s.parent.span_id].name if s.parent is not None and s.parent.span_id in by_id else None

    (query,) = [s for s in capture.spans if s.name == "lagoon.query"]
    assert query.attributes is not None and query.attributes["lagoon.namespace"] == "ns"
    assert {s.name for s in capture.spans if parent(s) == "lagoon.query"} == {
        "lagoon.snapshot",
        "lagoon.plan",
        "lagoon.execute",
    }
    parts = [s for s in capture.spans if s.name == "lagoon.part"]
    assert all(parent(s) == "lagoon.execute" for s in parts)
    names = {(s.attributes or {})["lagoon.part"] for s in parts}
    assert any(str(n).startswith("segment ") for n in names) and "wal run" in names
    assert {(s.attributes or {})["lagoon.operation"] for s in parts} == {"filter", "vector"}
    store_spans = [s for s in capture.spans if s.name.startswith("lagoon.objstore.")]
    assert store_spans and all(parent(s) is not None for s in store_spans)
    assert any(parent(s) == "lagoon.snapshot" for s in store_spans)  # the cold load's requests
    assert any("/manifest/CURRENT" in str((s.attributes or {})["lagoon.key"]) for s in store_spans)


def test_traces_url() -> None:
    assert traces_url("http://c:4318") == "http://c:4318/v1/traces"
    assert traces_url("http://c:4318/v1/traces/") == "http://c:4318/v1/traces"


class _Collector(http.server.BaseHTTPRequestHandler):
    bodies: ClassVar[list[tuple[str, bytes]]] = []

    def do_POST(self) -> None:  # (http.server's method name)
        n = int(self.headers.get("Content-Length", "0"))
        type(self).bodies.append((self.path, self.rfile.read(n)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_lagoon_server_exports_spans_over_otlp(tmp_path: Path) -> None:
    collector = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAGOON_")}
    env["OTEL_BSP_SCHEDULE_DELAY"] = "100"  # export batches every 100 ms
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "lagoon-server"),
            "--listen",
            f"127.0.0.1:{port}",
            "--storage-root",
            str(tmp_path),
            "--set",
            f"observability.otlp_endpoint=http://127.0.0.1:{collector.server_address[1]}",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(base + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and server.poll() is None, "the server did not start"
            time.sleep(0.1)
        body = {"upsert_rows": [{"id": 1, "vector": [0.1, 0.2]}], "distance_metric": "cosine_distance"}
        assert httpx.post(base + "/v2/namespaces/t", json=body, timeout=10).status_code == 200
        q = {"rank_by": ["vector", "ANN", [0.1, 0.2]], "top_k": 1}
        assert httpx.post(base + "/v2/namespaces/t/query", json=q, timeout=10).json()["rows"][0]["id"] == 1
        while not any(b"lagoon.execute" in b for _, b in _Collector.bodies):
            assert time.monotonic() < deadline, "no span reached the collector"
            time.sleep(0.1)
    finally:
        server.send_signal(signal.SIGTERM)
        out, _ = server.communicate(timeout=30)
        collector.shutdown()
        collector.server_close()
    assert server.returncode in (0, -signal.SIGTERM), out.decode()  # (uvicorn re-raises SIGTERM)
    assert b"Application shutdown complete" in out
    paths = {p for p, _ in _Collector.bodies}
    assert paths == {"/v1/traces"}
    exported = b"".join(b for _, b in _Collector.bodies)
    for name in (b"lagoon.query", b"lagoon.snapshot", b"lagoon.plan", b"lagoon.part", b"lagoon-server"):
        assert name in exported, name
