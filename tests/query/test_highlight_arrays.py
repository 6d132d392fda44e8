"""Highlight on a ``[]string`` attribute: fragments of every element, with ``array_index``."""

from __future__ import annotations

from starlette.testclient import TestClient

from lagoon.config import Settings
from lagoon.server import create_app


def test_highlight_array_elements() -> None:
    app = create_app(Settings(storage={"backend": "memory"}))  # type: ignore[arg-type]
    with TestClient(app) as c:
        schema = {"tags": {"type": "[]string", "full_text_search": True}}
        rows = [{"id": 1, "tags": ["object storage", "cold cache", "warm"]}, {"id": 2, "tags": ["x"]}]
        assert c.post("/v2/namespaces/h", json={"upsert_rows": rows, "schema": schema}).status_code == 200
        body = {
            "rank_by": ["tags", "BM25", "cache"],
            "compute_attributes": {
                "h": ["Highlight", "tags", {"include_offsets": "utf-8"}],
                "w": ["Highlight", "tags", {"fragment_by": "word"}],
            },
        }
        res = c.post("/v2/namespaces/h/query", json=body).json()
        assert [r["id"] for r in res["rows"]] == [1]
        assert res["rows"][0]["h"] == [
            {"text": "cold cache", "fragment_range": [0, 10], "match_ranges": [[5, 10]], "array_index": 1}
        ]
        assert res["rows"][0]["w"] == [{"text": "cache"}]
