"""A refused request changes nothing: the catalogue of bad requests, on fs and on S3 (SeaweedFS).

A real ``lagoon-server`` (auth on, two orgs, embedded indexer off so nothing else writes) holds
namespace ``base`` (documents, one segment, an unindexed WAL tail). For every request of the hand
catalogue (``tests/server/refused.py``: each field x its limits one past, wrong types, names, keys,
empty/huge/nested/badly encoded bodies) and for generated ones (hypothesis: valid bodies with one
value poisoned; arbitrary JSON), the bucket's objects (key -> content hash on fs, key -> ETag
and size on S3) are snapshot before and after: a refusal must be a 4xx naming the problem and
leave the snapshot identical; nothing a client sends may get a 5xx. Afterwards listing, queries,
metadata and an indexer pass still work on ``base``, and ``fresh`` still does not exist.

The default run takes the whole hand catalogue and a bounded sample of generated bodies; the
``slow`` run generates many more.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from lagoon.auth import create_key
from lagoon.config import Settings
from lagoon.server import create_app
from tests.conftest import S3Server
from tests.server.conftest import LiveServer
from tests.server.refused import BASE_SCHEMA, BODY_LIMIT, DIMS, Bad, base_doc, catalogue

BASE_DOCS = 200
TAIL_DOCS = 10
PROBE = "_lagoon/readyz-probe"
FS_OWN = ".lagoon-locks/"
"""The fs backend's own lock files (and its in-flight ``.tmp-`` files) are not objects."""


@dataclass
class Target:
    backend: str
    http: httpx.Client
    """A TestClient of the app in this process, or an httpx client of a ``lagoon-server`` process."""
    keys: dict[str, str]
    storage: dict[str, Any]
    root: Path | None = None
    s3: S3Server | None = None
    prefix: str = ""
    server: LiveServer | None = None

    def close(self) -> None:
        if isinstance(self.http, TestClient):
            self.http.__exit__(None, None, None)
        else:
            self.http.close()
        if self.server is not None:
            self.server.stop()

    def send(self, bad: Bad) -> httpx.Response:
        headers = dict(bad.headers)
        if bad.who is not None:
            headers["authorization"] = f"Bearer {self.keys[bad.who]}"
        kw: dict[str, Any] = {"headers": headers, "params": bad.params}
        if bad.content is not None:
            kw["content"] = bad.content
            headers.setdefault("content-type", "application/json")
        elif bad.json is not None:
            kw["json"] = bad.json
        return self.http.request(bad.method, bad.path, **kw)

    def snapshot(self) -> dict[str, str]:
        """Every object of the bucket (but the readiness probe): key -> content identity."""
        out: dict[str, str] = {}
        if self.root is not None:
            for d, _, files in os.walk(self.root):
                for f in files:
                    p = Path(d, f)
                    key = str(p.relative_to(self.root))
                    if not key.startswith(FS_OWN) and ".tmp-" not in f:
                        out[key] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            assert self.s3 is not None
            pages = self.s3.client.get_paginator("list_objects_v2")
            for page in pages.paginate(Bucket=self.s3.bucket, Prefix=self.prefix):
                for o in page.get("Contents", []):
                    out[o["Key"][len(self.prefix) :]] = f"{o['ETag']}:{o['Size']}"
        out.pop(PROBE, None)
        return out

    def locations(self) -> list[str]:
        """What no response body may contain: the bucket, the store's address, local folders."""
        if self.root is not None:
            return [str(self.root)]
        assert self.s3 is not None
        return [self.s3.bucket, self.s3.endpoint.split("://")[1], self.prefix.rstrip("/")]

    def settle(self, quiet: float = 1.0, timeout: float = 30.0) -> dict[str, str]:
        """The snapshot once it stopped changing for ``quiet`` seconds: a commit's indexing-queue
        update is batched to one per poll interval, so it may land after the write's answer."""
        deadline = time.monotonic() + timeout
        last, since = self.snapshot(), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now = self.snapshot()
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return now
        raise AssertionError("the bucket kept changing with no request in flight")

    def index_once(self) -> int:
        """One forced indexer pass over the bucket; the number of errors it met."""
        from lagoon.engine.scheduler import IndexerLoop
        from lagoon.storage.factory import open_store

        async def run() -> int:
            cfg = Settings(storage=self.storage)  # type: ignore[arg-type]
            store = open_store(cfg.storage)
            try:
                report = await IndexerLoop(store, cfg).run_once(force=True)
                return report.errors
            finally:
                await store.close()

        return asyncio.run(run())


def start(tmp: Path, backend: str, mode: str, s3: S3Server | None, prefix: str) -> Target:
    """``mode``: "app" (the app in this process, served through Starlette's test client) or
    "process" (a ``lagoon-server`` child on loopback)."""
    keys_file = tmp / "keys.toml"
    keys = {
        "admin": create_key(keys_file, "acme", "admin")[0],
        "writer": create_key(keys_file, "acme", "writer")[0],
        "reader": create_key(keys_file, "acme", "reader")[0],
        "other": create_key(keys_file, "globex", "admin")[0],
    }
    root = tmp / "data"
    storage: dict[str, Any] = {"backend": "fs", "root": str(root)}
    if backend == "s3":
        assert s3 is not None
        storage = {"backend": "s3", "bucket": s3.bucket, "prefix": prefix, "endpoint": s3.endpoint}
        storage["region"] = s3.region
    sections: dict[str, dict[str, Any]] = {
        "storage": storage,
        "auth": {"keys_file": str(keys_file)},
        "server": {"embedded_indexer": False, "max_body_bytes": BODY_LIMIT},
        "observability": {"audit_log": str(tmp / "audit.jsonl"), "log_level": "warning"},
        "indexer": {"poll_interval_secs": 0.2},
    }
    server, http = None, None
    if mode == "process":
        env = {
            f"LAGOON_{section.upper()}__{k.upper()}": str(v).lower() if isinstance(v, bool) else str(v)
            for section, values in sections.items()
            for k, v in values.items()
        }
        env.update(s3.env() if s3 is not None else {})
        server = LiveServer(root, tmp / "server.log", **env)
        http = httpx.Client(base_url=server.url, timeout=60)
    else:
        http = TestClient(create_app(Settings(**sections)))  # type: ignore[arg-type]
        http.__enter__()
    target = Target(
        backend, http, keys, storage, root=root if backend == "fs" else None, s3=s3, prefix=prefix
    )
    target.server = server
    try:
        seed(target)
    except BaseException:
        target.close()
        raise
    return target


def seed(t: Target) -> None:
    admin = {"authorization": f"Bearer {t.keys['admin']}"}
    body = {"schema": BASE_SCHEMA, "upsert_rows": [base_doc(i) for i in range(BASE_DOCS)]}
    r = t.http.post("/v2/namespaces/base", json=body, headers=admin)
    assert r.status_code == 200, r.text
    assert t.index_once() == 0
    tail = [base_doc(i) for i in range(BASE_DOCS, BASE_DOCS + TAIL_DOCS)]
    r = t.http.post("/v2/namespaces/base", json={"upsert_rows": tail}, headers=admin)
    assert r.status_code == 200, r.text
    keys = t.settle()
    assert any("/wal/" in k for k in keys) and any("/seg/" in k for k in keys), sorted(keys)


@pytest.fixture(
    scope="module",
    params=[
        ("fs", "app"),
        ("s3", "app"),
        pytest.param(("fs", "process"), marks=pytest.mark.slow),
        pytest.param(("s3", "process"), marks=pytest.mark.slow),
    ],
    ids=["fs", "s3", "fs-process", "s3-process"],
)
def target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    backend, mode = request.param
    tmp = tmp_path_factory.mktemp(f"refused-{backend}-{mode}")
    s3 = request.getfixturevalue("s3_server") if backend == "s3" else None
    t = start(tmp, backend, mode, s3, f"refused-{os.getpid()}-{tmp.name}/")
    yield t
    t.close()


# --- checks --------------------------------------------------------------------------------------


def refusal_problem(t: Target, bad: Bad) -> str | None:
    """Why ``bad`` was not refused properly (None: it was)."""
    before = t.snapshot()
    try:
        r = t.send(bad)
    except httpx.HTTPError as e:
        return f"{bad.name}: transport error {e!r}"
    after = t.snapshot()
    problems = []
    if r.status_code < 400:  # accepted: let its queue update land before the next case
        after = t.settle()
    if r.status_code != bad.status:
        problems.append(f"status {r.status_code} (expected {bad.status}): {r.text[:300]}")
    else:
        message = _message(r)
        missing = [f for f in bad.fragments if f.lower() not in message.lower()]
        if missing:
            problems.append(f"message {message[:300]!r} does not name {missing}")
    leaked = [w for w in t.locations() if w in r.text]
    if leaked:
        problems.append(f"the body names {leaked}: {r.text[:300]}")
    if after != before:
        changed = sorted(
            set(after) ^ set(before) | {k for k in before if k in after and before[k] != after[k]}
        )
        problems.append(f"the bucket changed: {changed[:8]}")
    return f"{bad.name}: {'; '.join(problems)}" if problems else None


def _message(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return r.text
    return str(body.get("error", "")) if isinstance(body, dict) else r.text


def still_works(t: Target) -> None:
    """Listing, queries, metadata and the indexer work on ``base``; ``fresh`` was never created."""
    reader = {"authorization": f"Bearer {t.keys['reader']}"}
    listing = t.http.get("/v1/namespaces", headers=reader)
    assert listing.status_code == 200, listing.text
    assert "fresh" not in [n["id"] for n in listing.json()["namespaces"]]
    assert "base" in [n["id"] for n in listing.json()["namespaces"]]
    q = t.http.post(
        "/v2/namespaces/base/query",
        json={"rank_by": ["v", "ANN", [1.0] * DIMS], "top_k": 5},
        headers=reader,
    )
    assert q.status_code == 200 and len(q.json()["rows"]) == 5, q.text
    q = t.http.post("/v2/namespaces/base/query", json={"aggregate_by": {"c": ["Count"]}}, headers=reader)
    assert q.json()["aggregations"]["c"] == BASE_DOCS + TAIL_DOCS, q.text
    assert t.http.get("/v1/namespaces/base/metadata", headers=reader).status_code == 200
    assert t.http.get("/v1/namespaces/fresh/metadata", headers=reader).status_code == 404
    assert t.index_once() == 0


CASES = catalogue()


def test_every_catalogued_refusal_changes_nothing(target: Target) -> None:
    problems = [p for bad in CASES if (p := refusal_problem(target, bad)) is not None]
    assert not problems, f"{len(problems)} of {len(CASES)} refusals wrong:\n" + "\n".join(problems)
    still_works(target)


# --- generated bodies ----------------------------------------------------------------------------

POISON: dict[str, list[Any]] = {
    "id": [None, True, -1, 1.5, 2**64, [], {}, [1]],
    "v": [[], [None] * DIMS, [1, "a", 1, 1], [[1.0]] * DIMS, [0.5] * (DIMS + 1), "x", 5, {}],
    "n": ["x", 1.5, 2**64, -(2**63) - 1, [], {}, [1]],
    "f": ["x", [], {}, [1.5]],
    "b": [3, "x", [], {}, 0.5],
    "tags": ["x", 5, [1, "a"], [[1.0]], {}, [{}]],
    "when": ["yesterday", "2026-13-45T00:00:00Z", True, [], {}],
    "title": [{}, [1, "a"], True, [[1]]],
    "s": [{}, [1, "a"], 5, [[1]]],
}
"""Per attribute of ``BASE_SCHEMA``: values its type cannot hold."""


@st.composite
def poisoned_write(draw: st.DrawFn) -> dict[str, Any]:
    """A valid write to ``base`` with one value replaced by one the schema cannot hold."""
    n = draw(st.integers(1, 20))
    rows = [base_doc(10_000 + i) for i in range(n)]
    row = draw(st.integers(0, n - 1))
    attr = draw(st.sampled_from(sorted(POISON)))
    rows[row][attr] = draw(st.sampled_from(POISON[attr]))
    if draw(st.booleans()):
        columns = {k: [r.get(k) for r in rows] for k in rows[0]}
        return {"upsert_columns": columns}
    return {"upsert_rows": rows}


def _check_generated(t: Target, body: Any, *, must_refuse: bool, ns: str = "base") -> None:
    before = t.snapshot()
    r = t.http.post(f"/v2/namespaces/{ns}", json=body, headers={"authorization": f"Bearer {t.keys['admin']}"})
    after = t.snapshot() if r.status_code >= 400 else t.settle(quiet=0.5)
    assert r.status_code < 500, (r.status_code, r.text[:500], body)
    if must_refuse:
        assert r.status_code == 400, (r.status_code, r.text[:500], body)
    if r.status_code >= 400:
        assert after == before, (r.text[:300], body)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
write_keys = st.sampled_from(
    [
        "upsert_rows",
        "upsert_columns",
        "patch_rows",
        "deletes",
        "schema",
        "delete_by_filter",
        "patch_by_filter",
        "upsert_condition",
        "distance_metric",
        "create_namespace",
        "encryption",
    ]
)
arbitrary_write = st.dictionaries(write_keys, json_values, min_size=1, max_size=3)


def _hypothesis(examples: int) -> Any:
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=examples <= 100,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


def test_generated_poisoned_writes_are_refused_and_change_nothing(target: Target) -> None:
    @_hypothesis(25)
    @given(poisoned_write())
    def check(body: dict[str, Any]) -> None:
        _check_generated(target, body, must_refuse=True)

    check()


def test_arbitrary_write_bodies_never_5xx_and_refusals_change_nothing(target: Target) -> None:
    @_hypothesis(25)
    @given(arbitrary_write)
    def check(body: dict[str, Any]) -> None:
        _check_generated(target, body, must_refuse=False, ns="scratch")

    check()


@pytest.mark.slow
def test_many_generated_writes(target: Target) -> None:
    @_hypothesis(600)
    @given(poisoned_write(), arbitrary_write)
    def check(poisoned: dict[str, Any], arbitrary: dict[str, Any]) -> None:
        _check_generated(target, poisoned, must_refuse=True)
        _check_generated(target, arbitrary, must_refuse=False, ns="scratch")

    check()
    still_works(target)
