"""The ``docs`` file, version 2 (docs/formats/docs-v2.md): opened whole or from its head it gives
the same rows for every attribute type and row count; from the head, ``take`` fetches only the
batches holding the rows asked for, checks each, and falls back to the whole file past half of
the batch bytes; damage anywhere is DataCorruption; version 1 files still open."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from lagoon.errors import DataCorruption
from lagoon.format.segment import DOCS_FILE, MAGIC_DOCS, frame, head_length, open_head
from lagoon.index.segment.docs import BATCH_ROWS, encode_docs, encode_docs_v1, open_docs, open_docs_head
from lagoon.index.sources.segment import SegmentSource
from tests.index.segment.helpers import (
    RecordingBlocks,
    build,
    by_id,
    open_built,
    open_cold,
    random_table,
    rich_schema,
)

SCHEMA = rich_schema("string")
ATTRS = [a for a in sorted(SCHEMA.attributes) if not SCHEMA.attributes[a].type.is_vector]


def docs_table(n: int, seed: int = 0) -> pa.Table:
    t = by_id(random_table(np.random.default_rng(seed), n, SCHEMA))
    return t.select(["id", "$seq", "$op", *ATTRS])


def lazy(data: bytes, rows: int, blocks: RecordingBlocks | None = None) -> tuple[object, RecordingBlocks]:
    n = head_length(data[:65536], what="docs")
    assert n is not None
    src = blocks or RecordingBlocks(data)
    head = open_head(data[:n], magic=MAGIC_DOCS, what="docs", size=len(data))
    return open_docs_head(head, src, rows=rows), src


@pytest.mark.parametrize("n", [0, 1, BATCH_ROWS - 1, BATCH_ROWS, BATCH_ROWS + 1, 3 * BATCH_ROWS + 17])
def test_whole_and_head_give_the_same_rows(n: int) -> None:
    table = docs_table(n, seed=n)
    data, summary = encode_docs(table, SCHEMA)
    assert summary["batches"] == -(-n // BATCH_ROWS) and summary["format"] == 2
    whole = open_docs(data, what="docs", rows=n)
    assert whole.keys.equals(table.select(["id", "$seq", "$op"]))
    for name in ATTRS:
        assert whole.column(name).to_pylist() == table.column(name).to_pylist(), name
    store, blocks = lazy(data, n)
    for name in ATTRS:
        assert whole.nbytes(name) == store.nbytes(name)  # type: ignore[attr-defined]
        assert abs(whole.nbytes(name) - table.column(name).nbytes) <= 64  # Arrow's count of its buffers
    rng = np.random.default_rng(n)
    rows = rng.integers(0, n, size=min(n, 7)) if n else np.empty(0, np.int64)
    got = store.take(rows, ATTRS)  # type: ignore[attr-defined]
    for name, col in zip(ATTRS, got, strict=True):
        assert col.to_pylist() == table.column(name).take(pa.array(rows)).to_pylist(), name
        assert store.null_count(name) == table.column(name).null_count  # type: ignore[attr-defined]
    assert blocks.whole_calls or blocks.ranged_bytes <= summary["batch_bytes"] / 2  # else: whole


def test_take_fetches_only_the_batches_of_its_rows() -> None:
    n = 12 * BATCH_ROWS + 5
    table = docs_table(n, seed=1)
    data, summary = encode_docs(table, SCHEMA)
    store, blocks = lazy(data, n)
    rows = np.array([5, 3 * BATCH_ROWS + 1, 5, n - 1, 3 * BATCH_ROWS + 9])  # 3 batches, any order
    got = store.take(rows, ["title", "n"])  # type: ignore[attr-defined]
    assert got[0].to_pylist() == table.column("title").take(pa.array(rows)).to_pylist()
    assert got[1].to_pylist() == table.column("n").take(pa.array(rows)).to_pylist()
    assert len(blocks.calls) == 1 and len(blocks.calls[0]) == 3 and blocks.whole_calls == 0
    assert blocks.ranged_bytes < 4 * summary["batch_bytes"] / 12
    store.take(np.array([6, n - 2]), ["s"])  # type: ignore[attr-defined]
    assert len(blocks.calls) == 1  # batches already fetched are kept
    store.take(np.arange(0, n, BATCH_ROWS), ["s"])  # type: ignore[attr-defined]
    assert blocks.whole_calls == 1  # every batch: more than half the bytes, the whole file instead
    assert not store.lazy  # type: ignore[attr-defined]
    assert store.column("s").to_pylist() == table.column("s").to_pylist()  # type: ignore[attr-defined]


def test_a_whole_column_fetches_the_whole_file_once() -> None:
    n = 5 * BATCH_ROWS
    table = docs_table(n, seed=2)
    data, _ = encode_docs(table, SCHEMA)
    store, blocks = lazy(data, n)
    assert store.column("tags").to_pylist() == table.column("tags").to_pylist()  # type: ignore[attr-defined]
    store.column("n")  # type: ignore[attr-defined]
    assert blocks.whole_calls == 1 and not blocks.calls


def test_damage_is_data_corruption() -> None:
    n = 4 * BATCH_ROWS
    table = docs_table(n, seed=3)
    data, summary = encode_docs(table, SCHEMA)
    head_end = summary["head_bytes"]
    for where in (40, head_end // 2, head_end - 70):  # meta, keys, directory: the head's checksum
        bad = bytearray(data)
        bad[where] ^= 0x40
        with pytest.raises(DataCorruption):
            lazy(bytes(bad), n)
        with pytest.raises(DataCorruption):
            open_docs(bytes(bad), what="docs", rows=n)
    store, _ = lazy(data, n, RecordingBlocks(data, corrupt_at=head_end + (len(data) - head_end) // 2))
    failed = []
    for b in range(4):  # one batch at a time: only the damaged one fails, naming itself
        try:
            store.take(np.array([b * BATCH_ROWS + 1]), ["title"])  # type: ignore[attr-defined]
        except DataCorruption as e:
            failed.append(str(e))
    assert len(failed) == 1 and "batch" in failed[0]
    with pytest.raises(DataCorruption, match="rows"):
        open_docs(data, what="docs", rows=n + 1)


def test_version_1_files_still_open() -> None:
    table = docs_table(300, seed=4)
    data = frame(MAGIC_DOCS, encode_docs_v1(table, SCHEMA))
    store = open_docs(data, what="docs", rows=300)
    assert not store.lazy and store.keys.equals(table.select(["id", "$seq", "$op"]))
    rows = np.array([299, 0, 7])
    got = store.take(rows, ["title", "dt"])
    assert got[1].to_pylist() == table.column("dt").take(pa.array(rows)).to_pylist()


def test_a_segment_opened_from_the_docs_head_answers_like_the_whole_file() -> None:
    rng = np.random.default_rng(5)
    table = random_table(rng, 6 * BATCH_ROWS, SCHEMA, tombstones=0.05)
    built = build(table, SCHEMA)
    data = built.files[DOCS_FILE]
    blocks = RecordingBlocks(data)
    whole = open_built(built, SCHEMA)
    cold = open_cold(built, SCHEMA, DOCS_FILE, blocks)
    assert cold.lazy_docs() and cold.ids().equals(whole.ids())
    assert (cold.tombstones() == whole.tombstones()).all()
    w_src, c_src = SegmentSource(whole, ~whole.tombstones()), SegmentSource(cold, ~cold.tombstones())
    pos = np.array([3, 2000, 17, 5000])
    names = ["title", "tags", "v", "dt", "uu"]
    assert c_src.fetch_rows(pos, names).equals(w_src.fetch_rows(pos, names))
    assert c_src.logical_bytes(ATTRS) == w_src.logical_bytes(ATTRS)
    assert blocks.whole_calls == 0 and len(blocks.calls) == 1 and len(blocks.calls[0]) == 3
    assert c_src.non_null_count("n") == w_src.non_null_count("n")  # over live rows: the column
    cold.hydrate_docs(data)
    assert not cold.lazy_docs() and cold.table().equals(whole.table())


def test_gather_over_many_chunks_equals_take() -> None:
    from lagoon.index.segment.docs import _gather

    rng = np.random.default_rng(6)
    values = pa.array([f"v{i}" if i % 7 else None for i in range(5000)])
    col = pa.chunked_array([values.slice(s, 333) for s in range(0, 5000, 333)])
    for rows in (rng.integers(0, 5000, 40), np.array([4999, 0, 0, 333, 332]), np.empty(0, np.int64)):
        assert _gather(col, rows).to_pylist() == values.take(pa.array(rows, pa.int64())).to_pylist()


def test_a_file_without_attribute_columns() -> None:
    """Only keys (a namespace of vectors alone): no batches; whole and head reads agree."""
    table = docs_table(3000, seed=7).select(["id", "$seq", "$op"])
    data, summary = encode_docs(table, SCHEMA)
    assert summary["batches"] == 0
    for store in (open_docs(data, what="docs", rows=3000), lazy(data, 3000)[0]):
        assert store.keys.equals(table)  # type: ignore[attr-defined]
        assert store.take(np.array([5, 1]), []) == []  # type: ignore[attr-defined]
