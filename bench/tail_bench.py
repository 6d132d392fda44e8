"""What a commit and a strong read cost as the unindexed WAL tail grows.

Every commit folds its entry into the node's view of the namespace and the next commit resolves
against a snapshot of that view; every strong read after a write needs a snapshot including it.
If folding re-does work for the whole tail, both grow with the tail instead of with the entry.
This benchmark drives the engine in-process on a local folder (no indexer: everything stays in
the tail), fills one namespace to each tail length in 100-row entries (128-d vector, short text,
an integer; ``--update-fraction`` of each entry's ids overwrite earlier documents), and at each
length times, one writer at a time:

- ``commit``: a 100-row upsert from call to acknowledgement (resolve, encode, WAL PUT, fold);
- ``fold``: the part of the commit spent building the snapshot it resolves against
  (``NamespaceState.current``);
- ``strong refresh``: ``snapshot(strong=True)`` plus its document source right after a commit
  (the probe, the fold of what is new, the segment/tail masks a query starts from);
- ``point query``: a strong query for one id right after a commit (the above plus a filter).

The in-run reference is the ``put`` of the same entry's bytes to the store (what a commit cannot
avoid): ``commit / put`` says how much of the acknowledgement is not the write itself.

    .venv/bin/python bench/tail_bench.py [--lengths 1000,10000,100000] [--rounds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lagoon.config import Settings
from lagoon.engine.database import Database
from lagoon.engine.state import NamespaceState
from lagoon.storage.base import PutMode

ORG = "default"
NS = "tail-bench"


class Docs:
    """100-row upserts: fresh ids, plus a fraction overwriting ids written before."""

    def __init__(self, rows: int, update_fraction: float, id_type: str = "uint") -> None:
        self.rows = rows
        self.key = (lambda i: i) if id_type == "uint" else (lambda i: f"doc-{i:09d}")
        self.updates = int(rows * update_fraction)
        self.next_id = 0
        self.rng = np.random.default_rng(0)

    def batch(self) -> list[dict[str, Any]]:
        fresh = self.rows - self.updates if self.next_id else self.rows
        ids = list(range(self.next_id, self.next_id + fresh))
        self.next_id += fresh
        if fresh < self.rows:
            old = self.rng.choice(self.next_id - fresh, self.rows - fresh, replace=False)
            ids += [int(i) for i in old]
        vecs = self.rng.standard_normal((len(ids), 128)).astype(np.float32)
        return [
            {"id": self.key(i), "vector": vecs[k].tolist(), "title": f"document {i} about lagoons", "n": k}
            for k, i in enumerate(ids)
        ]


def timed_current(state: NamespaceState, spent: list[float]) -> None:
    """Record the time of every ``state.current()`` (the snapshot the commit resolves against)."""
    inner: Callable[[], Any] = state.current

    def current() -> Any:
        t0 = time.perf_counter()
        try:
            return inner()
        finally:
            spent.append(time.perf_counter() - t0)

    state.current = current  # type: ignore[method-assign]


def ms(samples: list[float]) -> float:
    return 1000 * statistics.median(samples)


async def measure(db: Database, docs: Docs, rounds: int) -> dict[str, float]:
    state = db.handle(ORG, NS).state
    store = state.store
    commit, fold, refresh, point, put = [], [], [], [], []
    for r in range(rounds):
        await db.write(NS, {"upsert_rows": docs.batch()})  # the timed commit folds this one
        batch = docs.batch()
        spent: list[float] = []
        timed_current(state, spent)
        t0 = time.perf_counter()
        await db.write(NS, {"upsert_rows": batch})
        commit.append(time.perf_counter() - t0)
        del state.current  # back to the method
        fold.append(sum(spent))
        entry = state.entries[-1][0]
        data = await store.get(state.wal_key(entry.seq))
        t0 = time.perf_counter()
        await store.put(f"bench-put/{r}", data, PutMode.CREATE)
        put.append(time.perf_counter() - t0)
        await store.delete(f"bench-put/{r}")
        await db.write(NS, {"upsert_rows": docs.batch()})
        t0 = time.perf_counter()
        (await db.snapshot(ORG, NS, strong=True)).source()
        refresh.append(time.perf_counter() - t0)
        await db.write(NS, {"upsert_rows": docs.batch()})
        t0 = time.perf_counter()
        got = await db.query(
            NS, {"rank_by": ["id", "asc"], "filters": ["id", "Eq", batch[0]["id"]], "top_k": 1}
        )
        point.append(time.perf_counter() - t0)
        if [row["id"] for row in got["rows"]] != [batch[0]["id"]]:
            raise SystemExit(f"point query lost id {batch[0]['id']}: {got['rows']}")
    return {
        "commit": ms(commit),
        "fold": ms(fold),
        "refresh": ms(refresh),
        "point": ms(point),
        "put": ms(put),
    }


async def index_first(db: Database, docs: Docs, rows: int) -> None:
    """``rows`` documents written in 5,000-row requests and folded into a segment by the indexer,
    so that the tail measured after them lies over an indexed namespace."""
    from lagoon.engine.indexer import index_namespace

    big = Docs(5000, 0.0)
    big.key, big.next_id = docs.key, docs.next_id
    while big.next_id < docs.next_id + rows:
        await db.write(NS, {"upsert_rows": big.batch()})
    docs.next_id = big.next_id
    t0 = time.perf_counter()
    state = db.handle(ORG, NS).state
    await index_namespace(db.store, state.keys, db.settings, db.components, force=True)
    await state.refresh_manifest()
    print(f"indexed {rows} documents into a segment in {time.perf_counter() - t0:.1f}s", flush=True)


async def run(
    lengths: list[int], rounds: int, update_fraction: float, segment_rows: int, id_type: str
) -> list[dict[str, Any]]:
    from bench.stores import bench_store

    settings = Settings()
    out = []
    with bench_store("fs") as target:
        store = target.open()
        db = Database(store, settings)
        docs = Docs(100, update_fraction, id_type)
        first = {"upsert_rows": docs.batch(), "distance_metric": "cosine_distance"}
        await db.write(NS, first if id_type == "uint" else {**first, "schema": {"id": id_type}})
        try:
            if segment_rows:
                await index_first(db, docs, segment_rows)
            for length in sorted(lengths):
                t0 = time.perf_counter()
                while db.handle(ORG, NS).state.tail.unindexed_rows < length:
                    await db.write(NS, {"upsert_rows": docs.batch()})
                state = db.handle(ORG, NS).state
                fill_s = time.perf_counter() - t0
                row = {"rows": state.tail.unindexed_rows, "entries": len(state.entries), "fill_s": fill_s}
                row.update(await measure(db, docs, rounds))
                out.append(row)
                print(
                    f"tail {row['rows']:>7} rows / {row['entries']:>5} entries: "
                    f"commit {row['commit']:7.2f} ms (fold {row['fold']:6.2f}, put {row['put']:5.2f}, "
                    f"commit/put {row['commit'] / row['put']:5.1f}x) | strong refresh {row['refresh']:6.2f} ms "
                    f"| point query {row['point']:6.2f} ms | filled in {fill_s:.1f}s",
                    flush=True,
                )
        finally:
            await db.close()
            await store.close()
    return out


def print_table(rows: list[dict[str, Any]]) -> None:
    first = rows[0]
    print(
        "\n| unindexed rows (entries) | commit ms | fold ms | store put ms | commit / put | "
        "strong refresh ms | point query ms | commit vs smallest |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['rows']:,} ({r['entries']:,}) | {r['commit']:.2f} | {r['fold']:.2f} | {r['put']:.2f} | "
            f"{r['commit'] / r['put']:.1f}x | {r['refresh']:.2f} | {r['point']:.2f} | "
            f"{r['commit'] / first['commit']:.2f}x |"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", default="1000,10000,100000", help="unindexed tail lengths (rows)")
    ap.add_argument("--rounds", type=int, default=30, help="measurements per length")
    ap.add_argument("--update-fraction", type=float, default=0.1, help="rows per entry overwriting old ids")
    ap.add_argument("--segment-rows", type=int, default=0, help="documents indexed into a segment first")
    ap.add_argument("--id-type", default="uint", choices=["uint", "string"])
    args = ap.parse_args()
    lengths = [int(x) for x in args.lengths.split(",")]
    rows = asyncio.run(run(lengths, args.rounds, args.update_fraction, args.segment_rows, args.id_type))
    print_table(rows)


if __name__ == "__main__":
    main()
