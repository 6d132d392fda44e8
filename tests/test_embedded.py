"""The embedded Python API: lagoon.open(...) end to end on a local folder and in memory."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import lagoon


def test_embedded_roundtrip_on_a_folder(tmp_path: Path) -> None:
    with lagoon.open(tmp_path / "data") as db:
        ns = db.namespace("docs")
        res = ns.write(
            upsert_rows=[
                {"id": 1, "vector": np.array([1.0, 0.0], np.float32), "title": "hello lagoon", "year": 2020},
                {"id": 2, "vector": [0.0, 1.0], "title": "goodbye sea", "year": 2021},
                {"id": 3, "vector": [0.7, 0.7], "title": "lagoon lagoon", "year": 2022},
            ],
            distance_metric="cosine_distance",
            schema={"title": {"type": "string", "full_text_search": True}},
        )
        assert res["rows_upserted"] == 3
        rows = ns.query(rank_by=("vector", "ANN", [1.0, 0.0]), top_k=2, include_attributes=["title"])["rows"]
        assert [r["id"] for r in rows] == [1, 3]
        assert rows[0]["$dist"] == pytest.approx(0.0, abs=1e-6)
        assert rows[1]["$dist"] == pytest.approx(1 - 0.7 / math.hypot(0.7, 0.7), abs=1e-6)
        assert rows[0]["title"] == "hello lagoon"
        bm25 = ns.query(rank_by=("title", "BM25", "lagoon"), top_k=10)["rows"]
        assert [r["id"] for r in bm25] == [3, 1]
        filtered = ns.query(rank_by=("year", "desc"), filters=("year", "Lt", 2022), top_k=10)["rows"]
        assert [r["id"] for r in filtered] == [2, 1]
        multi = ns.multi_query(
            queries=[
                {"rank_by": ("vector", "ANN", [1.0, 0.0]), "top_k": 3},
                {"rank_by": ("title", "BM25", "lagoon"), "top_k": 3},
            ],
            rerank_by=("RRF",),
        )
        fused = multi["results"][0]["rows"]
        assert {r["id"] for r in fused} == {1, 2, 3}
        assert fused[0]["id"] in (1, 3)
        agg = ns.query(aggregate_by={"n": ("Count",)}, filters=("year", "Gte", 2021))
        assert agg["aggregations"] == {"n": 2}
        assert ns.metadata()["approx_row_count"] == 3
        assert ns.schema()["title"]["full_text_search"]["language"] == "english"
        assert list(db.namespaces()) == ["docs"]
        plan = ns.explain_query(rank_by=("vector", "ANN", [1.0, 0.0]), top_k=1)["plan_text"]
        assert "snapshot" in plan

    # Durable: a new process-local database on the same folder sees everything.
    with lagoon.open(tmp_path / "data") as db:
        ns = db.namespace("docs")
        assert ns.exists()
        assert ns.metadata()["approx_row_count"] == 3
        ns.delete_all()
        assert not ns.exists()
        assert list(db.namespaces()) == []


def test_embedded_errors_are_lagoon_errors() -> None:
    with lagoon.open("memory://") as db:
        ns = db.namespace("x")
        with pytest.raises(lagoon.NotFound):
            ns.query(rank_by=("id", "asc"), top_k=1)
        ns.write(upsert_rows=[{"id": 1, "n": 1}])
        with pytest.raises(lagoon.InvalidRequest, match="expected int"):
            ns.write(upsert_rows=[{"id": 2, "n": "one"}])
        with pytest.raises(lagoon.InvalidRequest):
            ns.query(rank_by=("n", "sideways"), top_k=1)
        with pytest.raises(lagoon.InvalidRequest):
            db.namespace("../etc")


def test_namespaces_listing_pages() -> None:
    with lagoon.open("memory://") as db:
        for i in range(7):
            db.namespace(f"ns-{i}").write(upsert_rows=[{"id": 1}])
        db.namespace("other").write(upsert_rows=[{"id": 1}])
        assert sorted(db.namespaces(prefix="ns-", page_size=2)) == [f"ns-{i}" for i in range(7)]
        assert len(list(db.namespaces(page_size=3))) == 8
