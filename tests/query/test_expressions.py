"""Rank expressions (Attribute, Saturate, Decay, Dist, Max floors), compute_attributes (VectorDist,
rank expressions, Highlight), the Fuzzy filter, ForEachUnique grouping and BM25 token arrays.

Each feature is queried over index segments plus an unindexed WAL tail (the engine's composite
source), so per-part evaluation is covered; every expected value is worked out here from the
documented formula (the SDK-level checks of the same features are tests/sdk/cases.py)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from lagoon.engine.database import Database
from lagoon.errors import InvalidRequest
from lagoon.storage.memory import MemoryStore
from tests.engine.lifecycle.helpers import NS, segment_and_tail

pytestmark = pytest.mark.anyio

DAY = 86_400_000
DOCS = [
    {"id": 1, "n": 5, "u": 7, "price": 10.0, "day": "2024-01-01", "tags": ["x", "y", "x"], "vector": [1.0, 0.0],
     "text": "Lagoon keeps data in object storage. Queries read a local cache.\n\nNothing else matters here."},
    {"id": 2, "n": -3, "u": 1, "price": 20.0, "day": "2024-01-02", "tags": ["y"], "vector": [0.0, 1.0],
     "text": "Just a cache."},
    {"id": 3, "n": 8, "u": 0, "price": None, "day": None, "tags": [], "vector": [1.0, 1.0],
     "text": "unrelated words"},
    {"id": 4, "n": 1, "u": 3, "price": 40.0, "day": "2024-01-04", "tags": None, "vector": None,
     "text": "Storage costs, storage tiers."},
    {"id": 5, "n": 13, "u": 2, "price": 50.0, "day": "2024-01-05", "tags": ["z", "x"], "vector": [2.0, 0.0],
     "text": "Caches: the cached café 東京 cache."},
]  # fmt: skip
SCHEMA = {
    "u": "uint",
    "day": "datetime",
    "tags": {"type": "[]string", "fuzzy": True},
    "text": {"type": "string", "full_text_search": {"stemming": True}},
    "name": {"type": "string", "fuzzy": True},
}
NAMES = {1: "turbopuffer", 2: "lagoon", 3: "laguna beach", 4: "Lagoon", 5: None}


@pytest.fixture
async def db() -> Any:
    """Ids 1–3 in an index segment, 4–5 in the WAL tail."""
    rows = [{**d, "name": NAMES[d["id"]]} for d in DOCS]
    database = await segment_and_tail(
        MemoryStore(), rows[:3], rows[3:], distance_metric="euclidean_squared", schema=SCHEMA
    )
    snap = await database.snapshot("default", NS, strong=True)
    assert len(snap.segments) == 1 and snap.unindexed_rows == 2
    yield database
    await database.close()


async def q(db: Database, **body: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = (await db.query(NS, body))["rows"]
    return rows


def pairs(rows: list[dict[str, Any]], key: str = "$dist") -> list[tuple[Any, float]]:
    return [(r["id"], r[key]) for r in rows]


# --- rank expressions -----------------------------------------------------------------------------


async def test_saturate_clamps_negative_attributes(db: Database) -> None:
    rows = await q(db, rank_by=["Saturate", ["Attribute", "n"], {"midpoint": 4, "exponent": 2}])
    # x = max(n, 0); x²/(x² + 16): n = 13, 8, 5, 1, -3
    want = [(5, 169 / 185), (3, 64 / 80), (1, 25 / 41), (4, 1 / 17), (2, 0.0)]
    assert [r["id"] for r in rows] == [i for i, _ in want]
    assert [r["$dist"] for r in rows] == pytest.approx([s for _, s in want])


async def test_unsigned_attribute_needs_no_floor(db: Database) -> None:
    rows = await q(db, rank_by=["Attribute", "u"])
    # every document is returned, including u = 0 (attribute scores rank all documents)
    assert pairs(rows) == [(1, 7.0), (4, 3.0), (5, 2.0), (2, 1.0), (3, 0.0)]


async def test_signed_attribute_needs_a_floor(db: Database) -> None:
    with pytest.raises(InvalidRequest, match=r"non-negative.*\[\"Max\", \[0"):
        await db.query(NS, {"rank_by": ["Sum", [["Attribute", "n"], ["Attribute", "u"]]]})
    rows = await q(db, rank_by=["Max", [0, ["Attribute", "n"]]], top_k=2)
    assert pairs(rows) == [(5, 13.0), (3, 8.0)]
    with pytest.raises(InvalidRequest, match="Sum takes rank clauses"):
        await db.query(NS, {"rank_by": ["Sum", [1, ["Attribute", "u"]]]})


async def test_max_floor_returns_only_matching_documents(db: Database) -> None:
    rows = await q(db, rank_by=["Max", [0.5, ["text", "BM25", "unrelated"]]])
    assert [r["id"] for r in rows] == [3]  # the floor lifts everyone, but only id 3 matches
    assert rows[0]["$dist"] > 0.5


async def test_decay_of_dist_skips_missing_values(db: Database) -> None:
    rows = await q(db, rank_by=["Decay", ["Dist", ["Attribute", "price"], 25], {"midpoint": 10}])
    # |p − 25|: 15, 5, –, 15, 25 -> 10/(d + 10); id 3 has no price and is left out
    assert pairs(rows) == [(2, pytest.approx(10 / 15)), (1, 0.4), (4, 0.4), (5, pytest.approx(10 / 35))]


async def test_datetime_dist_with_duration_midpoint(db: Database) -> None:
    rows = await q(
        db,
        rank_by=[
            "Sum",
            [["Decay", ["Dist", ["Attribute", "day"], "2024-01-03T12:00:00Z"], {"midpoint": "12h"}]],
        ],
    )
    # distances in half-days: 5, 3, –, 1, 3 -> 1/(d + 1)
    assert pairs(rows) == [(4, 0.5), (2, 0.25), (5, 0.25), (1, pytest.approx(1 / 6))]
    with pytest.raises(InvalidRequest, match="only valid around a Dist on a datetime"):
        await db.query(NS, {"rank_by": ["Saturate", ["Attribute", "u"], {"midpoint": "1h"}]})
    with pytest.raises(InvalidRequest, match="positive duration"):
        await db.query(
            NS, {"rank_by": ["Decay", ["Dist", ["Attribute", "day"], "2024-01-01"], {"midpoint": "3y"}]}
        )


async def test_bm25_token_array_on_word_tokenizer(db: Database) -> None:
    text = await q(db, rank_by=["text", "BM25", "Storage caches"])
    tokens = await q(db, rank_by=["text", "BM25", ["Storage", "caches"]])
    assert pairs(tokens) == pairs(text) and len(text) == 4


# --- compute_attributes -----------------------------------------------------------------------------


async def test_vector_dist_and_score_expressions(db: Database) -> None:
    rows = await q(
        db,
        rank_by=["id", "asc"],
        compute_attributes={
            "d": ["vector", "VectorDist", [1.0, 0.0]],
            "s": ["Saturate", ["Attribute", "u"], {"midpoint": 1}],
            "big": ["u", "Gte", 3],
        },
    )
    assert [r["d"] for r in rows] == [0.0, 2.0, 1.0, None, 1.0]  # euclidean², id 4 has no vector
    assert [r["s"] for r in rows] == pytest.approx([7 / 8, 1 / 2, 0.0, 3 / 4, 2 / 3])
    assert [r["big"] for r in rows] == [1.0, 0.0, 0.0, 1.0, 0.0]  # a filter scores 1 or 0
    assert "$dist" not in rows[0]


async def test_computed_names_and_embed(db: Database) -> None:
    with pytest.raises(InvalidRequest, match="already an attribute"):
        await db.query(NS, {"rank_by": ["id", "asc"], "compute_attributes": {"n": ["Attribute", "u"]}})
    with pytest.raises(InvalidRequest, match="Embed"):
        await db.query(NS, {"rank_by": ["id", "asc"], "compute_attributes": {"e": ["Embed", "text"]}})
    with pytest.raises(InvalidRequest, match="aggregate_by"):
        await db.query(
            NS, {"aggregate_by": {"c": ["Count"]}, "compute_attributes": {"e": ["Attribute", "u"]}}
        )


async def test_highlight_stems_and_offsets(db: Database) -> None:
    rows = await q(
        db,
        rank_by=["text", "BM25", "cache"],
        top_k=1,
        filters=["id", "Eq", 5],
        compute_attributes={
            "b": ["Highlight", "text", {"fragment_by": "none", "include_offsets": "utf-8"}],
            "w": ["Highlight", "text", {"fragment_by": "none", "include_offsets": "utf-16"}],
            "c": ["Highlight", "text", {"fragment_by": "word", "fragment_limit": 10}],
        },
    )
    text = "Caches: the cached café 東京 cache."
    # stemming: caches, cached and cache all stem to "cach"; é is 2 UTF-8 bytes, 東 and 京 3 each
    # ("cache" starts at code point 27 = byte 19 + 5 + 1 + 6 + 1 = 32)
    assert rows[0]["b"] == [
        {
            "text": text,
            "fragment_range": [0, len(text.encode())],
            "match_ranges": [[0, 6], [12, 18], [32, 37]],
        }
    ]
    assert rows[0]["w"][0]["fragment_range"] == [0, len(text)]
    assert rows[0]["w"][0]["match_ranges"] == [[0, 6], [12, 18], [27, 32]]
    assert [f["text"] for f in rows[0]["c"]] == ["Caches", "cached", "cache"]


async def test_highlight_ranks_fragments_within_the_row(db: Database) -> None:
    rows = await q(
        db,
        rank_by=["id", "asc"],
        filters=["id", "In", [1, 4]],
        compute_attributes={
            "h": [
                "Highlight",
                "text",
                {
                    "rank_fragments_by": ["$fragment", "BM25", "storage cache"],
                    "include_offsets": "codepoints",
                },
            ]
        },
    )
    # id 1: three sentences, N = 3, avgdl = 5 (6, 5, 4 tokens); "storage" and "cache" each in one
    # sentence -> equal idf; the shorter sentence (5 tokens) scores higher.
    s0 = "Lagoon keeps data in object storage."
    s1 = "Queries read a local cache."
    assert rows[0]["h"] == [
        {"text": s1, "fragment_range": [37, 64], "match_ranges": [[58, 63]]},
        {"text": s0, "fragment_range": [0, 36], "match_ranges": [[28, 35]]},
    ]
    # id 4: one sentence holding "storage" twice
    assert [f["text"] for f in rows[1]["h"]] == ["Storage costs, storage tiers."]
    assert rows[1]["h"][0]["match_ranges"] == [[0, 7], [15, 22]]


async def test_highlight_needs_a_ranking_and_fts(db: Database) -> None:
    with pytest.raises(InvalidRequest, match="cannot infer rank_fragments_by"):
        await db.query(NS, {"rank_by": ["id", "asc"], "compute_attributes": {"h": ["Highlight", "text"]}})
    with pytest.raises(InvalidRequest, match="full_text_search"):
        await db.query(
            NS, {"rank_by": ["text", "BM25", "x"], "compute_attributes": {"h": ["Highlight", "name"]}}
        )
    with pytest.raises(InvalidRequest, match="fragment_by"):
        await db.query(
            NS,
            {
                "rank_by": ["text", "BM25", "x"],
                "compute_attributes": {"h": ["Highlight", "text", {"fragment_by": "line"}]},
            },
        )
    with pytest.raises(InvalidRequest, match="only BM25 clauses on \\$fragment"):
        await db.query(
            NS,
            {"rank_by": ["id", "asc"],
             "compute_attributes": {"h": ["Highlight", "text", {"rank_fragments_by": ["text", "BM25", "x"]}]}},
        )  # fmt: skip


# --- Fuzzy --------------------------------------------------------------------------------------------

FUZZY = {"max_edit_distance": [{"min_query_chars": 3, "distance": 0}, {"min_query_chars": 6, "distance": 1},
                               {"min_query_chars": 9, "distance": 2}]}  # fmt: skip


@pytest.mark.parametrize(
    ("query", "case_sensitive", "want"),
    [
        ("lagoom", True, [2]),  # 6 chars: 1 edit; "Lagoon" needs 2 (L, m)
        ("lagoom", False, [2, 4]),
        ("lag", True, [2, 3]),  # 3 chars: exact substring
        ("la", True, []),  # shorter than every min_query_chars: matches nothing
        ("turbopuffr", True, [1]),  # 10 chars: 2 edits allowed, 1 needed
        ("laguna bech", True, [3]),
    ],
)
async def test_fuzzy_substring_within_edit_distance(
    db: Database, query: str, case_sensitive: bool, want: list[int]
) -> None:
    params = {**FUZZY, "case_sensitive": case_sensitive}
    rows = await q(db, rank_by=["id", "asc"], filters=["name", "Fuzzy", query, params])
    assert [r["id"] for r in rows] == want


async def test_fuzzy_on_arrays_and_validation(db: Database) -> None:
    rows = await q(
        db,
        rank_by=["id", "asc"],
        filters=["tags", "Fuzzy", "x", {"max_edit_distance": [{"min_query_chars": 3, "distance": 0}]}],
    )
    assert rows == []  # "x" is shorter than 3 characters
    for min_chars, distance, refusal in [
        (8, 2, "at least 3·\\(distance \\+ 1\\) = 9"),
        (12, 3, "from 0 to 2"),
    ]:
        tiers = {"max_edit_distance": [{"min_query_chars": min_chars, "distance": distance}]}
        with pytest.raises(InvalidRequest, match=refusal):
            await db.query(NS, {"rank_by": ["id", "asc"], "filters": ["name", "Fuzzy", "abc", tiers]})
    with pytest.raises(InvalidRequest, match="fuzzy: true"):
        await db.query(NS, {"rank_by": ["id", "asc"], "filters": ["text", "Fuzzy", "abc", FUZZY]})
    schema = (await db.get_schema(NS))["name"]
    assert schema == {"type": "string", "filterable": False, "fuzzy": True}


# --- ForEachUnique ---------------------------------------------------------------------------------------


async def test_for_each_unique_groups(db: Database) -> None:
    body = {
        "aggregate_by": {"c": ["Count"], "s": ["Sum", "u"]},
        "group_by": [{"tag": ["ForEachUnique", "tags"]}],
    }
    groups = (await db.query(NS, body))["aggregation_groups"]
    # id 1 ["x","y","x"] counts once under x; id 3 [] nowhere; id 4 (null) in the null group
    assert groups == [
        {"tag": None, "c": 1, "s": 3},
        {"tag": "x", "c": 2, "s": 9},
        {"tag": "y", "c": 2, "s": 8},
        {"tag": "z", "c": 1, "s": 2},
    ]
    body["top_k"] = 2
    body["filters"] = ["u", "Gt", 1]
    assert (await db.query(NS, body))["aggregation_groups"] == [
        {"tag": None, "c": 1, "s": 3},
        {"tag": "x", "c": 2, "s": 9},
    ]
    with pytest.raises(InvalidRequest, match="at most once"):
        await db.query(
            NS,
            {
                "aggregate_by": {"c": ["Count"]},
                "group_by": [{"a": ["ForEachUnique", "tags"]}, {"b": ["ForEachUnique", "tags"]}],
            },
        )


def test_formulas_used_above() -> None:
    assert math.isclose(169 / 185, 13**2 / (13**2 + 4**2))
    assert DAY == 24 * 3600 * 1000


def test_fuzzy_work_is_estimated() -> None:
    from lagoon.query.cost import check_work, estimate_work
    from lagoon.schema import AttributeSchema, AttrType, Schema
    from lagoon.wire.query import parse_query

    schema = Schema("uint", {"name": AttributeSchema(AttrType("string"), filterable=False, fuzzy=True)})
    rules = {
        "max_edit_distance": [{"min_query_chars": 3, "distance": 0}, {"min_query_chars": 6, "distance": 1}]
    }

    def work(text: str) -> int:
        req = parse_query({"rank_by": ["id", "asc"], "filters": ["name", "Fuzzy", text, rules]}, schema)
        return estimate_work(req, lambda attr: 1000)

    assert work("ab") == 0  # no rule applies: nothing is matched
    assert work("abc") == 1000  # exact substring: one step per byte
    assert work("abcdefgh") == 8 * 2 * 1000  # 8 characters × (1 + 1 error) per byte
    req = parse_query({"rank_by": ["id", "asc"], "filters": ["name", "Fuzzy", "x" * 600, rules]}, schema)
    with pytest.raises(InvalidRequest, match="Fuzzy"):
        check_work(req, lambda attr: 10_000_000, limit=10**9)


async def test_i8_vectors_over_segment_and_tail() -> None:
    schema = {"v": {"type": "[3]i8", "ann": {"distance_metric": "euclidean_squared"}}}
    rows = [{"id": i, "v": [i, -i, 127 - i]} for i in range(1, 6)]
    database = await segment_and_tail(MemoryStore(), rows[:3], rows[3:], schema=schema)
    res = await database.query(
        NS, {"rank_by": ["v", "ANN", [2.5, -2.5, 124.5]], "top_k": 5, "include_attributes": ["v"]}
    )
    # euclidean²: 3 · (i − 2.5)²
    assert [(r["id"], r["$dist"]) for r in res["rows"]] == [
        (2, 0.75),
        (3, 0.75),
        (1, 6.75),
        (4, 6.75),
        (5, 18.75),
    ]
    assert res["rows"][0]["v"] == [2, -2, 125]
    for bad in ([1.5, 0, 0], [128, 0, 0], [-129, 0, 0]):
        with pytest.raises(InvalidRequest, match="integers from -128 to 127"):
            await database.write(NS, {"upsert_rows": [{"id": 9, "v": bad}]})
    assert (await database.get_schema(NS))["v"] == {
        "type": "[3]i8",
        "ann": {"distance_metric": "euclidean_squared"},
    }
    await database.close()
