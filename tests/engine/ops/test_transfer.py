"""``lagoon export`` / ``lagoon import``: round trips of every type, paging, file checks, the CLI."""

from __future__ import annotations

import datetime as dt
import io
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from lagoon.config import Settings, StorageSettings
from lagoon.engine.database import Database
from lagoon.engine.ops import defaults
from lagoon.engine.ops.transfer import (
    END_KEY,
    HEADER_KEY,
    ImportFileError,
    _wal_after_head,
    export_namespace,
    import_namespace,
)
from lagoon.errors import InvalidRequest, NotFound, TooManyRequests
from lagoon.format.keys import NamespaceKeys
from lagoon.storage import MemoryStore
from lagoon.wire.query import MAX_TOP_K

pytestmark = pytest.mark.anyio

SCHEMA: dict[str, Any] = {
    "title": {"type": "string", "full_text_search": {"stemming": True, "language": "english"}},
    "count": {"type": "int"},
    "big": {"type": "uint"},
    "score": {"type": "float"},
    "flag": {"type": "bool"},
    "when": {"type": "datetime"},
    "ref": {"type": "uuid"},
    "tags": {"type": "[]string"},
    "ints": {"type": "[]int"},
    "uints": {"type": "[]uint"},
    "floats": {"type": "[]float"},
    "bools": {"type": "[]bool"},
    "whens": {"type": "[]datetime"},
    "refs": {"type": "[]uuid"},
    "vector": {"type": "[3]f32", "ann": True},
    "half": {"type": "[2]f16"},
    "unused": {"type": "string", "filterable": False},
}
WORDS = ["lagoon", "river", "ocean", "harbor", "reef", "tide", "shore", "wave"]


def doc(i: int) -> dict[str, Any]:
    d: dict[str, Any] = {
        "id": i,
        "title": f"{WORDS[i % 8]} {WORDS[(i * 3) % 8]} number {i}",
        "count": i * -7,
        "big": 2**64 - 1 - i,
        "score": i / 3,
        "flag": i % 2 == 0,
        "when": f"2024-0{1 + i % 9}-1{i % 10}T03:04:05.{i % 1000:03d}Z",
        "ref": str(uuid.UUID(int=i * 7919 + 1)),
        "tags": [WORDS[i % 8], "all"],
        "ints": [i, -i],
        "uints": [i, 2**63 + i],
        "floats": [0.1 * i, -1e-300],
        "bools": [True, i % 3 == 0],
        "whens": ["1970-01-01T00:00:00Z", "2099-12-31T23:59:59.999Z"],
        "refs": [str(uuid.UUID(int=i))],
        "vector": [0.1 * (i % 17) + 0.01, -0.3 * (i % 5), 1 / (i + 1)],
        "half": [0.5, -2.0 + i % 4],
    }
    if i % 5 == 0:  # some documents leave attributes null
        for name in ("score", "tags", "half", "when"):
            del d[name]
    return d


def as_times(value: Any) -> Any:
    if isinstance(value, list):
        return [as_times(v) for v in value]
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


async def make_db() -> Database:
    return Database(MemoryStore(), Settings(storage=StorageSettings(backend="memory")))


@pytest.fixture
async def db() -> AsyncIterator[Database]:
    database = await make_db()
    yield database
    await database.close()


async def fill(db: Database, name: str, docs: list[dict[str, Any]], **extra: Any) -> None:
    body = {"upsert_rows": docs, "schema": SCHEMA, "distance_metric": "cosine_distance", **extra}
    await db.write(name, body)


async def export_lines(db: Database, name: str, page_size: int = 10_000) -> list[dict[str, Any]]:
    out = io.BytesIO()
    await export_namespace(db, name, out, page_size=page_size)
    return [orjson.loads(line) for line in out.getvalue().splitlines()]


def encode(lines: list[dict[str, Any]]) -> list[bytes]:
    return [orjson.dumps(line) + b"\n" for line in lines]


QUERIES: list[dict[str, Any]] = [
    {"rank_by": ["id", "asc"], "top_k": 1000, "include_attributes": True},
    {"rank_by": ["vector", "ANN", [0.3, -0.6, 0.2]], "top_k": 25, "include_attributes": True},
    {"rank_by": ["title", "BM25", "lagoon reef"], "top_k": 25, "include_attributes": ["title"]},
    {
        "rank_by": ["count", "desc"],
        "top_k": 50,
        "filters": ["And", [["flag", "Eq", True], ["when", "Gte", "2024-05-01T00:00:00Z"]]],
    },
    {
        "rank_by": ["id", "asc"],
        "top_k": 100,
        "filters": ["ref", "Eq", str(uuid.UUID(int=5 * 7919 + 1))],
        "include_attributes": True,
    },
    {
        "rank_by": ["id", "desc"],
        "top_k": 100,
        "filters": ["tags", "Contains", "reef"],
        "include_attributes": ["tags", "half"],
    },
]


def rows_of(result: dict[str, Any]) -> list[dict[str, Any]]:
    return result["rows"]


async def test_round_trip_gives_identical_query_results(db: Database) -> None:
    docs = [doc(i) for i in range(1, 301)]
    await fill(db, "src", docs)
    await db.write("src", {"deletes": [7, 8]})  # deleted documents are not exported
    lines = await export_lines(db, "src", page_size=64)  # several pages
    header, body, end = lines[0], lines[1:-1], lines[-1]
    assert (
        header[HEADER_KEY] == 1
        and header["namespace"] == "src"
        and header["distance_metric"] == "cosine_distance"
    )
    assert header["schema"] == await db.get_schema("src")
    assert end == {END_KEY: 1, "documents": 298}
    assert [row["id"] for row in body] == [i for i in range(1, 301) if i not in (7, 8)]

    stats = await import_namespace(db, "dst", encode(lines), batch_rows=100)
    assert stats.documents == 298 and stats.batches == 3 and stats.complete and stats.created
    assert await db.get_schema("dst") == await db.get_schema("src")
    for query in QUERIES:
        assert rows_of(await db.query("dst", query)) == rows_of(await db.query("src", query)), query
    assert (await db.metadata("dst"))["approx_row_count"] == 298


async def test_every_type_survives_exactly(db: Database) -> None:
    docs = [doc(i) for i in (1, 2, 5, 10)]
    await fill(db, "src", docs)
    lines = await export_lines(db, "src")
    exported = {row["id"]: row for row in lines[1:-1]}
    for original in docs:
        row = exported[original["id"]]
        assert set(row) == set(original)  # null attributes are left out, nothing is added
        for name in (
            "title",
            "count",
            "big",
            "flag",
            "ref",
            "tags",
            "ints",
            "uints",
            "bools",
            "refs",
            "floats",
        ):
            if name in original:
                assert row[name] == original[name], name
        for name in ("when", "whens"):
            if name in original:
                assert as_times(row[name]) == as_times(original[name]), name
        assert row["vector"] == pytest.approx(original["vector"], rel=1e-6)
        if "half" in original:
            assert row["half"] == original["half"]  # exactly representable in f16
    await import_namespace(db, "dst", encode(lines))
    again = await export_lines(db, "dst")
    assert again[1:-1] == lines[1:-1]  # exported again: byte-identical documents (f32, f16, ms datetimes)


@pytest.mark.parametrize(
    ("ids", "id_type"),
    [
        ([str(uuid.UUID(int=n * 104729)) for n in range(1, 40)], "uuid"),
        ([f"doc-{n:03d}" for n in range(39, 0, -1)], "string"),
        ([2**64 - n for n in range(1, 40)], "uint"),
    ],
)
async def test_id_types_page_in_order(db: Database, ids: list[Any], id_type: str) -> None:
    schema = {"id": {"type": id_type}, "v": {"type": "[2]f32", "ann": True}}
    await db.write(
        "src",
        {
            "upsert_rows": [{"id": i, "v": [1.0, float(n)]} for n, i in enumerate(ids)],
            "schema": schema,
            "distance_metric": "euclidean_squared",
        },
    )
    lines = await export_lines(db, "src", page_size=7)
    assert sorted(str(r["id"]) for r in lines[1:-1]) == sorted(str(i) for i in ids)
    await import_namespace(db, "dst", encode(lines), batch_rows=5)
    query = {"rank_by": ["v", "ANN", [1.0, 3.0]], "top_k": 10}
    assert rows_of(await db.query("dst", query)) == rows_of(await db.query("src", query))
    assert (await db.get_schema("dst"))["id"] == {"type": id_type}


async def test_empty_namespace_round_trips(db: Database) -> None:
    await db.write(
        "src", {"schema": SCHEMA, "create_namespace": True, "distance_metric": "euclidean_squared"}
    )
    lines = await export_lines(db, "src")
    assert len(lines) == 2 and lines[-1]["documents"] == 0
    stats = await import_namespace(db, "dst", encode(lines))
    assert stats.documents == 0 and stats.created
    assert await db.get_schema("dst") == await db.get_schema("src")


async def test_export_of_missing_namespace_is_not_found(db: Database) -> None:
    with pytest.raises(NotFound):
        await export_lines(db, "nope")


async def test_import_refuses_existing_namespace_unless_allowed(db: Database) -> None:
    await fill(db, "src", [doc(1), doc(2)])
    lines = await export_lines(db, "src")
    await fill(db, "dst", [doc(3)])
    with pytest.raises(InvalidRequest, match="already exists"):
        await import_namespace(db, "dst", encode(lines))
    stats = await import_namespace(db, "dst", encode(lines), allow_existing=True)
    assert not stats.created
    ids = [r["id"] for r in rows_of(await db.query("dst", {"rank_by": ["id", "asc"], "top_k": 10}))]
    assert ids == [1, 2, 3]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda lines: [], "empty file"),
        (lambda lines: lines[1:], "not a Lagoon export"),
        (lambda lines: [{**lines[0], HEADER_KEY: 2}, *lines[1:]], "Upgrade Lagoon"),
        (lambda lines: [lines[0], {"title": "no id"}, *lines[1:]], "line 2: expected a document"),
        (lambda lines: [*lines[:-1], {**lines[-1], "documents": 5}], "end marker counts 5"),
        (lambda lines: [*lines, lines[1]], "data after the end marker"),
        (lambda lines: [lines[0], lines[0], *lines[1:]], "line 2: a second export header"),
    ],
)
async def test_damaged_files_are_refused_with_the_line(db: Database, mutate: Any, message: str) -> None:
    await fill(db, "src", [doc(1), doc(2)])
    lines = mutate(await export_lines(db, "src"))
    with pytest.raises(ImportFileError, match=message):
        await import_namespace(db, "dst", encode(lines), source="backup.jsonl")


async def test_bad_json_and_bad_values_name_the_line(db: Database) -> None:
    await fill(db, "src", [doc(1), doc(2), doc(3)])
    lines = encode(await export_lines(db, "src"))
    with pytest.raises(ImportFileError, match=r"backup.jsonl line 3: not valid JSON"):
        await import_namespace(db, "a", [*lines[:2], b"{oops\n", *lines[3:]], source="backup.jsonl")
    bad = orjson.loads(lines[3])
    bad["count"] = "not a number"
    with pytest.raises(InvalidRequest, match=r"backup.jsonl line 4: upsert_rows\[2\]"):
        await import_namespace(db, "b", [*lines[:3], orjson.dumps(bad), *lines[4:]], source="backup.jsonl")


async def test_truncated_file_imports_with_a_warning(db: Database) -> None:
    await fill(db, "src", [doc(1), doc(2)])
    lines = await export_lines(db, "src")
    stats = await import_namespace(db, "dst", [*encode(lines[:-1]), b"\n"])
    assert stats.documents == 2 and not stats.complete
    assert "no end marker" in stats.warnings[0]


async def test_retryable_write_errors_are_retried(db: Database) -> None:
    await fill(db, "src", [doc(i) for i in range(1, 6)])
    lines = await export_lines(db, "src")
    real_write = db.write
    failures = {"left": 2}
    slept: list[float] = []

    async def flaky_write(namespace: str, body: Any, *, org: str = "default") -> dict[str, Any]:
        if "upsert_rows" in body and failures["left"]:
            failures["left"] -= 1
            raise TooManyRequests("backpressure", retry_after=0.25)
        return await real_write(namespace, body, org=org)

    async def fake_sleep(secs: float) -> None:
        slept.append(secs)

    db.write = flaky_write  # type: ignore[method-assign]
    stats = await import_namespace(db, "dst", encode(lines), batch_rows=2, sleep=fake_sleep)
    assert stats.retries == 2 and slept == [0.25, 0.25] and stats.documents == 5


def test_defaults_match_the_query_limit() -> None:
    assert defaults.EXPORT_PAGE_SIZE == MAX_TOP_K


async def test_failed_first_batch_leaves_no_namespace(db: Database) -> None:
    await fill(db, "src", [doc(i) for i in range(1, 6)])
    lines = await export_lines(db, "src")
    lines[2]["count"] = "not a number"
    with pytest.raises(InvalidRequest, match="line 3") as info:
        await import_namespace(db, "dst", encode(lines), batch_rows=10)
    assert "--resume" not in str(info.value)  # nothing landed: nothing to resume
    with pytest.raises(NotFound):
        await db.get_schema("dst")
    assert [n["id"] for n in (await db.list_namespaces())["namespaces"]] == ["src"]


async def test_failed_import_says_how_to_resume_and_resume_skips_what_landed(db: Database) -> None:
    await fill(db, "src", [doc(i) for i in range(1, 31)])
    lines = await export_lines(db, "src")
    bad = [dict(line) for line in lines]
    bad[25]["count"] = "oops"  # in the third batch of 10
    with pytest.raises(InvalidRequest, match="20 documents of 'dst' were imported before this") as info:
        await import_namespace(db, "dst", encode(bad), batch_rows=10)
    assert "--resume" in str(info.value)
    with pytest.raises(InvalidRequest, match="already exists"):
        await import_namespace(db, "dst", encode(lines), batch_rows=10)
    writes: list[int] = []
    real_write = db.write

    async def counting_write(namespace: str, body: Any, *, org: str = "default") -> dict[str, Any]:
        writes.append(len(body.get("upsert_rows", [])))
        return await real_write(namespace, body, org=org)

    db.write = counting_write  # type: ignore[method-assign]
    stats = await import_namespace(db, "dst", encode(lines), batch_rows=10, resume=True)
    assert stats.skipped == 20 and stats.documents == 30 and stats.complete and writes == [10]
    for q in QUERIES:
        assert rows_of(await db.query("dst", q)) == rows_of(await db.query("src", q))


async def test_import_reports_progress(db: Database) -> None:
    await fill(db, "src", [doc(i) for i in range(1, 26)])
    lines = encode(await export_lines(db, "src"))
    seen: list[tuple[int, int]] = []
    await import_namespace(db, "dst", lines, batch_rows=10, progress=lambda d, b: seen.append((d, b)))
    assert [d for d, _ in seen] == [10, 20, 25]
    assert seen[-1][1] == sum(len(line) for line in lines)
    exported: list[tuple[int, int]] = []
    await export_namespace(
        db, "dst", io.BytesIO(), page_size=10, progress=lambda d, b: exported.append((d, b))
    )
    assert [d for d, _ in exported] == [10, 20, 25]


async def test_a_write_after_the_export_snapshot_is_not_taken_for_a_wal_hole(db: Database) -> None:
    """An export of a live namespace: entries committed after its snapshot are not a hole."""
    await fill(db, "live", [doc(1)])
    snap = await db.snapshot("default", "live", strong=True)
    await fill(db, "live", [doc(2)])  # commits wal/{head + 1}
    assert await _wal_after_head(db, NamespaceKeys.of("default", "live"), snap) == 0
    assert [line["id"] for line in await export_lines(db, "live") if "id" in line] == [1, 2]
