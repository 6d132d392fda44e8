"""A vector beyond the dimension limit is refused before anything is written, and a namespace
holding such a vector (written by an older build) stays readable, listable and deletable."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from starlette.testclient import TestClient

from lagoon.config import Settings
from lagoon.format.keys import NamespaceKeys
from lagoon.format.wal import OP_COLUMN, WalEntry, encode_entry, seal_entry
from lagoon.schema import MAX_DIMS, AttributeSchema, AttrType, Schema
from lagoon.server import create_app
from lagoon.values import column_to_arrow


def objects(root: Path) -> list[str]:
    return sorted(str(Path(d, f).relative_to(root)) for d, _, fs in os.walk(root) for f in fs)


@pytest.fixture
def fs_client(tmp_path: Path) -> TestClient:
    settings = Settings(storage={"backend": "fs", "root": str(tmp_path / "bucket")})  # type: ignore[arg-type]
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.mark.parametrize("dims", [MAX_DIMS + 1, 100_000, 1_000_000])
@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_oversized_vector_to_a_new_namespace_writes_nothing(
    fs_client: TestClient, tmp_path: Path, dims: int, encoding: str
) -> None:
    vec: object = [0.5] * dims
    if encoding == "base64":
        import base64

        vec = base64.b64encode(np.full(dims, 0.5, "<f4").tobytes()).decode()
    r = fs_client.post(
        "/v2/namespaces/big",
        json={"upsert_rows": [{"id": 1, "vector": vec}], "distance_metric": "cosine_distance"},
    )
    assert r.status_code == 400, r.text
    assert str(dims) in r.json()["error"] and str(MAX_DIMS) in r.json()["error"]
    bucket = tmp_path / "bucket"
    assert [o for o in objects(bucket) if "/big/" in f"/{o}"] == []
    listing = fs_client.get("/v1/namespaces")
    assert listing.status_code == 200 and listing.json()["namespaces"] == []
    assert fs_client.post("/v2/namespaces/big/query", json={"rank_by": ["id", "asc"]}).status_code == 404


def test_at_the_limit_is_accepted(fs_client: TestClient) -> None:
    r = fs_client.post(
        "/v2/namespaces/edge",
        json={"upsert_rows": [{"id": 1, "vector": [0.5] * MAX_DIMS}], "distance_metric": "euclidean_squared"},
    )
    assert r.status_code == 200, r.text
    assert fs_client.get("/v1/namespaces/edge/schema").json()["vector"]["type"] == f"[{MAX_DIMS}]f32"


def test_declared_oversized_vector_writes_nothing(fs_client: TestClient, tmp_path: Path) -> None:
    r = fs_client.post(
        "/v2/namespaces/decl",
        json={"schema": {"v": f"[{MAX_DIMS + 1}]f32"}, "upsert_rows": [{"id": 1}]},
    )
    assert r.status_code == 400, r.text
    assert not any("/decl/" in f"/{o}" for o in objects(tmp_path / "bucket"))


def test_namespace_an_older_build_wrote_with_too_many_dims_stays_usable(
    fs_client: TestClient, tmp_path: Path
) -> None:
    """An older build stored a 10,753-d vector (it checked the limit only after the PUT). The
    entry is what it is: readers take it as stored; listing, queries and delete work."""
    dims = MAX_DIMS + 1
    atype = AttrType("vector", dims=dims, dtype="f32")
    schema = Schema("uint", {"vector": AttributeSchema(atype, filterable=False, ann={})}, "cosine_distance")
    docs = pa.table(
        {
            "id": pa.array([1], pa.uint64()),
            OP_COLUMN: pa.array([0], pa.uint8()),
            "vector": column_to_arrow([np.full(dims, 0.5, np.float32)], atype),
        }
    )
    entry = WalEntry(
        seq=1, nonce=b"\0" * 16, created_at_ms=1, writer="old", schema=schema.to_storage(), docs=docs
    )
    key = NamespaceKeys.of("default", "old").wal(1)
    path = tmp_path / "bucket" / key
    path.parent.mkdir(parents=True)
    path.write_bytes(encode_entry(seal_entry(entry)))

    assert fs_client.get("/v1/namespaces").json()["namespaces"] == [{"id": "old"}]
    r = fs_client.post("/v2/namespaces/old/query", json={"rank_by": ["id", "asc"], "top_k": 5})
    assert r.status_code == 200 and [row["id"] for row in r.json()["rows"]] == [1]
    assert fs_client.get("/v2/namespaces/old/metadata").status_code == 200
    assert fs_client.delete("/v2/namespaces/old").status_code == 200
    assert fs_client.get("/v1/namespaces").json()["namespaces"] == []
