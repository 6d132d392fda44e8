"""Failure paths of the HTTP layer, driven by a fake engine: error mapping, deadlines, the
committed-write rule, draining, concurrency and rate limits, body limits and encodings."""

from __future__ import annotations

import asyncio
import gzip
import logging
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from starlette.testclient import TestClient

from lagoon.config import LimitsSettings
from lagoon.errors import Conflict, DataCorruption, NotFound, TooManyRequests, Unavailable, Unprocessable
from lagoon.logs import JsonFormatter
from lagoon.server import split_listen
from lagoon.server.limits import QueryLimiter, RateLimiter
from lagoon.storage.base import StoreUnavailable
from lagoon.storage.memory import MemoryStore

from .conftest import assert_error, memory_settings
from .fake_engine import WRITE_OK, FakeEngine, raising, sleeping

MakeClient = Callable[..., TestClient]
VEC_QUERY = {"rank_by": ["vector", "ANN", [0.1, 0.2]], "top_k": 1}


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def fake(make_client: MakeClient, engine: FakeEngine) -> TestClient:
    return make_client(engine=engine)


# --- error mapping ---------------------------------------------------------------------------


def test_internal_error_is_500_with_request_id_and_no_details(
    fake: TestClient, engine: FakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    engine.behave["query"] = raising(RuntimeError("secret internal detail"))
    with caplog.at_level(logging.ERROR, logger="lagoon.server"):
        r = fake.post("/v2/namespaces/ns1/query", json=VEC_QUERY)
    body = assert_error(r, 500, "internal error", r.headers["x-request-id"])
    assert "secret" not in body["error"]
    assert r.headers["x-should-retry"] == "false"
    logged = [rec for rec in caplog.records if rec.name == "lagoon.server" and rec.exc_info]
    assert logged and "secret internal detail" in JsonFormatter().format(logged[0])


@pytest.mark.parametrize(
    ("exc", "status", "retry"),
    [
        (NotFound("namespace 'ns1' was not found"), 404, False),
        (Unprocessable("cannot do that"), 422, False),
        (Conflict("contention"), 409, True),
        (TooManyRequests("backpressure", retry_after=2.5), 429, True),
        (Unavailable("store down"), 503, True),
        (DataCorruption("bad checksum"), 500, False),
        (RecursionError("deep"), 400, False),
    ],
)
def test_engine_errors_map_to_statuses(
    fake: TestClient, engine: FakeEngine, exc: BaseException, status: int, retry: bool
) -> None:
    engine.behave["query"] = raising(exc)
    r = fake.post("/v2/namespaces/ns1/query", json=VEC_QUERY)
    assert_error(r, status)
    if retry:
        assert int(r.headers["retry-after"]) >= 1
        assert int(r.headers["retry-after-ms"]) >= 1
    else:
        assert "retry-after" not in r.headers
    if status == 429:
        assert r.headers["retry-after"] == "3" and r.headers["retry-after-ms"] == "2500"
    if status == 500:
        assert r.headers["x-should-retry"] == "false"


def test_branch_at_version_reaches_the_engine(fake: TestClient, engine: FakeEngine) -> None:
    assert (
        fake.post("/v2/namespaces/b/branch", json={"source_namespace": "a", "at_version": 3}).status_code
        == 200
    )
    assert engine.calls[-1] == ("branch", "b", {"source_namespace": "a", "at_version": 3}, "default")
    for bad in (0, -1, "3", True, 1.5):
        r = fake.post("/v2/namespaces/b/branch", json={"source_namespace": "a", "at_version": bad})
        assert_error(r, 400, "at_version")


def test_branch_body_validation(fake: TestClient) -> None:
    assert_error(fake.post("/v2/namespaces/b/branch", json={}), 400, "source_namespace")
    assert_error(fake.post("/v2/namespaces/b/branch", json={"source_namespace": "a", "x": 1}), 400, "x")
    assert_error(fake.post("/v2/namespaces/b/branch", json={"source_namespace": ".."}), 400, "namespace")


# --- deadlines and the committed-write rule ---------------------------------------------------


def test_query_past_deadline_is_503(make_client: MakeClient, engine: FakeEngine) -> None:
    c = make_client(memory_settings(server={"request_timeout_secs": 0.2}), engine=engine)
    engine.behave["query"] = sleeping(5.0)
    t0 = time.monotonic()
    r = c.post("/v2/namespaces/ns1/query", json=VEC_QUERY)
    assert time.monotonic() - t0 < 2.0
    assert_error(r, 503, "deadline")
    assert r.headers["retry-after"] == "1"


def test_write_in_flight_at_deadline_is_503_not_acknowledged(
    make_client: MakeClient, engine: FakeEngine
) -> None:
    c = make_client(memory_settings(server={"request_timeout_secs": 0.2}), engine=engine)
    engine.behave["write"] = sleeping(5.0, WRITE_OK)
    assert_error(c.post("/v2/namespaces/ns1", json={"upsert_rows": [{"id": 1}]}), 503, "not acknowledged")


def test_write_committed_when_deadline_fires_is_200(make_client: MakeClient, engine: FakeEngine) -> None:
    """The commit lands while the deadline fires: the write must be acknowledged, never 503."""
    c = make_client(memory_settings(server={"request_timeout_secs": 0.2}), engine=engine)

    async def commit_ignoring_cancellation(**_: Any) -> Any:
        try:
            await asyncio.sleep(0.5)
        except asyncio.CancelledError:
            await asyncio.sleep(0.05)  # the commit is past its point of no return: finish it
        return WRITE_OK

    engine.behave["write"] = commit_ignoring_cancellation
    r = c.post("/v2/namespaces/ns1", json={"upsert_rows": [{"id": 1}]})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "OK"


def test_write_finishing_late_in_a_blocked_loop_is_200(make_client: MakeClient, engine: FakeEngine) -> None:
    c = make_client(memory_settings(server={"request_timeout_secs": 0.2}), engine=engine)

    async def commit_then_block(**_: Any) -> Any:
        await asyncio.sleep(0.1)
        time.sleep(0.3)  # the loop is blocked past the deadline, but the commit is done
        return WRITE_OK

    engine.behave["write"] = commit_then_block
    assert c.post("/v2/namespaces/ns1", json={"upsert_rows": [{"id": 1}]}).status_code == 200


def test_server_total_ms_is_whole_server_time_as_integer(fake: TestClient) -> None:
    w = fake.post("/v2/namespaces/ns1", json={"upsert_rows": [{"id": 1}]}).json()
    assert isinstance(w["performance"]["server_total_ms"], int)
    q = fake.post("/v2/namespaces/ns1/query", json=VEC_QUERY).json()
    perf = q["performance"]
    assert isinstance(perf["server_total_ms"], int) and isinstance(perf["query_execution_ms"], int)
    assert perf["query_execution_ms"] <= perf["server_total_ms"]


# --- draining ---------------------------------------------------------------------------------


def test_draining_refuses_mutations_and_readiness(fake: TestClient, engine: FakeEngine) -> None:
    assert fake.get("/readyz").status_code == 200
    fake.app.state.server.draining = True  # type: ignore[attr-defined]
    assert_error(fake.post("/v2/namespaces/ns1", json={"upsert_rows": [{"id": 1}]}), 503, "shutting down")
    assert_error(fake.delete("/v2/namespaces/ns1"), 503, "shutting down")
    assert_error(fake.post("/v1/namespaces/ns1/schema", json={"a": "string"}), 503, "shutting down")
    assert_error(fake.patch("/v1/namespaces/ns1/metadata", json={"read_only": True}), 503, "shutting down")
    assert fake.post("/v2/namespaces/ns1/query", json=VEC_QUERY).status_code == 200
    assert_error(fake.get("/readyz"), 503, "shutting down")
    assert fake.get("/healthz").status_code == 200
    assert [c[0] for c in engine.calls] == ["query"]


def test_lifespan_closes_engine(make_client: MakeClient, engine: FakeEngine) -> None:
    c = make_client(engine=engine)
    c.__exit__(None, None, None)
    assert engine.closed


# --- concurrency limit -------------------------------------------------------------------------


def test_concurrent_queries_over_limit_get_429(make_client: MakeClient, engine: FakeEngine) -> None:
    c = make_client(
        memory_settings(server={"max_concurrent_queries": 2}), engine=engine, query_queue_wait_secs=0.1
    )
    engine.behave["query"] = sleeping(1.5, {"rows": []})
    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda _: c.post("/v2/namespaces/ns1/query", json=VEC_QUERY), range(4)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 200, 429, 429], statuses
    limited = next(r for r in responses if r.status_code == 429)
    assert_error(limited, 429, "concurrent queries")
    assert limited.headers["retry-after"] == "1"
    assert engine.max_active_queries == 2
    # Another namespace has its own slots.
    assert c.post("/v2/namespaces/other/query", json=VEC_QUERY).status_code == 200


def test_waiting_query_gets_the_freed_slot(make_client: MakeClient, engine: FakeEngine) -> None:
    c = make_client(
        memory_settings(server={"max_concurrent_queries": 1}), engine=engine, query_queue_wait_secs=2.0
    )
    engine.behave["query"] = sleeping(0.2, {"rows": []})
    with ThreadPoolExecutor(3) as pool:
        responses = list(pool.map(lambda _: c.post("/v2/namespaces/ns1/query", json=VEC_QUERY), range(3)))
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert engine.max_active_queries == 1


def test_query_limiter_multi_query_takes_slots() -> None:
    async def scenario() -> list[str]:
        limiter = QueryLimiter(4, wait_secs=0.05)
        out = []
        async with limiter.slot(("o", "n"), 3):
            try:
                async with limiter.slot(("o", "n"), 2):
                    out.append("second ran")
            except TooManyRequests:
                out.append("429")
            async with limiter.slot(("o", "n"), 1):
                out.append("single ran")
        async with limiter.slot(("o", "n"), 99):  # capped at the limit: runs alone
            out.append("huge ran")
        assert limiter.active(("o", "n")) == 0
        return out

    assert asyncio.run(scenario()) == ["429", "single ran", "huge ran"]


# --- rate limits ------------------------------------------------------------------------------


def test_request_rate_limit(make_client: MakeClient, engine: FakeEngine) -> None:
    c = make_client(memory_settings(limits={"requests_per_second": 1.0}), engine=engine)
    codes = [c.get("/v2/namespaces/ns1/metadata").status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    r = c.get("/v2/namespaces/ns1/metadata")
    assert_error(r, 429, "requests_per_second")
    assert int(r.headers["retry-after"]) >= 1


def test_rate_limiter_buckets() -> None:
    now = [0.0]
    rl = RateLimiter(LimitsSettings(requests_per_second=10, write_bytes_per_minute=600), clock=lambda: now[0])
    admitted = 0
    for _ in range(30):
        try:
            rl.check_request("k")
            admitted += 1
        except TooManyRequests:
            pass
    assert admitted == 20  # burst = 2 * rate
    now[0] += 1.0
    rl.check_request("k")  # refilled
    rl.check_request("other")  # buckets are per key
    rl.check_write_bytes("k", 1000)  # admitted while positive, goes into debt
    with pytest.raises(TooManyRequests) as info:
        rl.check_write_bytes("k", 1)
    assert info.value.retry_after is not None and info.value.retry_after > 30
    now[0] += 60.0
    rl.check_write_bytes("k", 1)


def test_write_bytes_limit(make_client: MakeClient, engine: FakeEngine) -> None:
    c = make_client(memory_settings(limits={"write_bytes_per_minute": 100}), engine=engine)
    big = {"upsert_rows": [{"id": i, "text": "x" * 50} for i in range(3)]}
    assert c.post("/v2/namespaces/ns1", json=big).status_code == 200
    assert_error(c.post("/v2/namespaces/ns1", json=big), 429, "write_bytes_per_minute")
    assert len([call for call in engine.calls if call[0] == "write"]) == 1


# --- bodies -------------------------------------------------------------------------------------


@pytest.fixture
def small(make_client: MakeClient, engine: FakeEngine) -> TestClient:
    return make_client(memory_settings(server={"max_body_bytes": 2048}), engine=engine)


def test_body_over_limit_by_content_length_is_413_before_reading(
    small: TestClient, engine: FakeEngine
) -> None:
    r = small.post(
        "/v2/namespaces/ns1", content=b"{" + b" " * 4096 + b"}", headers={"content-type": "application/json"}
    )
    assert_error(r, 413, "max_body_bytes")
    assert engine.calls == []


def test_streamed_body_over_limit_is_413(small: TestClient, engine: FakeEngine) -> None:
    read: list[int] = []

    def chunks() -> Iterator[bytes]:
        for i in range(100):
            read.append(i)
            yield b" " * 512

    r = small.post("/v2/namespaces/ns1", content=chunks(), headers={"content-type": "application/json"})
    assert_error(r, 413, "max_body_bytes")
    assert engine.calls == []


def test_gzip_body_accepted(small: TestClient, engine: FakeEngine) -> None:
    body = b'{"upsert_rows": [{"id": 1, "t": "' + b"a" * 1500 + b'"}]}'
    r = small.post("/v2/namespaces/ns1", content=gzip.compress(body), headers={"content-encoding": "gzip"})
    assert r.status_code == 200, r.text
    assert engine.calls[-1][2]["upsert_rows"][0]["t"] == "a" * 1500
    two_members = gzip.compress(body[:10]) + gzip.compress(body[10:])
    assert (
        small.post(
            "/v2/namespaces/ns1", content=two_members, headers={"content-encoding": "gzip"}
        ).status_code
        == 200
    )
    deflated = zlib.compress(body)
    assert (
        small.post(
            "/v2/namespaces/ns1", content=deflated, headers={"content-encoding": "deflate"}
        ).status_code
        == 200
    )


def test_gzip_bomb_is_413(small: TestClient, engine: FakeEngine) -> None:
    bomb = gzip.compress(b"[" + b"0," * 1_000_000 + b"0]")
    assert len(bomb) < 2048
    assert_error(small.post("/v2/namespaces/ns1", content=bomb, headers={"content-encoding": "gzip"}), 413)
    assert engine.calls == []


def test_bad_encodings_are_400(small: TestClient) -> None:
    assert_error(
        small.post("/v2/namespaces/ns1", content=b"not gzip", headers={"content-encoding": "gzip"}),
        400,
        "gzip",
    )
    truncated = gzip.compress(b'{"a": 1}')[:-6]
    assert_error(
        small.post("/v2/namespaces/ns1", content=truncated, headers={"content-encoding": "gzip"}), 400
    )
    assert_error(
        small.post("/v2/namespaces/ns1", content=b"{}", headers={"content-encoding": "br"}),
        400,
        "Content-Encoding",
    )


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"{bad json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'"text"', "must be a JSON object"),
        (b"null", "must be a JSON object"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[" * 2000 + b"]" * 2000, "not valid JSON"),
    ],
)
def test_malformed_bodies_are_400(fake: TestClient, content: bytes, fragment: str) -> None:
    for path in ("/v2/namespaces/ns1", "/v2/namespaces/ns1/query", "/v1/namespaces/ns1/schema"):
        assert_error(fake.post(path, content=content), 400, fragment)


# --- readiness, HEAD, listen parsing -----------------------------------------------------------


class UnreachableStore(MemoryStore):
    async def put(self, key: str, data: bytes, mode: Any = "overwrite") -> Any:
        raise StoreUnavailable("connection refused")


class HangingStore(MemoryStore):
    async def put(self, key: str, data: bytes, mode: Any = "overwrite") -> Any:
        await asyncio.sleep(30)


@pytest.mark.parametrize(
    ("store", "fragment"), [(UnreachableStore(), "unreachable"), (HangingStore(), "did not answer")]
)
def test_readyz_fails_when_store_is_unreachable(
    make_client: MakeClient,
    engine: FakeEngine,
    store: MemoryStore,
    fragment: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("lagoon.server.routes.READY_TIMEOUT_SECS", 0.2)
    c = make_client(engine=engine, store=store)
    assert_error(c.get("/readyz"), 503, "not ready", fragment)
    assert c.get("/healthz").status_code == 200


def test_head_requests(fake: TestClient) -> None:
    r = fake.head("/healthz")
    assert r.status_code == 200 and r.content == b""
    assert fake.head("/v2/namespaces/ns1/metadata").status_code == 200


def test_split_listen() -> None:
    assert split_listen("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert split_listen("[::1]:9000") == ("::1", 9000)
    assert split_listen("0.0.0.0:1") == ("0.0.0.0", 1)


def test_in_flight_gauge(fake: TestClient, engine: FakeEngine) -> None:
    engine.behave["query"] = sleeping(0.0, {"rows": []})
    fake.post("/v2/namespaces/ns1/query", json=VEC_QUERY)
    text = fake.get("/metrics").text
    assert "lagoon_http_requests_in_flight 1.0" in text  # the scrape itself
    assert 'lagoon_query_duration_seconds_count{kind="vector"} 1.0' in text
