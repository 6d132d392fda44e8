"""A segment's DocSource answers every query form exactly like LiveDocs over the same live rows
(exact vector search, BM25, filters through the filter index, order-by, aggregations, rows with
vectors), and its extras (external BM25 statistics, token matching) agree with the reference."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from lagoon.format.wal import OP_COLUMN
from lagoon.index.filters.parse import parse_filter
from lagoon.index.sources.protocol import DocSource, dense_scores
from lagoon.index.sources.segment import SegmentSource
from lagoon.index.sources.table import LiveDocs
from lagoon.index.text.bm25 import TermStats
from lagoon.query.execute import execute_query
from lagoon.schema import Schema
from lagoon.wire.query import parse_request
from tests.index.segment.helpers import UUIDS, build, by_id, open_built, random_table, rich_schema

N = 600


def pair(id_type: str, seed: int, *, all_live: bool = False) -> tuple[SegmentSource, LiveDocs, np.ndarray]:
    schema = rich_schema(id_type)
    rng = np.random.default_rng(seed)
    table = random_table(rng, N, schema)
    reader = open_built(build(table, schema), schema)
    live = ~reader.tombstones()
    if not all_live:
        live &= rng.random(N) < 0.8  # shadowed by newer parts
    expected = by_id(table).filter(pa.array(live))
    return SegmentSource(reader, live), LiveDocs(schema, expected.drop_columns(["$seq", OP_COLUMN])), live


def same_rows(a: dict[str, Any], b: dict[str, Any]) -> None:
    ra, rb = a["rows"], b["rows"]
    assert [r["id"] for r in ra] == [r["id"] for r in rb]
    for x, y in zip(ra, rb, strict=True):
        if "$dist" in x:
            assert x["$dist"] == pytest.approx(y["$dist"], rel=1e-9, abs=1e-12)
        assert {k: v for k, v in x.items() if k != "$dist"} == {k: v for k, v in y.items() if k != "$dist"}


def queries(schema: Schema, rng: np.random.Generator) -> list[dict[str, Any]]:
    q8 = rng.normal(size=8).tolist()
    everything = list(schema.attributes)
    return [
        {"rank_by": ["v", "ANN", q8], "top_k": 15, "include_attributes": everything},
        {"rank_by": ["h", "ANN", q8], "top_k": 15, "include_attributes": ["h", "s"]},
        {"rank_by": ["plain", "ANN", q8[:4]], "top_k": 7, "distance_metric": "euclidean_squared"},
        {"rank_by": ["v", "ANN", q8], "top_k": 10, "filters": ["n", "Gte", 0]},
        {"rank_by": ["v", "ANN", q8], "top_k": 10, "filters": ["s", "In", ["c1", "c3", None]]},
        {"rank_by": ["title", "BM25", "lagoon river running"], "top_k": 20},
        {"rank_by": ["title", "BM25", "sea"], "top_k": 20},
        {"rank_by": ["body", "BM25", "vector index"], "top_k": 20, "filters": ["b", "Eq", True]},
        {
            "rank_by": ["Sum", [["title", "BM25", "ocean"], ["body", "BM25", "ocean"]]],
            "top_k": 10,
        },
        {"rank_by": ["n", "asc"], "top_k": 30, "filters": ["Not", ["f", "Lt", 0.0]]},
        {"rank_by": ["dt", "desc"], "top_k": 30, "include_attributes": ["dt", "uu"]},
        {"rank_by": ["id", "desc"], "top_k": 25, "filters": ["u", "Gt", 2**62]},
        {"rank_by": ["id", "desc"], "top_k": 25, "filters": ["uu", "Eq", str(uuid.UUID(bytes=UUIDS[4]))]},
        {"rank_by": ["s", "asc"], "top_k": 50, "filters": ["Or", [["n", "Eq", None], ["f", "Eq", 0]]]},
        {"rank_by": ["id", "asc"], "top_k": 40, "filters": ["tags", "Contains", "lagoon"]},
        {
            "rank_by": ["id", "asc"],
            "top_k": 40,
            "filters": ["title", "ContainsTokenSequence", "lagoon river"],
        },
        {"rank_by": ["id", "asc"], "top_k": 40, "filters": ["title", "ContainsAllTokens", "lagoon ocea"]},
        {"aggregate_by": {"c": ["Count"], "total": ["Sum", "n"]}, "group_by": ["s"]},
        {"aggregate_by": {"c": ["Count"]}, "filters": ["weird name/é", "NotIn", [0, 1]]},
    ]


@pytest.mark.parametrize(
    "id_type,seed,all_live", [("uint", 1, False), ("string", 2, False), ("uuid", 3, True)]
)
def test_queries_match_livedocs(id_type: str, seed: int, all_live: bool) -> None:
    src, ref, _ = pair(id_type, seed, all_live=all_live)
    assert src.num_docs == ref.num_docs
    rng = np.random.default_rng(seed)
    for body in queries(src.schema, rng):
        a = execute_query(parse_request(body, src.schema), src)
        b = execute_query(parse_request(body, ref.schema), ref)
        if "rows" in b:
            same_rows(a, b)
        else:
            assert a.get("aggregations") == b.get("aggregations"), body
            assert a.get("aggregation_groups") == b.get("aggregation_groups"), body


FILTERS: list[Any] = [
    ["n", "Eq", 3],
    ["n", "Eq", None],
    ["n", "NotEq", 3],
    ["n", "In", [1, 2, 3, None]],
    ["n", "NotIn", [1, 2, 3]],
    ["n", "Lt", -10],
    ["n", "Lte", 10],
    ["n", "Gt", 49],
    ["n", "Gte", -50],
    ["n", "Lt", None],
    ["u", "Gte", 2**62],
    ["u", "Lt", 0],
    ["f", "Eq", 0],
    ["f", "Eq", -0.0],
    ["f", "Gt", 0.5],
    ["f", "Lte", -0.0],
    ["s", "Eq", "c3"],
    ["s", "In", ["c1", "c9", "zz"]],
    ["s", "Gte", "c5"],
    ["s", "Lt", "c"],
    ["s", "NotEq", None],
    ["dt", "Gte", "2023-11-18T00:00:00Z"],
    ["dt", "Lt", 1_700_000_000_000],
    ["uu", "Eq", "01010101-0101-0101-0101-010101010101"],
    ["uu", "Gt", "02020202-0202-0202-0202-020202020202"],
    ["uu", "In", ["00010203-0405-0607-0809-0a0b0c0d0e0f", None]],
    ["weird name/é", "Lte", 1],
    ["id", "Gte", 10],
    ["b", "Eq", False],
    ["tags", "ContainsAny", ["river", "ocean"]],
    ["And", [["n", "Gte", 0], ["s", "In", ["c1", "c2", "c3"]], ["Not", ["f", "Eq", None]]]],
    ["Or", [["n", "Lt", -40], ["title", "ContainsAnyToken", "probe"], ["s", "Glob", "c1*"]]],
]


def test_filters_match_livedocs() -> None:
    src, ref, _ = pair("uint", 11)
    for f in FILTERS:
        flt = parse_filter(f, src.schema)
        got, want = src.filter_mask(flt), ref.filter_mask(flt)
        assert got.dtype == np.bool_ and np.array_equal(got, want), f
    assert src.reader.filter_index("n") is not None and src.reader.filter_index("b") is None


def test_indexed_leaves_do_not_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    src, ref, _ = pair("uint", 12)

    def no_scan(attr: str) -> None:
        raise AssertionError(f"column {attr} was scanned")

    monkeypatch.setattr(src, "column", no_scan)
    for f in FILTERS[:27]:
        if f[0] in ("id", "b"):
            continue
        flt = parse_filter(f, src.schema)
        assert np.array_equal(src.filter_mask(flt), ref.filter_mask(flt)), f


def dense(
    src: DocSource, attr: str, query: str, last_as_prefix: bool, stats: TermStats | None = None
) -> np.ndarray:
    """Every document's BM25 score (0 where nothing matches)."""
    return dense_scores(src.num_docs, *src.bm25(attr, query, last_as_prefix, stats=stats))


def test_bm25_with_external_stats() -> None:
    src, ref, _ = pair("uint", 5)
    q = "lagoon vector runs"
    local = src.bm25_stats("title", q, False)
    assert np.array_equal(dense(src, "title", q, False, stats=local), dense(ref, "title", q, False))
    assert np.array_equal(dense(src, "title", q, False), dense(ref, "title", q, False))
    # global stats from two sources add up; scoring with them changes idf, as a composite would
    other = src.bm25_stats("title", q, False)
    total = TermStats.total([local, other])
    assert total.n_docs == 2 * local.n_docs and np.array_equal(total.df, 2 * local.df)
    scaled = dense(src, "title", q, False, stats=total)
    assert scaled.shape == (src.num_docs,) and np.array_equal(scaled > 0, dense(ref, "title", q, False) > 0)
    prefix = dense(src, "title", "lagoon ri", True)
    assert np.array_equal(prefix, dense(ref, "title", "lagoon ri", True))


def test_token_match_and_fetch_rows() -> None:
    src, ref, _ = pair("string", 6)
    for op, q, params in [
        ("ContainsAllTokens", "lagoon river", {}),
        ("ContainsAnyToken", "segment", {}),
        ("ContainsTokenSequence", "vector index", {}),
        ("ContainsAllTokens", "lagoon ri", {"last_as_prefix": True}),
    ]:
        assert np.array_equal(
            src.token_match("title", op, q, params), ref.text_index("title").match(op, q, dict(params))
        )
    pos = np.array([5, 0, src.num_docs - 1, 5], np.int64)
    names = ["v", "h", "plain", "tags", "dt"]
    got, want = src.fetch_rows(pos, names), ref.fetch_rows(pos, names)
    assert got.column_names == want.column_names
    assert got.to_pylist() == want.to_pylist()
    for name in ["id", "v", "h", "s", "title"]:
        assert src.column(name).to_pylist() == ref.column(name).to_pylist()
        assert src.column(name).type == ref.column(name).type
    assert np.array_equal(src.sort_rank("f"), ref.sort_rank("f"))
    assert np.array_equal(src.id_rank(), ref.id_rank())
    vm, rm = src.vectors("h"), ref.vectors("h")
    assert np.array_equal(vm.matrix, rm.matrix) and np.array_equal(vm.valid, rm.valid)
    assert src.logical_bytes(["v"]) > 0


def test_exact_vector_topk_equals_livedocs() -> None:
    src, ref, _ = pair("uint", 8)
    rng = np.random.default_rng(0)
    for metric in ("cosine_distance", "euclidean_squared"):
        for sel in (None, 0.5, 0.05):
            mask = None if sel is None else rng.random(src.num_docs) < sel
            q = rng.normal(size=8).astype(np.float32)
            for attr in ("v", "h"):
                p1, d1 = src.vector_topk(attr, q, metric, 12, mask)
                p2, d2 = ref.vector_topk(attr, q, metric, 12, mask)
                assert p1.tolist() == p2.tolist()
                assert np.allclose(d1, d2, rtol=1e-12, atol=1e-12)
                # small segments are flat: the approximate path is exact too
                p3, _ = src.vector_topk(attr, q, metric, 12, mask, approximate=True)
                assert p3.tolist() == p2.tolist()


def test_live_mask_must_match_rows() -> None:
    src, _, live = pair("uint", 9)
    from lagoon.errors import InternalError

    with pytest.raises(InternalError):
        SegmentSource(src.reader, live[:-1])
    with pytest.raises(InternalError):
        SegmentSource(src.reader, live.astype(np.int8))


def test_concurrent_queries_agree_with_sequential() -> None:
    from concurrent.futures import ThreadPoolExecutor

    src, _, _ = pair("uint", 13)
    rng = np.random.default_rng(1)
    qs = rng.normal(size=(16, 8)).astype(np.float32)
    flt = parse_filter(["And", [["n", "Gte", -10], ["s", "NotIn", ["c1"]]]], src.schema)

    def work(i: int) -> tuple[list[int], list[float], list[bool]]:
        mask = src.filter_mask(flt)
        pos, _ = src.vector_topk("v", qs[i], "cosine_distance", 5, mask, approximate=True)
        scores = dense(src, "title", "lagoon index", False)
        return pos.tolist(), scores.tolist(), mask.tolist()

    sequential = [work(i) for i in range(16)]
    fresh, _, _ = pair("uint", 13)  # cold caches: threads race to build them
    src = fresh
    with ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(work, range(16)))
    assert concurrent == sequential


@pytest.mark.parametrize("id_type", ["uint", "string", "uuid"])
def test_id_values_are_the_fetched_ids(id_type: str) -> None:
    """``id_values`` (the ids-only answer: numpy for unsigned ids) returns the ids ``fetch_rows``
    returns, for a segment, a table and a composite of both, with positions in any order."""
    from lagoon.index.sources.composite import CompositeSource

    src, ref, _ = pair(id_type, 8)
    both = CompositeSource(src.schema, [src, ref])
    for s in (src, ref, both):
        pos = np.array([s.num_docs - 1, 3, 0, 3, s.num_docs // 2], np.int64)
        values = s.id_values(pos)
        assert isinstance(values, np.ndarray) == (id_type == "uint")
        got = values.tolist() if isinstance(values, np.ndarray) else values.to_pylist()
        assert got == s.fetch_rows(pos, []).column("id").to_pylist()
        if id_type == "uint":
            assert values.dtype == np.uint64


@pytest.mark.parametrize("all_live", [False, True])
def test_filter_bits_equal_the_mask(all_live: bool) -> None:
    """A segment's filters evaluated to bits (filter-index rows set straight into them, scanned
    conditions from Arrow's bitmaps, And/Or/Not on words) equal the bool masks, with deletes and
    shadowed rows; a composite of the segment and a tail of 37 documents (so the tail's
    positions start inside a byte) concatenates them exactly, and an ANN query given the bits
    returns what it returns given the mask."""
    from lagoon.index.bits import Bits
    from lagoon.index.sources.composite import CompositeSource

    src, ref, _ = pair("uint", 21, all_live=all_live)
    tail = LiveDocs(ref.schema, ref.table.slice(0, 37))
    both = CompositeSource(src.schema, [src, tail])
    q = np.random.default_rng(5).normal(size=8)
    for f in [
        *FILTERS,
        ["Not", ["n", "In", [1, 2, 3]]],
        ["And", [["n", "Gte", 0], ["Not", ["n", "Gt", 40]]]],
    ]:
        flt = parse_filter(f, src.schema)
        bits, mask = src.filter_bits(flt), src.filter_mask(flt)
        assert isinstance(bits, Bits) and bits.n == src.num_docs, f
        assert np.array_equal(bits.mask, mask) and bits.count == int(mask.sum()), f
        assert not np.unpackbits(bits.data, bitorder="little")[bits.n :].any(), f
        cbits, cmask = both.filter_bits(flt), both.filter_mask(flt)
        assert np.array_equal(cbits.mask, cmask) and cbits.count == int(cmask.sum()), f
        for s, b, m in ((src, bits, mask), (both, cbits, cmask)):
            got = s.vector_topk("v", q, "cosine_distance", 10, b, approximate=True)
            want = s.vector_topk("v", q, "cosine_distance", 10, m, approximate=True)
            assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1]), f
            exact = s.vector_topk("v", q, "cosine_distance", 10, b)
            assert np.array_equal(exact[0], s.vector_topk("v", q, "cosine_distance", 10, m)[0]), f
