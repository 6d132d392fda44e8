"""Segment format v1: the committed golden files still open and answer queries; corrupted,
truncated, missing or mismatched files are DataCorruption (never garbage, never another error)."""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import orjson
import pytest

from lagoon.errors import DataCorruption, IncompatibleFormat
from lagoon.format.framing import HEADER_LEN, crc32c
from lagoon.format.manifest import SegmentRef
from lagoon.format.segment import READER_VERSION, file_checksum, head_length
from lagoon.index.filters.parse import parse_filter
from lagoon.index.segment.read import LazyFile, SegmentReader
from lagoon.index.sources.protocol import dense_scores
from lagoon.index.sources.segment import SegmentSource
from tests.index.segment import golden_data
from tests.index.segment.helpers import build, by_id, random_table, rich_schema

GOLDEN = Path(__file__).parent / "golden" / "v1"
GOLDEN_HEAD = Path(__file__).parent / "golden" / "v1-head"
GOLDEN_V2 = Path(__file__).parent / "golden" / "v2"
GOLDEN_V2_DOCS = Path(__file__).parent / "golden" / "v2-docs"


def golden_files(directory: Path = GOLDEN) -> tuple[SegmentRef, dict[str, bytes]]:
    ref = SegmentRef.from_json(orjson.loads((directory / "ref.json").read_bytes()))
    return ref, {name: (directory / name).read_bytes() for name in ref.files}


class _WholeBytes:
    """A BlockSource over a file's bytes (the cold path, without a store)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        return [self.data[s:e] for s, e in ranges]

    def whole(self) -> bytes:
        return self.data


@pytest.mark.parametrize(
    "layout", ["v1", "v1-head", "v1-head lazy", "v2", "v2 lazy", "v2-docs", "v2-docs lazy"]
)
def test_golden_files_open_and_answer_queries(layout: str) -> None:
    directory = {"v1": GOLDEN, "v2": GOLDEN_V2, "v2-docs": GOLDEN_V2_DOCS}.get(layout.split()[0], GOLDEN_HEAD)
    ref, files = golden_files(directory)
    assert set(files) == {"docs", "vec.vector", "vec.half", "fts.title", "flt.year", "flt.price"}
    assert ref.info["format_version"] == (2 if layout.startswith("v2") else 1)
    opened: dict[str, bytes | LazyFile] = dict(files)
    lazy = ("vec.vector", "vec.half") + (("fts.title",) if layout.startswith("v2") else ())
    lazy += ("docs",) if layout.startswith("v2-docs") else ()
    for name in lazy:
        head = head_length(files[name][:4096], what=name)
        assert (head is None) == (layout == "v1")
        if layout.endswith("lazy"):
            assert head == ref.info["files"][name]["head_bytes"]
            opened[name] = LazyFile(files[name][:head], _WholeBytes(files[name]))
    reader = SegmentReader.from_files(ref, opened, golden_data.SCHEMA)
    expected = by_id(golden_data.table())
    got = reader.table()
    for name in expected.column_names:
        assert got.column(name).to_pylist() == expected.column(name).to_pylist(), name
    assert reader.ids().to_pylist() == ["a", "b", "c", "d", "e"]
    assert reader.tombstones().tolist() == [False, False, False, True, False]
    src = SegmentSource(reader, ~reader.tombstones())
    assert src.num_docs == 4
    pos, dist = src.vector_topk("vector", np.array([0.6, 0.8, 0], np.float32), "cosine_distance", 3, None)
    assert src.fetch_rows(pos, []).column("id").to_pylist() == ["b", "a", "c"]
    assert dist[0] == pytest.approx(0.0, abs=1e-7)
    pos, dist = src.vector_topk(
        "half", np.array([1, 2], np.float32), "euclidean_squared", 5, None, approximate=True
    )
    assert src.fetch_rows(pos, []).column("id").to_pylist() == ["c", "a", "b"]
    assert dist.tolist() == pytest.approx([0.0, 3.3125, 8.0])
    scores = dense_scores(
        src.num_docs, *src.bm25("title", "lagoon running", False)
    )  # stemmed: runs ~ running
    assert (scores > 0).tolist() == [False, True, True, False]
    assert scores[2] > scores[1]  # "c" has both terms
    mask = src.filter_mask(parse_filter(["And", [["year", "Eq", 2021], ["price", "Lt", 5]]], src.schema))
    assert mask.tolist() == [False, True, False, False]
    assert src.filter_mask(parse_filter(["price", "Eq", 0], src.schema)).tolist() == [
        True,
        False,
        False,
        False,
    ]
    assert src.token_match("title", "ContainsTokenSequence", "river and", {}).tolist() == [
        False,
        True,
        False,
        False,
    ]


def test_flipped_bytes_are_detected() -> None:
    ref, files = golden_files()
    for name in ref.files:
        data = files[name]
        for where in (0, 5, HEADER_LEN + 1, len(data) // 2, len(data) - 1):
            bad = bytearray(data)
            bad[where] ^= 0x40
            with pytest.raises(DataCorruption, match=name):
                SegmentReader.from_files(ref, {**files, name: bytes(bad)}, golden_data.SCHEMA)


def test_truncated_missing_and_mismatched_files() -> None:
    ref, files = golden_files()
    schema = golden_data.SCHEMA
    with pytest.raises(DataCorruption, match=r"truncated|size"):
        SegmentReader.from_files(ref, {**files, "docs": files["docs"][:10]}, schema)
    with pytest.raises(DataCorruption, match="size"):
        SegmentReader.from_files(ref, {**files, "vec.vector": files["vec.vector"][:-1]}, schema)
    missing = dict(files)
    del missing["fts.title"]
    with pytest.raises(DataCorruption, match="missing"):
        SegmentReader.from_files(ref, missing, schema)
    swapped = {**files, "flt.year": files["flt.price"]}
    with pytest.raises(DataCorruption, match="checksum"):
        SegmentReader.from_files(ref, swapped, schema)
    # the bytes are intact but the manifest disagrees about them
    with pytest.raises(DataCorruption, match="checksum"):
        wrong = SegmentRef.from_json(
            {**ref.to_json(), "files": {**ref.files, "docs": {"size": len(files["docs"]), "crc32c": 1}}}
        )
        SegmentReader.from_files(wrong, files, schema)
    # the manifest's file is stored under another file's name (magic differs)
    moved = SegmentRef.from_json(
        {**ref.to_json(), "files": {**ref.files, "flt.year": ref.files["fts.title"]}}
    )
    with pytest.raises(DataCorruption, match="magic"):
        SegmentReader.from_files(moved, {**files, "flt.year": files["fts.title"]}, schema)
    no_docs = SegmentRef.from_json(
        {**ref.to_json(), "files": {k: v for k, v in ref.files.items() if k != "docs"}}
    )
    with pytest.raises(DataCorruption, match="docs"):
        SegmentReader.from_files(no_docs, files, schema)
    wrong_rows = SegmentRef.from_json({**ref.to_json(), "rows": 6})
    with pytest.raises(DataCorruption, match="rows"):
        SegmentReader.from_files(wrong_rows, files, schema)


def _reframe(data: bytes, body: bytes | None = None, *, min_reader: int | None = None) -> bytes:
    """``data`` with a new body and/or min_reader_version, and a valid checksum."""
    header = bytearray(data[:HEADER_LEN])
    if body is None:
        body = data[HEADER_LEN:-4]
    struct.pack_into("<Q", header, 16, len(body))
    if min_reader is not None:
        struct.pack_into("<H", header, 6, min_reader)
    out = bytes(header) + body
    return out + struct.pack("<I", crc32c(out))


def _with(ref: SegmentRef, name: str, data: bytes) -> SegmentRef:
    files = {**ref.files, name: {"size": len(data), "crc32c": file_checksum(data)}}
    return SegmentRef.from_json({**ref.to_json(), "files": files})


def test_newer_format_is_refused() -> None:
    ref, files = golden_files()
    for name in ref.files:
        newer = _reframe(files[name], min_reader=READER_VERSION + 1)
        with pytest.raises(IncompatibleFormat, match="Upgrade"):
            SegmentReader.from_files(_with(ref, name, newer), {**files, name: newer}, golden_data.SCHEMA)


def test_consistent_garbage_never_escapes_as_another_error() -> None:
    """Mutations inside the body with a recomputed checksum (a buggy writer, not the disk) must
    fail as DataCorruption or load as valid structures."""
    schema = rich_schema()
    built = build(random_table(np.random.default_rng(4), 60, schema), schema)
    rng = np.random.default_rng(0)
    outcomes = {"ok": 0, "corrupt": 0}
    for name, data in sorted(built.files.items()):
        for _ in range(int(os.environ.get("FUZZ", 25))):  # FUZZ=1000 for a longer local run
            body = bytearray(data[HEADER_LEN:-4])
            for _ in range(int(rng.integers(1, 4))):
                body[int(rng.integers(0, len(body)))] = int(rng.integers(0, 256))
            bad = _reframe(data, bytes(body))
            try:
                reader = SegmentReader.from_files(
                    _with(built.ref, name, bad), {**built.files, name: bad}, schema
                )
                reader.table()
                for attr in schema.fts_columns():
                    reader.text(attr)
                for attr in schema.attributes:
                    reader.filter_index(attr)
                outcomes["ok"] += 1
            except DataCorruption:
                outcomes["corrupt"] += 1
    assert outcomes["corrupt"] > 0


def test_golden_v2_docs_is_what_the_builder_writes_and_damage_is_detected() -> None:
    ref, files = golden_files(GOLDEN_V2_DOCS)
    assert ref.info["files"]["docs"]["format"] == 2
    built = golden_data.build()
    assert built.files["docs"] == files["docs"]  # the builder still writes the committed bytes
    data = files["docs"]
    for where in (5, HEADER_LEN + 1, len(data) // 2, len(data) - 1):
        bad = bytearray(data)
        bad[where] ^= 0x40
        with pytest.raises(DataCorruption, match="docs"):
            SegmentReader.from_files(ref, {**files, "docs": bytes(bad)}, golden_data.SCHEMA)
