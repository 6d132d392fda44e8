"""Error bodies never tell a client where or how the data is stored.

Against stores that really fail (a SeaweedFS bucket that does not exist; a local folder replaced
by a file under a running server; a keys file that turns unreadable), every response body —
503s included — is free of the store's URL, the bucket, the key prefix, object keys and local
paths; the full story is in the server's log under the request id. Unauthenticated ``/readyz``
gives a coarse reason only; a valid key gets the cause (still without locations).
"""

from __future__ import annotations

import io
import json
import logging
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from lagoon.auth import create_key
from lagoon.config import ObservabilitySettings, Settings
from lagoon.logs import _LagoonHandler, configure_logging
from lagoon.server import create_app
from lagoon.server.errors import Redactor
from tests.conftest import S3Server

KEYISH = re.compile(r"[\w.-]+/[\w.-]+/[\w.-]+")


def requests(ns: str) -> list[tuple[str, str, Any]]:
    return [
        ("POST", f"/v2/namespaces/{ns}", {"upsert_rows": [{"id": 1, "x": 1}]}),
        ("POST", f"/v2/namespaces/{ns}/query", {"rank_by": ["id", "asc"]}),
        ("GET", f"/v1/namespaces/{ns}/metadata", None),
        ("GET", f"/v1/namespaces/{ns}/schema", None),
        ("DELETE", f"/v2/namespaces/{ns}", None),
        ("GET", "/v1/namespaces", None),
        ("GET", "/readyz", None),
    ]


def assert_clean(resp: httpx.Response, forbidden: list[str]) -> None:
    text = resp.text
    for word in forbidden:
        assert word not in text, (word, resp.status_code, text)
    assert not KEYISH.search(text), (resp.status_code, text)
    assert "://" not in text, text


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    configure_logging(ObservabilitySettings(log_level="info"), stream=out)
    yield out
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _LagoonHandler):
            root.removeHandler(handler)


def logged_errors(stream: io.StringIO) -> dict[str, str]:
    """request id -> the ``error`` field of its access-log line (5xx only)."""
    out = {}
    for line in stream.getvalue().splitlines():
        rec = json.loads(line)
        if rec.get("logger") == "lagoon.server.access" and "error" in rec:
            out[rec["request_id"]] = rec["error"]
    return out


def test_a_missing_bucket_is_not_named_in_any_body(
    s3_server: S3Server, s3_prefix: str, log_stream: io.StringIO
) -> None:
    bucket = "lagoon-no-such-bucket-4711"
    host = s3_server.endpoint.split("://", 1)[1]
    settings = Settings(
        storage={  # type: ignore[arg-type]
            "backend": "s3",
            "bucket": bucket,
            "prefix": s3_prefix,
            "endpoint": s3_server.endpoint,
            "region": s3_server.region,
        },
        server={"embedded_indexer": False},  # type: ignore[arg-type]
    )
    statuses = []
    with TestClient(create_app(settings)) as client:
        for method, path, body in requests("docs"):
            r = client.request(method, path, json=body)
            statuses.append(r.status_code)
            assert r.status_code < 500 or r.status_code == 503, (path, r.text)
            assert_clean(r, [bucket, host, s3_prefix.rstrip("/"), "NoSuchBucket"])
    assert 503 in statuses, statuses
    r503 = [e for e in logged_errors(log_stream).values()]
    assert r503 and any(bucket in e or "NoSuchBucket" in e for e in r503), r503  # the log has it all


def test_a_broken_local_folder_is_not_named_in_any_body(tmp_path: Path, log_stream: io.StringIO) -> None:
    root = tmp_path / "secret-bucket-folder"
    settings = Settings(
        storage={"backend": "fs", "root": str(root)},  # type: ignore[arg-type]
        server={"embedded_indexer": False},  # type: ignore[arg-type]
        cache={"dir": str(tmp_path / "cache")},  # type: ignore[arg-type]
    )
    with TestClient(create_app(settings)) as client:
        assert client.post("/v2/namespaces/docs", json={"upsert_rows": [{"id": 1}]}).status_code == 200
        for _ in range(200):  # the app may still be writing into the folder (catalog, metadata)
            shutil.rmtree(root, ignore_errors=True)
            try:
                root.write_text("not a folder any more")
                break
            except OSError:
                time.sleep(0.01)
        assert root.is_file()
        statuses = []
        for method, path, body in requests("docs") + requests("other"):
            r = client.request(method, path, json=body)
            statuses.append(r.status_code)
            assert r.status_code < 500 or r.status_code == 503, (path, r.text)
            assert_clean(r, [str(tmp_path), "secret-bucket-folder", "Errno"])
    assert 503 in statuses, statuses
    errors = logged_errors(log_stream).values()
    assert any(KEYISH.search(e) for e in errors), errors  # the log names the objects


def test_unauthenticated_readyz_is_coarse_and_a_key_gets_the_cause(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.toml"
    key, record = create_key(keys_file, "acme", "reader")
    root = tmp_path / "data"
    settings = Settings(
        storage={"backend": "fs", "root": str(root)},  # type: ignore[arg-type]
        auth={"keys_file": str(keys_file)},  # type: ignore[arg-type]
        server={"embedded_indexer": False},  # type: ignore[arg-type]
    )
    with TestClient(create_app(settings)) as client:
        assert client.get("/readyz").status_code == 200
        shutil.rmtree(root)
        root.write_text("not a folder")
        anonymous = client.get("/readyz")
        assert anonymous.status_code == 503
        assert anonymous.json()["error"] == "not ready: object store unavailable"
        keyed = client.get("/readyz", headers={"authorization": f"Bearer {key}"})
        assert keyed.status_code == 503
        assert keyed.json()["error"].startswith("not ready: object store unavailable (")
        for r in (anonymous, keyed):
            assert_clean(r, [str(tmp_path), record.key_id])
        root.unlink()
        root.mkdir()
        assert client.get("/readyz").status_code == 200
        keys_file.write_text("this is [not toml")
        r = client.get("/readyz", headers={"authorization": f"Bearer {key}"})
        assert r.status_code == 503 and r.json()["error"] == "not ready: API keys unavailable", r.text
        assert_clean(r, [str(tmp_path), "keys.toml", record.key_id])
        q = client.post("/v2/namespaces/x/query", json={}, headers={"authorization": f"Bearer {key}"})
        assert q.status_code == 503
        assert_clean(q, [str(tmp_path), "keys.toml", record.key_id])


@pytest.mark.parametrize(
    ("message", "names", "expected"),
    [
        (
            "object store error: acme/ns/seg/123-abc/docs: NoSuchKey",
            [],
            "object store error: <redacted>: NoSuchKey",
        ),
        ("GET http://10.0.0.5:8333/bucket/k failed", [], "GET <redacted> failed"),
        (
            "[Errno 20] Not a directory: '/srv/lagoon/data/acme/x'",
            [],
            "[Errno 20] Not a directory: '<redacted>'",
        ),
        ("bucket my-bucket is gone", ["my-bucket"], "bucket <redacted> is gone"),
        ("run `lagoon repair` (request id abc)", ["my-bucket"], "run `lagoon repair` (request id abc)"),
        ("see docs/limits.md", [], "see docs/limits.md"),
    ],
)
def test_the_redactor(message: str, names: list[str], expected: str) -> None:
    assert Redactor(names)(message) == expected
