"""Production shape on S3, with crashes: 2 ``lagoon-server`` + 2 ``lagoon-worker`` processes on one
SeaweedFS bucket, writers on both servers, and ``kill -9`` of a random process (then restarted),
again and again (reliability T1/T5, black box).

Writers send upserts of fresh batches (8 documents each, one batch number in every document, a
vector so the indexes have work) and deletes of whole acknowledged batches, to two namespaces,
over HTTP to either server. Each request's outcome is ``ok`` (200), ``fail`` (the connection was
refused: nothing was sent) or ``unknown`` (the server died with the request in flight, a timeout,
a 5xx). After the last kill every process is up again, writers stop, and the test checks:

- **lost = 0**: every acknowledged upsert is fully visible, unless an acknowledged delete removed
  it (then fully gone);
- **half-visible = 0**: every batch, whatever its outcome, is all there or not at all;
- **phantom = 0**: no refused request is visible;
- the view is the same through both servers (strong queries) and in the bucket itself (folded
  from the latest manifest's segments and the WAL tail, independently of the engine);
- **indexes converge**: every namespace's manifest covers its whole WAL (time measured);
- **GC leaves no orphans**: after the grace period the workers' own GC leaves no segment that no
  manifest version references; a final GC pass leaves exactly the latest version's segments,
  no WAL entry it covers, and nothing the manifest names is missing.

The figures are printed (``-s``) and written to ``kill9-report.json`` in the test's temp folder.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from lagoon.config import Settings
from lagoon.engine import manifest_store
from lagoon.engine.components import Components
from lagoon.engine.gc import collect_garbage
from lagoon.format.keys import NamespaceKeys
from lagoon.storage import ObjectNotFound, ObjectStore, RetryingStore, S3Store
from tests.conftest import S3Server
from tests.deploy.test_alert_rules import unexported_rule_series
from tests.e2e.cluster import Cluster
from tests.engine.lifecycle.helpers import dangling, live_view, segment_ids_in_store, wal_seqs

pytestmark = [pytest.mark.s3, pytest.mark.anyio]

NAMESPACES = ("alpha", "beta")
BATCH = 8
DIMS = 8
GRACE = 4.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Batch:
    ns: str
    number: int
    upsert: str = "pending"  # ok | fail | unknown
    delete: str | None = None  # None: never deleted; else the delete's outcome

    def ids(self) -> list[int]:
        return [self.number * BATCH + j for j in range(BATCH)]


@dataclass
class Run:
    batches: list[Batch] = field(default_factory=list)
    kills: list[str] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def outcome(resp: httpx.Response | None, exc: BaseException | None, run: Run) -> str:
    if exc is not None:
        if isinstance(exc, httpx.ConnectError):
            return "fail"  # refused before anything was sent
        return "unknown"
    assert resp is not None
    run.statuses[str(resp.status_code)] = run.statuses.get(str(resp.status_code), 0) + 1
    if resp.status_code == 200:
        return "ok"
    if resp.status_code >= 500:
        return "unknown"  # e.g. 503 while the store or a peer is restarting: may have applied
    run.errors.append(f"{resp.status_code} {resp.text[:300]}")
    return "unknown"


async def writer(w: int, cluster: Cluster, run: Run, stop: asyncio.Event, rng: random.Random) -> None:
    urls = [s.url for s in cluster.servers]
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=2.0)) as client:
        k = 0
        while not stop.is_set():
            k += 1
            url = urls[(w + k) % len(urls)]  # both servers, alternately
            acked = [b for b in run.batches if b.upsert == "ok" and b.delete is None]
            resp = exc = None
            if acked and rng.random() < 0.15:
                target = rng.choice(acked)
                target.delete = "pending"
                try:
                    resp = await client.post(
                        f"{url}/v2/namespaces/{target.ns}", json={"deletes": target.ids()}
                    )
                except httpx.HTTPError as e:
                    exc = e
                target.delete = outcome(resp, exc, run)
                continue
            batch = Batch(rng.choice(NAMESPACES), len(run.batches))
            run.batches.append(batch)
            rows = [
                {
                    "id": i,
                    "v": batch.number,
                    "tag": f"w{w}",
                    "vector": [rng.uniform(-1, 1) for _ in range(DIMS)],
                }
                for i in batch.ids()
            ]
            try:
                resp = await client.post(
                    f"{url}/v2/namespaces/{batch.ns}",
                    json={"upsert_rows": rows, "distance_metric": "cosine_distance"},
                )
            except httpx.HTTPError as e:
                exc = e
            batch.upsert = outcome(resp, exc, run)
            if exc is not None:
                await asyncio.sleep(0.05)  # the server is down: do not spin


async def killer(cluster: Cluster, run: Run, kills: int, rng: random.Random, wait: bool) -> None:
    """Every 0.3-1.5 s, kill -9 a random node and start it again; with ``wait``, wait until it is
    ready before the next kill (writes flow between kills), else not (the next victim may be one
    still starting up, or the same one again)."""
    nodes = list(cluster.nodes.values())
    for _ in range(kills):
        await asyncio.sleep(rng.uniform(0.3, 1.5))
        victim = rng.choice(nodes)
        victim.kill9()
        run.kills.append(victim.name)
        await asyncio.sleep(rng.uniform(0.0, 0.3))
        victim.start()
        if wait:
            await asyncio.to_thread(victim.wait_ready)
    for node in nodes:
        await asyncio.to_thread(node.wait_ready)


async def api_view(url: str, ns: str) -> dict[int, int]:
    """id -> batch number of every document, by strong id-ordered pages from one server."""
    out: dict[int, int] = {}
    last: int | None = None
    async with httpx.AsyncClient(timeout=60) as client:
        while True:
            body: dict[str, Any] = {"rank_by": ["id", "asc"], "top_k": 1000, "include_attributes": ["v"]}
            if last is not None:
                body["filters"] = ["id", "Gt", last]
            resp = await client.post(f"{url}/v2/namespaces/{ns}/query", json=body)
            if resp.status_code == 404:
                return out
            assert resp.status_code == 200, resp.text
            rows = resp.json()["rows"]
            for row in rows:
                out[int(row["id"])] = int(row["v"])
            if len(rows) < 1000:
                return out
            last = int(rows[-1]["id"])


async def converged(store: ObjectStore, keys: NamespaceKeys) -> bool:
    latest = await manifest_store.read_latest(store, keys)
    seqs = await wal_seqs(store, keys)
    head = max(seqs, default=0)
    return head == 0 or (latest is not None and latest.indexed_through >= head)


async def referenced_segments(store: ObjectStore, keys: NamespaceKeys) -> set[str]:
    """Segment ids any stored manifest version lists (live or pending delete)."""
    ids: set[str] = set()
    for version in await manifest_store.list_versions(store, keys):
        try:
            m = await manifest_store.read_version(store, keys, version)
        except ObjectNotFound:
            continue  # deleted by GC since the listing
        ids |= {s.id for s in m.segments}
        for r in m.pending_delete:  # segment records (by id or seg/<id>/ prefix); WAL records too
            if r.segment_id:
                ids.add(r.segment_id)
    return ids


async def run_cluster(
    s3: S3Server, prefix: str, tmp_path: Path, kills: int, writers: int, seed: int
) -> dict[str, Any]:
    rng = random.Random(seed)
    cluster = Cluster(
        root=tmp_path,
        bucket=s3.bucket,
        prefix=prefix,
        endpoint=s3.endpoint,
        region=s3.region,
        aws_env=s3.env(),
        settings={
            "LAGOON_INDEXER__FLUSH_INTERVAL_SECS": "0.2",
            "LAGOON_INDEXER__COMPACTION_FANIN": "3",
            "LAGOON_INDEXER__GC_GRACE_SECS": str(GRACE),
            "LAGOON_INDEXER__POLL_INTERVAL_SECS": "0.2",
            "LAGOON_MANIFEST__POLL_INTERVAL_MS": "100",
        },
    )
    for i in range(2):
        cluster.add("server", f"server{i}")
    for i in range(2):
        cluster.add("worker", f"worker{i}")
    run = Run()
    store: ObjectStore = RetryingStore(
        S3Store(s3.bucket, prefix=prefix, region=s3.region, endpoint=s3.endpoint)
    )
    report: dict[str, Any] = {}
    codes: dict[str, int | None] = {}
    try:
        cluster.start_all()
        stop = asyncio.Event()
        t_start = time.monotonic()
        tasks = [
            asyncio.create_task(writer(w, cluster, run, stop, random.Random(seed * 100 + w)))
            for w in range(writers)
        ]
        await killer(cluster, run, kills, rng, wait=kills > 10)
        await asyncio.sleep(1.0)  # a last stretch of writes with every process up
        stop.set()
        await asyncio.gather(*tasks)
        writes_done = time.monotonic()
        for node in cluster.nodes.values():
            assert node.alive(), f"{node.name} died on its own:\n{node.log()[-3000:]}"

        # indexes converge: every namespace's manifest covers its whole WAL
        deadline = time.monotonic() + 120
        while not all([await converged(store, NamespaceKeys.of("default", ns)) for ns in NAMESPACES]):
            assert time.monotonic() < deadline, "the workers did not index every WAL entry"
            await asyncio.sleep(0.2)
        convergence = time.monotonic() - writes_done

        # the view: both servers and the bucket agree, and match what the writers were told
        lost = half = phantom = 0
        problems: list[str] = []
        for ns in NAMESPACES:
            keys = NamespaceKeys.of("default", ns)
            bucket_view = {i: d["v"] for i, d in (await live_view(store, keys)).items()}
            for server in cluster.servers:
                got = await api_view(server.url, ns)
                assert got == bucket_view, f"{server.name} disagrees with the bucket on {ns}"
            for b in (b for b in run.batches if b.ns == ns):
                present = sum(1 for i in b.ids() if bucket_view.get(i) == b.number)
                if 0 < present < BATCH:
                    half += 1
                    problems.append(f"half-visible {b}: {present}/{BATCH}")
                if b.upsert == "ok" and b.delete in (None, "fail") and present != BATCH:
                    lost += 1
                    problems.append(f"lost {b}: {present}/{BATCH}")
                if b.delete == "ok" and present != 0:
                    lost += 1
                    problems.append(f"acknowledged delete lost {b}: {present}/{BATCH}")
                if b.upsert == "fail" and present:
                    phantom += 1
                    problems.append(f"phantom {b}")
        assert run.errors == [], run.errors[:5]
        assert problems == [], problems[:10]

        # GC: after the grace period the workers' own GC leaves no orphan segment
        await asyncio.sleep(GRACE + 1.0)
        deadline = time.monotonic() + 60
        for ns in NAMESPACES:
            keys = NamespaceKeys.of("default", ns)
            while True:
                orphans = await segment_ids_in_store(store, keys) - await referenced_segments(store, keys)
                if not orphans:
                    break
                assert time.monotonic() < deadline, f"orphans left in {ns}: {sorted(orphans)[:5]}"
                await asyncio.sleep(0.5)
        # every series the shipped alert rules read is exported by these servers and workers
        pages = [httpx.get(n.url + "/metrics", timeout=30).text for n in cluster.servers]
        pages += [httpx.get(n.url + "/metrics", timeout=30).text for n in cluster.workers]
        assert unexported_rule_series(pages) == []

        # then, with the workers stopped, GC passes (one version retained) leave exactly the
        # latest version's data: no pending deletes, no unreferenced segment, no covered WAL
        for node in cluster.workers:
            node.stop()
        gc_settings = Settings(indexer={"gc_grace_secs": GRACE})  # type: ignore[arg-type]
        deadline = time.monotonic() + 60
        for ns in NAMESPACES:
            keys = NamespaceKeys.of("default", ns)
            while True:
                await collect_garbage(
                    store, keys, gc_settings, Components(node_id="final-gc"), retain_versions=1
                )
                latest = await manifest_store.read_latest(store, keys)
                assert latest is not None
                if latest.pending_delete == () and await segment_ids_in_store(store, keys) == {
                    s.id for s in latest.segments
                }:
                    break
                assert time.monotonic() < deadline, f"GC did not finish on {ns}: {latest.pending_delete[:3]}"
                await asyncio.sleep(0.5)
            assert [s for s in await wal_seqs(store, keys) if s <= latest.indexed_through] == []
            assert await dangling(store, keys) == []
            assert {i: d["v"] for i, d in (await live_view(store, keys)).items()} == await api_view(
                cluster.servers[0].url, ns
            )
        gc_done = time.monotonic()

        by_upsert = {o: sum(1 for b in run.batches if b.upsert == o) for o in ("ok", "unknown", "fail")}
        report = {
            "seconds": round(writes_done - t_start, 1),
            "processes_killed": len(run.kills),
            "kills_by_process": {n: run.kills.count(n) for n in cluster.nodes},
            "acknowledged_upserts": by_upsert["ok"],
            "acknowledged_documents": by_upsert["ok"] * BATCH,
            "acknowledged_deletes": sum(1 for b in run.batches if b.delete == "ok"),
            "unknown_outcome_writes": by_upsert["unknown"]
            + sum(1 for b in run.batches if b.delete == "unknown"),
            "refused_writes": by_upsert["fail"] + sum(1 for b in run.batches if b.delete == "fail"),
            "lost": lost,
            "half_visible": half,
            "phantom": phantom,
            "index_convergence_secs": round(convergence, 2),
            "gc_clean_secs_after_writes": round(gc_done - writes_done, 1),
            "http_statuses": run.statuses,
        }
        (tmp_path / "kill9-report.json").write_text(json.dumps(report, indent=2))
        print("\nkill -9 on S3:", json.dumps(report))
    finally:
        codes = cluster.stop_all()
        await store.close()
    # a clean exit on SIGTERM: 0, or -15 for servers (uvicorn re-raises the signal once drained)
    assert all(c in (0, -15) for c in codes.values()), codes
    return report


@pytest.mark.parametrize(
    ("kills", "writers"),
    [(5, 4), pytest.param(60, 6, marks=[pytest.mark.slow, pytest.mark.timeout(1800)])],
    ids=["short", "long"],
)
async def test_kill9_any_process_on_s3(
    s3_server: S3Server, s3_prefix: str, tmp_path: Path, kills: int, writers: int
) -> None:
    report = await run_cluster(s3_server, s3_prefix, tmp_path, kills, writers, seed=kills)
    assert report["processes_killed"] == kills
    assert report["acknowledged_upserts"] > 0
    assert report["lost"] == report["half_visible"] == report["phantom"] == 0
