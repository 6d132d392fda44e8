"""Authentication, roles, org scoping, the audit log, and what the logs may never contain."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from lagoon.auth import create_key, revoke_key
from lagoon.logs import JsonFormatter
from lagoon.storage.memory import MemoryStore

from .conftest import assert_error, memory_settings

MakeClient = Callable[..., TestClient]
QUERY = {"rank_by": ["id", "asc"], "top_k": 10}


class Keys:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.keys: dict[str, str] = {}

    def create(self, name: str, org: str, role: str) -> str:
        key, _ = create_key(self.path, org, role)
        self.keys[name] = key
        return key

    def headers(self, name: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.keys[name]}"}


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    k = Keys(tmp_path / "keys.toml")
    for org in ("acme", "globex"):
        for role in ("reader", "writer", "admin"):
            k.create(f"{org}-{role}", org, role)
    return k


@pytest.fixture
def authed(make_client: MakeClient, keys: Keys, tmp_path: Path) -> TestClient:
    settings = memory_settings(
        auth={"keys_file": str(keys.path)}, observability={"audit_log": str(tmp_path / "audit.jsonl")}
    )
    return make_client(settings)


def audit_lines(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_missing_and_invalid_keys_are_401(authed: TestClient, keys: Keys) -> None:
    r = authed.post("/v2/namespaces/ns/query", json=QUERY)
    assert_error(r, 401, "missing API key")
    assert r.headers["www-authenticate"].startswith("Bearer")
    for bad in ("Bearer nope", "Basic dXNlcjpwYXNz", "Bearer lgn_0123456789abcdef_" + "A" * 43):
        assert_error(authed.get("/v1/namespaces", headers={"authorization": bad}), 401, "invalid API key")
    # Probes and the spec need no key.
    assert authed.get("/healthz").status_code == 200
    assert authed.get("/readyz").status_code == 200
    assert authed.get("/openapi.json").status_code == 200
    assert authed.get("/metrics").status_code == 200


def test_revoked_key_is_401(authed: TestClient, keys: Keys) -> None:
    assert authed.get("/v1/namespaces", headers=keys.headers("acme-reader")).status_code == 200
    revoke_key(keys.path, keys.keys["acme-reader"])
    assert_error(authed.get("/v1/namespaces", headers=keys.headers("acme-reader")), 401, "revoked")


def test_roles(authed: TestClient, keys: Keys) -> None:
    def call(name: str, method: str, path: str, body: Any = None) -> int:
        return authed.request(method, path, json=body, headers=keys.headers(name)).status_code

    write = {"upsert_rows": [{"id": 1, "a": "x"}]}
    assert call("acme-writer", "POST", "/v2/namespaces/ns", write) == 200
    matrix = [
        ("POST", "/v2/namespaces/ns", write, "writer"),
        ("POST", "/v2/namespaces/ns/query", QUERY, "reader"),
        ("POST", "/v2/namespaces/ns/explain_query", QUERY, "reader"),
        ("GET", "/v2/namespaces/ns/metadata", None, "reader"),
        ("GET", "/v1/namespaces/ns/schema", None, "reader"),
        ("GET", "/v1/namespaces", None, "reader"),
        ("GET", "/v1/namespaces/ns/hint_cache_warm", None, "reader"),
        ("POST", "/v1/namespaces/ns/schema", {"b": "string"}, "writer"),
        ("POST", "/v1/namespaces/ns/schema", {"b": {"drop": True}}, "admin"),
        ("POST", "/v2/namespaces/ns", {"schema": {"a": {"drop": True}}}, "admin"),
        ("POST", "/v2/namespaces/ns2/branch", {"source_namespace": "ns"}, "writer"),
        ("PATCH", "/v1/namespaces/ns/metadata", {"read_only": False}, "admin"),
        ("POST", "/v1/namespaces/ns/_debug/recall", {}, "admin"),
        ("DELETE", "/v2/namespaces/ns", None, "admin"),
    ]
    rank = {"reader": 0, "writer": 1, "admin": 2}
    for method, path, body, needed in matrix:
        for role in ("reader", "writer"):
            status = call(f"acme-{role}", method, path, body)
            if rank[role] < rank[needed]:
                assert status == 403, (method, path, role, status)
            else:
                assert status != 403 and status != 401, (method, path, role, status)
    r = authed.delete("/v2/namespaces/ns", headers=keys.headers("acme-writer"))
    assert_error(r, 403, "admin")


def test_orgs_are_isolated(authed: TestClient, keys: Keys) -> None:
    body = {"upsert_rows": [{"id": 1, "secret": "acme data"}]}
    assert (
        authed.post("/v2/namespaces/shared", json=body, headers=keys.headers("acme-writer")).status_code
        == 200
    )
    other = keys.headers("globex-admin")
    missing = authed.get("/v2/namespaces/never-existed/metadata", headers=other)
    foreign = authed.get("/v2/namespaces/shared/metadata", headers=other)
    assert_error(foreign, 404)
    assert foreign.json()["error"] == missing.json()["error"].replace("never-existed", "shared")
    assert_error(authed.post("/v2/namespaces/shared/query", json=QUERY, headers=other), 404)
    assert authed.get("/v1/namespaces", headers=other).json() == {"namespaces": []}
    listed = authed.get("/v1/namespaces", headers=keys.headers("acme-reader")).json()
    assert listed == {"namespaces": [{"id": "shared"}]}
    # globex's own namespace of the same name is a different namespace.
    assert (
        authed.post(
            "/v2/namespaces/shared", json={"upsert_rows": [{"id": 2}]}, headers=keys.headers("globex-writer")
        ).status_code
        == 200
    )
    rows = authed.post("/v2/namespaces/shared/query", json=QUERY, headers=keys.headers("acme-reader")).json()[
        "rows"
    ]
    assert [r["id"] for r in rows] == [1]


def test_audit_log_records_changes_and_denials(authed: TestClient, keys: Keys, tmp_path: Path) -> None:
    h = keys.headers("acme-writer")
    authed.post("/v2/namespaces/ns", json={"upsert_rows": [{"id": 1}, {"id": 2}]}, headers=h)
    authed.post("/v2/namespaces/ns/query", json=QUERY, headers=h)  # reads are not audited
    authed.delete("/v2/namespaces/ns", headers=h)  # 403
    authed.get("/v1/namespaces")  # 401
    authed.delete("/v2/namespaces/ns", headers=keys.headers("acme-admin"))
    lines = audit_lines(tmp_path)
    assert [(x["action"], x.get("status")) for x in lines] == [
        ("write", 200),
        ("denied", 403),
        ("denied", 401),
        ("delete_namespace", 200),
    ]
    assert lines[3]["rows_deleted"] == 2  # the documents the deleted namespace held
    write = lines[0]
    assert write["key_id"] == keys.keys["acme-writer"].split("_")[1]
    assert write["org"] == "acme" and write["namespace"] == "ns" and write["rows_upserted"] == 2
    text = (tmp_path / "audit.jsonl").read_text()
    for key in keys.keys.values():
        assert key.split("_", 2)[2] not in text


def test_logs_carry_key_id_never_the_key(
    authed: TestClient, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        authed.post(
            "/v2/namespaces/ns", json={"upsert_rows": [{"id": 1}]}, headers=keys.headers("acme-writer")
        )
        authed.get("/v1/namespaces", headers={"authorization": keys.keys["acme-admin"][:-1] + "x"})
    fmt = JsonFormatter()
    lines = [json.loads(fmt.format(rec)) for rec in caplog.records]
    access = [line for line in lines if line["logger"] == "lagoon.server.access"]
    assert access[0]["key_id"] == keys.keys["acme-writer"].split("_")[1]
    assert access[0]["org"] == "acme" and access[0]["namespace"] == "ns" and access[0]["status"] == 200
    assert access[0]["route"] == "write" and access[0]["request_id"] and access[0]["latency_ms"] >= 0
    assert access[1]["status"] == 401
    everything = "\n".join(fmt.format(rec) for rec in caplog.records)
    for key in keys.keys.values():
        assert key.split("_", 2)[2] not in everything
        assert key.split("_", 2)[2][:-1] not in everything


def test_bad_keys_file_fails_at_creation(tmp_path: Path) -> None:
    from lagoon.auth import KeysFileError
    from lagoon.server import create_app

    (tmp_path / "keys.toml").write_text("not toml [")
    with pytest.raises(KeysFileError):
        create_app(memory_settings(auth={"keys_file": str(tmp_path / "keys.toml")}))


class SlowWalStore(MemoryStore):
    """Every WAL write takes ``delay`` seconds (a slow store); everything else is immediate."""

    delay = 0.0

    async def put(self, key: str, data: bytes, mode: Any = "overwrite") -> Any:
        if "/wal/" in key and self.delay:
            await asyncio.sleep(self.delay)
        return await super().put(key, data, mode)


def test_a_commit_that_lands_after_the_deadline_is_audited(
    make_client: MakeClient, keys: Keys, tmp_path: Path
) -> None:
    """The client got 503 (not acknowledged), the commit landed anyway: the audit log has it."""
    store = SlowWalStore()
    settings = memory_settings(
        auth={"keys_file": str(keys.path)},
        observability={"audit_log": str(tmp_path / "audit.jsonl")},
        server={"request_timeout_secs": 0.5},
    )
    client = make_client(settings, store=store)
    h = keys.headers("acme-admin")
    assert client.post("/v2/namespaces/ns", json={"upsert_rows": [{"id": 1}]}, headers=h).status_code == 200
    store.delay = 1.5
    r = client.post("/v2/namespaces/ns", json={"upsert_rows": [{"id": 2}, {"id": 3}]}, headers=h)
    assert r.status_code == 503, r.text
    rid = r.headers["x-request-id"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(x["request_id"] == rid for x in audit_lines(tmp_path)):
        time.sleep(0.1)
    store.delay = 0.0
    late = [x for x in audit_lines(tmp_path) if x["request_id"] == rid]
    assert len(late) == 1, audit_lines(tmp_path)
    assert late[0]["action"] == "write" and late[0]["status"] == 503 and late[0]["acknowledged"] is False
    assert late[0]["rows_upserted"] == 2 and late[0]["org"] == "acme"
    q = client.post("/v2/namespaces/ns/query", json={"aggregate_by": {"c": ["Count"]}}, headers=h)
    assert q.json()["aggregations"]["c"] == 3  # it is committed
    client.delete("/v2/namespaces/ns", headers=h)
    assert audit_lines(tmp_path)[-1]["rows_deleted"] == 3
