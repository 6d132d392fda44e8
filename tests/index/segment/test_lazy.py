"""A ``vec`` file opened from its head (cold path): it answers exactly like the whole file, fetches
only the blocks a query probes, verifies every block, and older files without a head fall back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from lagoon.errors import DataCorruption
from lagoon.format.segment import head_length
from lagoon.format.wal import OP_COLUMN
from lagoon.index.segment.build import SEQ_COLUMN, BuiltSegment
from lagoon.index.segment.read import LazyFile, SegmentReader
from lagoon.index.sources.segment import SegmentSource
from lagoon.index.vector.ivf import WHOLE_FILE_FRACTION
from lagoon.index.vector.quantized import CodePass
from lagoon.schema import Schema, apply_schema_update
from tests.index.segment.data import queries, vectors
from tests.index.segment.helpers import RecordingBlocks, build, open_built, open_cold

DIM = 32
N = 12_000
GOLDEN = Path(__file__).parent / "golden" / "v1"


@pytest.fixture(scope="module")
def segment() -> tuple[BuiltSegment, Schema]:
    schema = apply_schema_update(
        Schema(distance_metric="euclidean_squared"), {"id": "uint", "v": f"[{DIM}]f32", "bucket": "int"}
    )
    base = vectors(N, DIM)
    rows = np.arange(N)
    has = rows % 17 != 0  # some rows have no vector
    table = pa.table(
        {
            "id": pa.array(rows.astype(np.uint64)),
            SEQ_COLUMN: pa.array(np.ones(N, np.uint64)),
            OP_COLUMN: pa.array(np.zeros(N, np.uint8)),
            "v": pa.FixedSizeListArray.from_arrays(pa.array(base.reshape(-1)), DIM, mask=pa.array(~has)),
            "bucket": pa.array((rows * 7919) % 100, pa.int64()),
        }
    )
    return build(table, schema), schema


def lazy_reader(built: BuiltSegment, schema: Schema, blocks: RecordingBlocks) -> SegmentReader:
    return open_cold(built, schema, "vec.v", blocks)


def test_lazy_index_answers_like_the_whole_file(segment: tuple[BuiltSegment, Schema]) -> None:
    built, schema = segment
    eager = open_built(built, schema)
    blocks = RecordingBlocks(built.files["vec.v"])
    lazy = lazy_reader(built, schema, blocks)
    vi_e, vi_l = eager.vector_index("v"), lazy.vector_index("v")
    assert vi_e is not None and vi_l is not None and vi_l.lazy and not vi_e.lazy
    assert vi_l.n_clusters > 100 and vi_l.loaded_fraction == 0.0
    np.testing.assert_array_equal(vi_l.cord, vi_e.cord)
    np.testing.assert_array_equal(vi_l.row_cluster, vi_e.row_cluster)

    src_e, src_l = SegmentSource(eager, np.ones(N, bool)), SegmentSource(lazy, np.ones(N, bool))
    rng = np.random.default_rng(3)
    for i, q in enumerate(queries(12, DIM)):
        got = src_l.vector_topk("v", q, "euclidean_squared", 10, None, approximate=True)
        want = src_e.vector_topk("v", q, "euclidean_squared", 10, None, approximate=True)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        if i == 0:  # one unfiltered query reads its probed blocks only, in one call
            assert len(blocks.calls) == 1 and blocks.whole_calls == 0
            assert 0 < blocks.ranged_bytes < 0.2 * len(built.files["vec.v"])
        mask = rng.random(N) < 0.3
        got = src_l.vector_topk("v", q, "euclidean_squared", 10, mask, approximate=True)
        want = src_e.vector_topk("v", q, "euclidean_squared", 10, mask, approximate=True)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    assert blocks.whole_calls == 0 and 0 < vi_l.loaded_fraction < 1.0
    some = np.sort(rng.choice(N, 50, replace=False))
    assert src_l.fetch_rows(some, ["v"]).column("v").equals(src_e.fetch_rows(some, ["v"]).column("v"))

    # an exact scan loads what is missing; then the index is complete and reads nothing more
    q = queries(1, DIM, seed=99)[0]
    got = src_l.vector_topk("v", q, "euclidean_squared", 10, None, approximate=False)
    want = src_e.vector_topk("v", q, "euclidean_squared", 10, None, approximate=False)
    np.testing.assert_array_equal(got[0], want[0])
    assert vi_l.loaded_fraction == 1.0
    calls = (len(blocks.calls), blocks.whole_calls)
    src_l.vector_topk("v", queries(1, DIM, seed=5)[0], "euclidean_squared", 10, None, approximate=True)
    assert (len(blocks.calls), blocks.whole_calls) == calls

    # on a cold index, a scan needing more than WHOLE_FILE_FRACTION of the blocks: one whole read
    assert WHOLE_FILE_FRACTION < 1.0
    cold_blocks = RecordingBlocks(built.files["vec.v"])
    cold = SegmentSource(lazy_reader(built, schema, cold_blocks), np.ones(N, bool))
    got = cold.vector_topk("v", q, "euclidean_squared", 10, None, approximate=False)
    np.testing.assert_array_equal(got[0], want[0])
    assert cold_blocks.whole_calls == 1 and cold_blocks.calls == []


def test_hydrate_completes_a_lazy_index(segment: tuple[BuiltSegment, Schema]) -> None:
    built, schema = segment
    blocks = RecordingBlocks(built.files["vec.v"])
    lazy = lazy_reader(built, schema, blocks)
    vi = lazy.vector_index("v")
    assert vi is not None and lazy.lazy_vector_files() == {"vec.v": vi}
    vi.hydrate(built.files["vec.v"])
    assert vi.loaded_fraction == 1.0 and lazy.lazy_vector_files() == {}
    src = SegmentSource(lazy, np.ones(N, bool))
    src.vector_topk("v", queries(1, DIM)[0], "euclidean_squared", 10, None, approximate=True)
    assert blocks.calls == [] and blocks.whole_calls == 0


def test_hydrate_marks_clusters_loaded_only_with_their_codes(
    segment: tuple[BuiltSegment, Schema], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Background hydration runs in a thread beside queries, which scan any cluster marked
    loaded without taking the lock: a cluster must not be marked before its 8-bit codes are
    encoded (a query would rank it by missing codes: the recall drop of a busy machine)."""
    built, schema = segment
    lazy = lazy_reader(built, schema, RecordingBlocks(built.files["vec.v"]))
    vi = lazy.vector_index("v")
    assert vi is not None
    src = SegmentSource(lazy, np.ones(N, bool))
    src.vector_topk("v", queries(1, DIM)[0], "euclidean_squared", 10, None, approximate=True)
    assert 0 < vi.loaded_fraction < 1.0
    seen: list[bool] = []
    original = CodePass.add

    def add(self: CodePass, lo: int, x: np.ndarray) -> None:
        clusters = np.unique(vi.row_cluster[vi.cord[lo : lo + x.shape[0]]])
        seen.append(bool(vi._loaded[clusters].any()))
        original(self, lo, x)

    monkeypatch.setattr(CodePass, "add", add)
    vi.hydrate(built.files["vec.v"])
    assert seen and not any(seen) and vi.loaded_fraction == 1.0


def test_a_corrupt_block_or_head_is_detected(segment: tuple[BuiltSegment, Schema]) -> None:
    built, schema = segment
    data = built.files["vec.v"]
    head_bytes = built.ref.info["files"]["vec.v"]["head_bytes"]
    blocks = RecordingBlocks(data, corrupt_at=len(data) // 2)  # inside some block
    lazy = lazy_reader(built, schema, blocks)
    src = SegmentSource(lazy, np.ones(N, bool))
    with pytest.raises(DataCorruption, match="checksum"):  # ranged: every probe until it hits the bad block
        for q in queries(200, DIM):
            src.vector_topk("v", q, "euclidean_squared", 10, None, approximate=True)
    blocks.corrupt_at = None  # a good answer later is served: nothing bad was kept
    q = queries(1, DIM, seed=8)[0]
    want = SegmentSource(open_built(built, schema), np.ones(N, bool)).vector_topk(
        "v", q, "euclidean_squared", 10, None
    )
    np.testing.assert_array_equal(src.vector_topk("v", q, "euclidean_squared", 10, None)[0], want[0])

    for flip in (40, head_bytes - 100):  # meta, then a head section (row_cluster)
        bad = bytearray(data[:head_bytes])
        bad[flip] ^= 1
        files: dict[str, bytes | LazyFile] = dict(built.files)
        files["vec.v"] = LazyFile(bytes(bad), RecordingBlocks(data))
        with pytest.raises(DataCorruption, match="checksum"):
            SegmentReader.from_files(built.ref, files, schema)
    files = dict(built.files)
    files["vec.v"] = LazyFile(data[: head_bytes - 64], RecordingBlocks(data))  # short head
    with pytest.raises(DataCorruption):
        SegmentReader.from_files(built.ref, files, schema)


def test_files_written_without_a_head_are_read_whole() -> None:
    """The v1 golden files predate the checksummed head: a cold reader sees no head length
    and fetches them whole (the golden test checks they still answer queries)."""
    data = (GOLDEN / "vec.vector").read_bytes()
    assert head_length(data[:65536], what="golden") is None
