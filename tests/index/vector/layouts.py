"""Namespaces with adversarial segment layouts, built through the real engine, for ANN recall.

A *layout* is a list of steps run against one namespace of an in-process ``Database`` (memory
store, no background indexer): write a range of the base vectors, run the indexer (one level-0
segment from the WAL tail), run the compactor (size-tiered, or a full merge), delete or re-upsert
ids. The result is the namespace a real deployment could have reached, with whatever mix of one
big segment, many small ones, an unindexed tail, tombstones and shadowed rows the steps made.

``random_layout(rng, n)`` draws one of several styles (one big segment, many tiny segments,
tiered with compaction, random), each with a random unindexed tail and optionally heavy deletes
and updates, and optionally writes the vectors in an order correlated with their position
(segments that each hold only a part of the space). Ground truth is computed here with numpy
over the live vectors, independently of the engine.

Every document carries ``f`` (uniform 0..99, for filters of 50 / 10 / 1 % uncorrelated with the
vectors) and ``region`` (0..15, the nearest of 16 fixed random directions: a filter on it keeps a
few clusters of the space).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lagoon.config import Settings
from lagoon.engine.compactor import compact_namespace
from lagoon.engine.components import Components
from lagoon.engine.database import Database
from lagoon.engine.indexer import index_namespace
from lagoon.format.keys import NamespaceKeys
from lagoon.storage.memory import MemoryStore

NS = "ann"
KEYS = NamespaceKeys.of("default", NS)
REGIONS = 16
WRITE_BATCH = 5000


@dataclass(frozen=True)
class Step:
    kind: str  # write | index | compact | compact_full | delete | update
    ids: tuple[int, int] = (0, 0)  # [lo, hi) of the write order for write / update
    delete: tuple[int, ...] = ()


@dataclass
class Layout:
    style: str
    steps: list[Step]
    order: np.ndarray  # write order: position i of the write stream is base row order[i]
    describe: str = ""


@dataclass
class Built:
    db: Database
    live: np.ndarray  # bool over base rows
    segments: list[int]  # live rows per segment (manifest order)
    tail_rows: int
    build_s: float
    attrs: dict[str, np.ndarray] = field(default_factory=dict)

    def summary(self) -> str:
        segs = sorted(self.segments, reverse=True)
        shown = ", ".join(f"{s:,}" for s in segs[:6]) + (f", … ({len(segs)} in all)" if len(segs) > 6 else "")
        return f"{len(segs)} segments [{shown}], tail {self.tail_rows:,}, live {int(self.live.sum()):,}"


def region_of(base: np.ndarray, seed: int = 99) -> np.ndarray:
    """The nearest of REGIONS fixed random unit directions: a label correlated with position."""
    g = np.random.default_rng(seed)
    dirs = g.standard_normal((REGIONS, base.shape[1])).astype(np.float32)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    out: np.ndarray = np.argmax(base @ dirs.T, axis=1).astype(np.int64)
    return out


def filter_values(n: int, seed: int = 5) -> np.ndarray:
    out: np.ndarray = np.random.default_rng(seed).integers(0, 100, n)
    return out


# --------------------------------------------------------------------------------------------- layouts


def _ranges(rng: random.Random, n: int, lo: int, hi: int) -> list[tuple[int, int]]:
    out, at = [], 0
    while at < n:
        size = round(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        out.append((at, min(n, at + max(1, size))))
        at = out[-1][1]
    return out


def random_layout(rng: random.Random, n: int, *, style: str | None = None) -> Layout:
    """One random layout of ``n`` rows (see the module docstring)."""
    styles = ["one", "many_small", "tiered", "random", "sorted"]
    style = style or rng.choice(styles)
    order = np.arange(n)
    steps: list[Step] = []
    tail = int(n * rng.choice([0.0, 0.0, 0.02, 0.1, 0.2]))
    body = n - tail
    if style == "sorted":  # write in an order correlated with position: segments split the space
        order = np.empty(0, np.int64)  # filled by build() from the regions
    if style == "one":
        ranges = _ranges(rng, body, 20_000, 40_000)
        for r in ranges:
            steps += [Step("write", r)]
        steps += [Step("index"), Step("compact_full")]
    elif style == "many_small":
        for r in _ranges(rng, body, max(200, n // 200), max(400, n // 25)):
            steps += [Step("write", r), Step("index")]
    elif style in ("tiered", "sorted"):
        for r in _ranges(rng, body, max(500, n // 60), max(1000, n // 6)):
            steps += [Step("write", r), Step("index"), Step("compact")]
    else:
        for r in _ranges(rng, body, max(200, n // 300), max(1000, n // 3)):
            steps.append(Step("write", r))
            if rng.random() < 0.7:
                steps.append(Step("index"))
            if rng.random() < 0.3:
                steps.append(Step("compact"))
    described = style
    late: list[Step] = []  # after the tail is written: stays unindexed
    if rng.random() < 0.4:  # updates: rows re-written with the same vector shadow older segment rows
        lo = rng.randrange(0, max(1, body // 2))
        steps += [Step("update", (lo, min(body, lo + n // 10))), Step("index")]
        described += " + 10 % updated"
    if rng.random() < 0.5:  # deletes: some indexed (tombstones in segments), some in the tail
        frac = rng.choice([0.1, 0.3, 0.6])
        victims = tuple(sorted(rng.sample(range(n), int(frac * n))))
        half = len(victims) // 2
        steps += [Step("delete", delete=victims[:half]), Step("index")]
        late.append(Step("delete", delete=victims[half:]))
        described += f" + {frac:.0%} deleted"
    if tail:
        steps.append(Step("write", (body, n)))
        described += f", {tail / n:.0%} unindexed tail"
    steps += late
    return Layout(style, steps, order, described)


# --------------------------------------------------------------------------------------------- build


def settings() -> Settings:
    return Settings(  # type: ignore[arg-type]
        indexer={"flush_interval_secs": 3600, "compaction_fanin": 4, "gc_grace_secs": 3600},
        manifest={"poll_interval_ms": 1},
    )


async def build(
    layout: Layout,
    base: np.ndarray,
    metric: str = "cosine_distance",
    *,
    db_settings: Settings | None = None,
    metadata: dict[str, Any] | None = None,
) -> Built:
    """Run ``layout`` on a fresh in-memory namespace; returns the database (open: close it)."""
    s = db_settings or settings()
    store = MemoryStore()
    comps = Components(rng=random.Random(0), node_id="layouts")
    db = Database(store, s, comps)
    n = base.shape[0]
    region = region_of(base)
    f = filter_values(n)
    order = layout.order
    if order.shape[0] != n:  # "sorted": by region, then by a random key inside each region
        order = np.lexsort((np.random.default_rng(1).random(n), region))
    live = np.zeros(n, bool)
    t0 = time.perf_counter()
    first = True
    for step in layout.steps:
        if step.kind in ("write", "update"):
            rows = order[step.ids[0] : step.ids[1]]
            for lo in range(0, rows.shape[0], WRITE_BATCH):
                chunk = rows[lo : lo + WRITE_BATCH]
                body: dict[str, Any] = {
                    "upsert_columns": {
                        "id": chunk.tolist(),
                        "v": base[chunk].tolist(),
                        "f": f[chunk].tolist(),
                        "region": region[chunk].tolist(),
                    }
                }
                if first:
                    body["distance_metric"] = metric
                    body["schema"] = {"v": f"[{base.shape[1]}]f32", "f": "int", "region": "int"}
                    first = False
                await db.write(NS, body)
            live[rows] = True
        elif step.kind == "delete":
            ids = list(step.delete)
            for lo in range(0, len(ids), WRITE_BATCH):
                await db.write(NS, {"deletes": ids[lo : lo + WRITE_BATCH]})
            live[np.asarray(ids, np.int64)] = False
        elif step.kind == "index":
            await index_namespace(store, KEYS, s, comps, force=True)
        elif step.kind == "compact":
            while (await compact_namespace(store, KEYS, s, comps)).status == "committed":
                pass
        elif step.kind == "compact_full":
            await compact_namespace(store, KEYS, s, comps, full=True)
    if metadata:
        await db.update_metadata(NS, metadata)
    build_s = time.perf_counter() - t0
    snap = await db.snapshot("default", NS, strong=True)
    src: Any = snap.source()
    segments = [p.num_docs for p in src.parts if getattr(p, "reader", None) is not None]
    built = Built(db, live, segments, snap.unindexed_rows, build_s, {"f": f, "region": region})
    return built


# --------------------------------------------------------------------------------------------- measure


def exact_topk(
    base: np.ndarray, qs: np.ndarray, k: int, mask: np.ndarray, metric: str = "cosine_distance"
) -> list[np.ndarray]:
    """Exact top-``k`` base rows among ``mask`` (ties by row), independently of the engine."""
    rows = np.flatnonzero(mask)
    x = base[rows]
    out = []
    for lo in range(0, qs.shape[0], 64):
        q = qs[lo : lo + 64]
        if metric == "cosine_distance":
            qn = q / np.linalg.norm(q, axis=1, keepdims=True)
            xn = x / np.linalg.norm(x, axis=1, keepdims=True)
            d = -(qn @ xn.T)
        else:
            d = (x * x).sum(1)[None, :] - 2 * q @ x.T
        kk = min(k, rows.shape[0])
        part = np.argpartition(d, kk - 1, axis=1)[:, :kk] if kk else np.zeros((q.shape[0], 0), np.int64)
        for i in range(q.shape[0]):
            p = part[i][np.lexsort((rows[part[i]], d[i, part[i]]))]
            out.append(rows[p])
    return out


FILTERS: dict[str, Any] = {
    "none": None,
    "50%": ["f", "Lt", 50],
    "10%": ["f", "Lt", 10],
    "1%": ["f", "Lt", 1],
}


def filter_mask(name: str, attrs: dict[str, np.ndarray], region: int | None = None) -> np.ndarray:
    f = attrs["f"]
    if name == "none":
        return np.ones(f.shape[0], bool)
    if name == "region":
        out: np.ndarray = attrs["region"] == region
        return out
    return f < {"50%": 50, "10%": 10, "1%": 1}[name]


@dataclass
class Measured:
    recall: float
    per_query: list[float]
    latencies_ms: list[float]

    @property
    def p50_ms(self) -> float:
        return float(np.percentile(self.latencies_ms, 50))


async def measure(
    built: Built,
    base: np.ndarray,
    qs: np.ndarray,
    flt: Any,
    mask: np.ndarray,
    *,
    k: int = 10,
    metric: str = "cosine_distance",
    timed: bool = False,
) -> Measured:
    """recall@k of default ANN queries (through ``Database.query``) against the exact top-k."""
    truth = exact_topk(base, qs, k, built.live & mask, metric)
    per_query, lat = [], []
    for q, t in zip(qs, truth, strict=True):
        body: dict[str, Any] = {"rank_by": ["v", "ANN", q.tolist()], "top_k": k}
        if flt is not None:
            body["filters"] = flt
        if timed:
            body["consistency"] = {"level": "eventual"}
        t0 = time.perf_counter()
        res = await built.db.query(NS, body)
        lat.append((time.perf_counter() - t0) * 1000)
        got = {r["id"] for r in res["rows"]}
        per_query.append(len(got & set(t.tolist())) / len(t) if len(t) else 1.0)
    return Measured(float(np.mean(per_query)), per_query, lat)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def segment_sizes(built: Built) -> Sequence[int]:
    return built.segments
