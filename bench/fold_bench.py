"""What folding one WAL entry into a namespace's tail costs, amortised over a long run of entries.

A serving process folds every entry of its namespace: the ones it commits and the ones another
process of the node commits (``NamespaceState.catch_up``); each commit then resolves against a
snapshot of the fold (``Tail.snapshot``). This benchmark times that part alone, in process, with
no store and no HTTP: entries shaped like ``bench/write_bench.py``'s (groups of ``--group``
100-row upserts, 128-d float32 vector, a short title, an integer; ids cycling over a pool of
``--pool`` documents, so once the pool is full every row replaces an older one) are made once by
the real writer (a ``Database`` on a temporary folder) and then applied to fresh ``Tail``s, one
entry at a time, each followed by what its caller needs:

- ``commit``: ``Tail.apply`` + ``Tail.snapshot`` (what a plain upsert's commit needs);
- ``strong``: the same + ``Snapshot.source()`` (what a strong query after each write needs);
- ``patch``: the same + ``Snapshot.lookup`` of 100 ids written earlier (a patch's resolve);
- ``catch-up``: ``--batch`` entries applied, then one snapshot (a process catching up on the
  other's entries, or a cold load's fold).

It prints the mean ms per entry (means, not medians: a merge of runs is paid by one entry in
many) and per 100 rows. Run the same file from another tree to compare builds.

    .venv/bin/python bench/fold_bench.py [--entries 600] [--group 4] [--pool 20000] [--rounds 3] [--id-type string]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lagoon.config import Settings
from lagoon.engine.database import Database
from lagoon.engine.tail import Tail
from lagoon.format.wal import WalEntry
from lagoon.storage.fs import FsStore

NS = "fold-bench"
ROWS = 100


def body(start: int, rng: np.random.Generator, id_type: str) -> dict[str, Any]:
    vecs = rng.standard_normal((ROWS, 128)).astype(np.float32)
    ids = range(start, start + ROWS)
    return {
        "upsert_rows": [
            {
                "id": i if id_type == "uint" else f"doc-{i:09d}",
                "vector": vecs[k].tolist(),
                "title": f"document {i} about lagoons",
                "n": i,
            }
            for k, i in enumerate(ids)
        ]
    }


async def make_entries(
    entries: int, group: int, pool: int, id_type: str = "uint"
) -> list[tuple[WalEntry, int]]:
    """``entries`` WAL entries of ``group`` requests each, made by the real writer."""
    rng = np.random.default_rng(0)
    bodies = [body(start, rng, id_type) for start in range(0, pool, ROWS)]
    with tempfile.TemporaryDirectory() as root:
        store = FsStore(root)
        db = Database(store, Settings())
        try:
            first = {**bodies[0], "distance_metric": "cosine_distance"}
            await db.write(NS, first if id_type == "uint" else {**first, "schema": {"id": id_type}})
            n = 1
            while len(db.handle("default", NS).state.entries) < entries:
                await asyncio.gather(*(db.write(NS, bodies[(n + k) % len(bodies)]) for k in range(group)))
                n += group
            return list(db.handle("default", NS).state.entries[:entries])
        finally:
            await db.close()
            await store.close()


def run_case(case: str, entries: list[tuple[WalEntry, int]], batch: int) -> float:
    """Seconds to fold every entry as ``case`` says."""
    tail = Tail()
    early = [e.docs.column("id").to_pylist()[:ROWS] for e, _ in entries[:8] if e.docs is not None]
    wanted = [i for ids in early for i in ids][:ROWS]
    t0 = time.perf_counter()
    for n, (entry, size) in enumerate(entries):
        tail.apply(entry, size)
        if case == "catch-up" and (n + 1) % batch and n + 1 < len(entries):
            continue
        snap = tail.snapshot(manifest_version=0, indexed_through=0)
        if case == "strong":
            snap.source()
        elif case == "patch":
            got = snap.lookup(wanted)
            if len(got) != len(wanted):
                raise SystemExit(f"lookup found {len(got)} of {len(wanted)} ids")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=600, help="WAL entries folded per case")
    ap.add_argument("--group", type=int, default=4, help="100-row requests per entry")
    ap.add_argument("--pool", type=int, default=20000, help="distinct ids (write_bench: 200 bodies x 100)")
    ap.add_argument("--batch", type=int, default=16, help="catch-up: entries applied per snapshot")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cases", default="commit,strong,patch,catch-up")
    ap.add_argument("--id-type", default="uint", choices=["uint", "string"])
    args = ap.parse_args()
    entries = asyncio.run(make_entries(args.entries, args.group, args.pool, args.id_type))
    rows = sum(e.num_docs for e, _ in entries)
    print(
        f"{len(entries)} entries, {rows} rows ({rows / len(entries):.0f} per entry), pool {args.pool}, "
        f"{args.id_type} ids"
    )
    cases = args.cases.split(",")
    spent: dict[str, list[float]] = {c: [] for c in cases}
    for _ in range(args.rounds):
        for case in cases:
            spent[case].append(run_case(case, entries, args.batch))
    print("| case | ms per entry | ms per 100 rows |\n|---|---|---|")
    for case in cases:
        s = statistics.median(spent[case])
        print(f"| {case} | {1000 * s / len(entries):.3f} | {1000 * s / rows * ROWS:.3f} |")


if __name__ == "__main__":
    main()
