"""Export, import and copy rates (docs/s, MB/s), each next to a peer measured in the same run.

One namespace of N documents (a 128-d vector, a short text, an integer) on the local filesystem,
indexed into segments first (so export and copy read segments, as they do in production):

- ``lagoon export`` (``export_to_path``) vs its peer *serialize*: orjson writing the same rows as
  JSON lines to a file (the cost of the file format alone, no database);
- ``lagoon import`` (``import_from_path``) vs its peer *upsert*: the same documents written with
  plain ``upsert_rows`` writes of the same batch size (the write path alone, no file);
- ``copy_from_namespace`` (server-side, streamed in batches) vs the export + import round trip.

    .venv/bin/python bench/transfer_bench.py [--docs 100000] [--batch 1000]

MB are of the export file (JSON lines), 10^6 bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lagoon.config import Settings
from lagoon.engine.database import Database
from lagoon.engine.indexer import index_namespace
from lagoon.engine.ops.transfer import export_to_path, import_from_path
from lagoon.format.keys import NamespaceKeys
from lagoon.storage.fs import FsStore


def make_docs(start: int, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    vecs = rng.standard_normal((n, 128)).astype(np.float32)
    return [
        {
            "id": start + i,
            "vector": vecs[i].tolist(),
            "title": f"document {start + i} about lagoons",
            "n": i % 97,
        }
        for i in range(n)
    ]


async def fill(db: Database, n: int, batch: int) -> None:
    rng = np.random.default_rng(7)
    for start in range(0, n, batch):
        body: dict[str, Any] = {"upsert_rows": make_docs(start, min(batch, n - start), rng)}
        if start == 0:
            body |= {
                "distance_metric": "cosine_distance",
                "schema": {"title": {"type": "string", "full_text_search": True}},
            }
        await db.write("src", body)


def timed(label: str, docs: int, nbytes: int, secs: float) -> dict[str, Any]:
    return {"op": label, "docs": docs, "secs": secs, "docs_s": docs / secs, "mb_s": nbytes / secs / 1e6}


async def run(n: int, batch: int, root: Path) -> list[dict[str, Any]]:
    settings = Settings()
    db = Database(FsStore(root / "data"), settings)
    out: list[dict[str, Any]] = []
    try:
        await fill(db, n, batch)
        await index_namespace(
            db.store, NamespaceKeys.of("default", "src"), settings, db.components, force=True
        )
        path = root / "src.jsonl"
        t = time.perf_counter()
        stats = await export_to_path(db, "src", str(path))
        size = path.stat().st_size
        out.append(timed("lagoon export", stats.documents, size, time.perf_counter() - t))
        rows = [orjson.loads(line) for line in path.read_bytes().splitlines()]
        t = time.perf_counter()
        with (root / "peer.jsonl").open("wb") as f:
            for row in rows:
                f.write(orjson.dumps(row) + b"\n")
        out.append(timed("peer: orjson serialize", n, size, time.perf_counter() - t))
        t = time.perf_counter()
        istats = await import_from_path(db, "dst", str(path), batch_rows=batch)
        out.append(timed("lagoon import", istats.documents, size, time.perf_counter() - t))
        docs = rows[1:-1]
        t = time.perf_counter()
        for start in range(0, len(docs), batch):
            body: dict[str, Any] = {"upsert_rows": docs[start : start + batch]}
            if start == 0:
                body |= {"schema": rows[0]["schema"], "distance_metric": rows[0]["distance_metric"]}
            await db.write("peer", body)
        out.append(timed("peer: upsert writes", len(docs), size, time.perf_counter() - t))
        t = time.perf_counter()
        result = await db.write("cp", {"copy_from_namespace": "src"})
        out.append(timed("copy_from_namespace", result["rows_affected"], size, time.perf_counter() - t))
    finally:
        await db.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=1000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="lagoon-transfer-") as tmp:
        rows = asyncio.run(run(args.docs, args.batch, Path(tmp)))
    by = {r["op"]: r for r in rows}
    print(f"{args.docs} documents, batch {args.batch}")
    print("| operation | docs | seconds | docs/s | MB/s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['op']} | {r['docs']:,} | {r['secs']:.1f} | {r['docs_s']:,.0f} | {r['mb_s']:.1f} |")
    exp, imp, cp = by["lagoon export"], by["lagoon import"], by["copy_from_namespace"]
    print(f"export / serialize time: {exp['secs'] / by['peer: orjson serialize']['secs']:.2f}x")
    print(f"import / upsert time: {imp['secs'] / by['peer: upsert writes']['secs']:.2f}x")
    print(f"copy / (export + import) time: {cp['secs'] / (exp['secs'] + imp['secs']):.2f}x")


if __name__ == "__main__":
    main()
