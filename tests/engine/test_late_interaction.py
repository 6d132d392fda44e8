"""``[][N]f32`` multi-vector attributes ranked by late interaction, over segments and the WAL tail
together, against a brute-force reference; copies and export/import keep them exactly."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import orjson
import pytest

from lagoon.config import Settings
from lagoon.engine.database import Database
from lagoon.engine.indexer import index_namespace
from lagoon.engine.ops.transfer import export_namespace, import_namespace
from lagoon.errors import InvalidRequest
from lagoon.format.keys import NamespaceKeys
from lagoon.index.vector import late
from lagoon.storage.memory import MemoryStore

pytestmark = pytest.mark.anyio
DIMS = 4


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def docs(rng: np.random.Generator, start: int, n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(start, start + n):
        if i % 7 == 3:
            out.append({"id": i, "tag": i % 2})  # no value: never ranked
            continue
        k = int(rng.integers(1, 6))
        out.append({"id": i, "tag": i % 2, "emb": rng.standard_normal((k, DIMS)).round(3).tolist()})
    return out


def reference(stored: dict[int, Any], q: np.ndarray, metric: str) -> dict[int, float]:
    def dist(d: np.ndarray, v: np.ndarray) -> float:
        if metric == "euclidean_squared":
            return float(((d - v) ** 2).sum())
        return float(1 - d @ v / (np.linalg.norm(d) * np.linalg.norm(v)))

    return {
        i: sum(min(dist(np.asarray(d, np.float64), qv) for d in ds) for qv in q.astype(np.float64))
        for i, ds in stored.items()
        if ds is not None
    }


@pytest.mark.parametrize("metric", ["cosine_distance", "euclidean_squared"])
async def test_ranking_over_segments_and_tail_matches_brute_force(
    metric: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(late, "BLOCK_VECTORS", 16)  # many blocks, documents across block edges
    rng = np.random.default_rng(1)
    db = Database(MemoryStore(), Settings())
    schema = {"emb": {"type": f"[][{DIMS}]f32", "ann": {"late_interaction": True}}}
    first, second = docs(rng, 0, 120), docs(rng, 100, 60)  # the second overwrites 20
    await db.write("m", {"upsert_rows": first, "schema": schema, "distance_metric": metric})
    await index_namespace(db.store, NamespaceKeys.of("default", "m"), db.settings, db.components, force=True)
    await db.write("m", {"upsert_rows": second})
    stored = {d["id"]: d.get("emb") for d in first + second}
    q = rng.standard_normal((3, DIMS)).astype(np.float32)
    want = reference(stored, q, metric)
    out = await db.query("m", {"rank_by": ["emb", "ANN", q.tolist()], "top_k": 1000})
    assert [r["id"] for r in out["rows"]] == sorted(want, key=lambda i: (want[i], i))
    for r in out["rows"]:
        assert r["$dist"] == pytest.approx(want[r["id"]], rel=1e-4, abs=1e-4)
    filtered = await db.query(
        "m", {"rank_by": ["emb", "kNN", q.tolist()], "filters": ["tag", "Eq", 1], "top_k": 5}
    )
    odd = {i: d for i, d in want.items() if i % 2 == 1}
    assert [r["id"] for r in filtered["rows"]] == sorted(odd, key=lambda i: (odd[i], i))[:5]
    explained = await db.explain("m", {"rank_by": ["emb", "ANN", q.tolist()]})
    assert "late interaction" in explained["plan_text"]
    await db.close()


async def test_copy_and_export_import_keep_multivectors() -> None:
    rng = np.random.default_rng(2)
    db = Database(MemoryStore(), Settings())
    schema = {"emb": {"type": f"[][{DIMS}]f32", "ann": {"late_interaction": True}}}
    await db.write(
        "m", {"upsert_rows": docs(rng, 0, 30), "schema": schema, "distance_metric": "cosine_distance"}
    )
    await db.write("cp", {"copy_from_namespace": "m"})
    buf = io.BytesIO()
    await export_namespace(db, "m", buf)
    await import_namespace(db, "imp", buf.getvalue().splitlines())
    all_rows = {"rank_by": ["id", "asc"], "include_attributes": True, "top_k": 100}
    q = {"rank_by": ["emb", "ANN", [[1.0, 0.0, 0.0, 0.0]]], "top_k": 10}
    for ns in ("cp", "imp"):
        assert (await db.query(ns, all_rows))["rows"] == (await db.query("m", all_rows))["rows"]
        assert (await db.query(ns, q))["rows"] == (await db.query("m", q))["rows"]
        assert await db.get_schema(ns) == await db.get_schema("m")
    header = orjson.loads(buf.getvalue().splitlines()[0])
    assert header["schema"]["emb"]["type"] == f"[][{DIMS}]f32"
    await db.close()


async def test_refusals_name_the_problem() -> None:
    db = Database(MemoryStore(), Settings())
    cases: list[tuple[dict[str, Any], str]] = [
        ({"schema": {"e": {"type": "[][2]f32", "ann": {"late_interaction": True}}},
          "upsert_rows": [{"id": 1, "e": []}], "distance_metric": "cosine_distance"}, "non-empty"),
        ({"schema": {"e": {"type": "[2]f32", "ann": {"late_interaction": True}}},
          "upsert_rows": [{"id": 1, "e": [1, 2]}], "distance_metric": "cosine_distance"}, "only valid"),
        ({"schema": {"e": {"type": "[][2]f16"}}, "upsert_rows": [{"id": 1}]}, "unknown type"),
        ({"schema": {"e": {"type": "[][2]f32", "ann": {"late_interaction": True}}},
          "upsert_rows": [{"id": 1, "e": [[1, 2]]}]}, "distance_metric is required"),
    ]  # fmt: skip
    for body, word in cases:
        with pytest.raises(InvalidRequest, match=word):
            await db.write("x", body)
    await db.write("y", {"schema": {"e": "[][2]f32"}, "upsert_rows": [{"id": 1, "e": [[1, 2]]}]})
    with pytest.raises(InvalidRequest, match="not indexed for late interaction"):
        await db.query("y", {"rank_by": ["e", "ANN", [[1, 2]]]})
    await db.close()
