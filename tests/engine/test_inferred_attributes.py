"""Attributes inferred from documents obey the same per-namespace limit as an explicit schema, a
refused write stores nothing, and a column that few documents set costs the WAL what its values
cost (not rows x attributes)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from lagoon.config import Settings
from lagoon.schema import MAX_ATTRIBUTES
from lagoon.server import create_app


def snapshot(root: Path) -> dict[str, str]:
    """The bucket's objects: key -> content hash for the orgs' objects; the catalog's markers by
    presence only (the background sweep rewrites them on its own schedule). Other ``_lagoon/``
    objects (the indexing queue, readiness probes) are the nodes' bookkeeping, not namespace state."""
    out = {}
    for d, _, fs in os.walk(root):
        for f in fs:
            p = Path(d, f)
            key = str(p.relative_to(root))
            if key.startswith("_lagoon/catalog/"):
                out[key] = ""
            elif not key.startswith("_lagoon/"):
                out[key] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def wal_bytes(root: Path, ns: str) -> int:
    return sum(
        p.stat().st_size for p in root.rglob("*") if p.is_file() and "/wal/" in str(p) and f"/{ns}/" in str(p)
    )


@pytest.fixture
def bucket(tmp_path: Path) -> Path:
    return tmp_path / "bucket"


@pytest.fixture
def client(bucket: Path) -> TestClient:
    settings = Settings(storage={"backend": "fs", "root": str(bucket)})  # type: ignore[arg-type]
    with TestClient(create_app(settings)) as c:
        yield c


def test_one_document_with_too_many_new_attributes_writes_nothing(client: TestClient, bucket: Path) -> None:
    row = {"id": 1, **{f"a{i}": i for i in range(MAX_ATTRIBUTES + 1)}}
    r = client.post("/v2/namespaces/wide", json={"upsert_rows": [row]})
    assert r.status_code == 400, r.text
    assert str(MAX_ATTRIBUTES) in r.json()["error"] and "docs/limits.md" in r.json()["error"]
    assert not any("/wide/" in f"/{k}" for k in snapshot(bucket))
    assert client.get("/v1/namespaces").json()["namespaces"] == []


def test_many_rows_each_with_a_new_attribute_are_refused_at_once(client: TestClient, bucket: Path) -> None:
    """10,000 rows with one new attribute each (a 287 KB body) used to produce an 814 MB WAL entry."""
    rows = [{"id": i, f"attr_{i}": i} for i in range(10_000)]
    r = client.post("/v2/namespaces/spray", json={"upsert_rows": rows})
    assert r.status_code == 400, r.text
    assert f"attr_{MAX_ATTRIBUTES}" in r.json()["error"]  # names the first attribute past the limit
    assert not any("/spray/" in f"/{k}" for k in snapshot(bucket))


def test_limit_counts_the_namespace_existing_attributes(client: TestClient, bucket: Path) -> None:
    base = MAX_ATTRIBUTES - 10
    r = client.post(
        "/v2/namespaces/full", json={"upsert_rows": [{"id": 0, **{f"a{i}": i for i in range(base)}}]}
    )
    assert r.status_code == 200, r.text
    before = snapshot(bucket)
    r = client.post(
        "/v2/namespaces/full", json={"upsert_rows": [{"id": 1, **{f"b{i}": i for i in range(11)}}]}
    )
    assert r.status_code == 400, r.text
    assert f"{base} in its schema" in r.json()["error"]
    after = snapshot(bucket)
    assert after == before, {
        k: (before.get(k), after.get(k)) for k in set(before) | set(after) if before.get(k) != after.get(k)
    }
    # exactly up to the limit is accepted, and the namespace keeps working
    r = client.post(
        "/v2/namespaces/full", json={"upsert_rows": [{"id": 1, **{f"b{i}": i for i in range(10)}}]}
    )
    assert r.status_code == 200, r.text
    assert len(client.get("/v1/namespaces/full/schema").json()) == MAX_ATTRIBUTES + 1  # + id
    q = client.post(
        "/v2/namespaces/full/query",
        json={"rank_by": ["id", "asc"], "filters": ["b9", "Eq", 9], "include_attributes": ["b9"]},
    )
    assert q.status_code == 200 and [row["id"] for row in q.json()["rows"]] == [1], q.text


def test_explicit_schema_adding_too_many_attributes_writes_nothing(client: TestClient, bucket: Path) -> None:
    schema = {f"s{i}": "int" for i in range(MAX_ATTRIBUTES + 1)}
    r = client.post("/v2/namespaces/decl", json={"schema": schema, "upsert_rows": [{"id": 1}]})
    assert r.status_code == 400, r.text
    assert not any("/decl/" in f"/{k}" for k in snapshot(bucket))


def test_sparse_columns_cost_the_wal_what_their_values_cost(client: TestClient, bucket: Path) -> None:
    """At the limit: as many rows as attributes, each row setting one of them. Stored dense this is
    rows x attributes cells (about 8 MB of nulls for a 30 KB request); the WAL keeps it small."""
    n = MAX_ATTRIBUTES
    rows = [{"id": i, f"c{i}": i} for i in range(n)]
    body = json.dumps({"upsert_rows": rows}).encode()
    r = client.post("/v2/namespaces/sparse", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    ratio = wal_bytes(bucket, "sparse") / len(body)
    # What is left is per attribute (its field in the Arrow schema and in the entry's schema, a
    # few compressed buffer headers), not per cell: stored dense this entry would be ~330x.
    assert ratio < 12, f"WAL bytes are {ratio:.1f}x the request's"
    # every value reads back where it was written
    for i in (0, 7, n - 1):
        q = client.post(
            "/v2/namespaces/sparse/query",
            json={"rank_by": ["id", "asc"], "filters": [f"c{i}", "Eq", i], "include_attributes": [f"c{i}"]},
        )
        assert q.status_code == 200 and q.json()["rows"] == [{"id": i, f"c{i}": i}], q.text


def test_many_rows_over_few_sparse_attributes_stay_smaller_than_the_request(
    client: TestClient, bucket: Path
) -> None:
    rows = [{"id": r, f"c{r % 100}": r} for r in range(10_000)]
    body = json.dumps({"upsert_rows": rows}).encode()
    r = client.post("/v2/namespaces/few", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    ratio = wal_bytes(bucket, "few") / len(body)
    assert ratio < 1.5, f"WAL bytes are {ratio:.2f}x the request's"
    q = client.post(
        "/v2/namespaces/few/query",
        json={"rank_by": ["id", "asc"], "filters": ["c42", "Eq", 4242], "include_attributes": ["c42"]},
    )
    assert q.status_code == 200 and q.json()["rows"] == [{"id": 4242, "c42": 4242}], q.text


def test_documents_too_sparse_for_columns_write_nothing(client: TestClient, bucket: Path) -> None:
    """9,000 rows spread over 1,024 attributes: 260 KB of JSON, 72 MiB as columns (every row
    holds a slot for every attribute). Refused up front, naming the sizes; nothing stored."""
    rows = [{"id": i, f"a{i % MAX_ATTRIBUTES}": i} for i in range(9_000)]
    r = client.post("/v2/namespaces/sparse", json={"upsert_rows": rows})
    assert r.status_code == 400, r.text
    msg = r.json()["error"]
    assert "too sparse" in msg and "9000 rows" in msg and "docs/limits.md" in msg
    assert not any("/sparse/" in f"/{k}" for k in snapshot(bucket))
    # at the bound's other side: a quarter of the rows fits (18 MiB of columns) and is stored
    r = client.post("/v2/namespaces/sparse", json={"upsert_rows": rows[:2_250]})
    assert r.status_code == 200, r.text
    assert r.json()["rows_upserted"] == 2_250
