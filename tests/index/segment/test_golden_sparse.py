"""The committed ``golden/v1-sparse`` segment (a ``{}f16`` column and its ``spv`` file) opens,
decodes to the expected postings and answers SparseKNN; a fresh build is byte-for-byte the same."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lagoon.format.segment import MAGIC_SPV, open_sections
from lagoon.index.segment.build import build_segment
from lagoon.index.segment.read import SegmentReader
from lagoon.index.sources.segment import SegmentSource
from lagoon.index.sparse import open_spv
from tests.index.segment import golden_data
from tests.index.segment.test_golden_and_corruption import golden_files

GOLDEN_SPARSE = Path(__file__).parent / "golden" / "v1-sparse"


def test_golden_sparse_opens_and_ranks() -> None:
    ref, files = golden_files(GOLDEN_SPARSE)
    assert set(files) == {"docs", "spv.s"}
    index = open_spv(open_sections(files["spv.s"], magic=MAGIC_SPV, what="spv.s"), 4)
    # rows in id order: 1, 2, 3, 4; dimensions 0, 3, 4e9
    assert index.dims.tolist() == [0, 3, 4_000_000_000]
    assert index.offsets.tolist() == [0, 2, 4, 5]
    assert index.rows.tolist() == [0, 3, 1, 3, 0]
    assert index.weights.tolist() == [0.5, -1.0, 1.25, 0.75, 2.0]
    assert index.block_max.tolist() == [0.5, 1.25, 2.0]
    reader = SegmentReader.from_files(ref, dict(files), golden_data.SPARSE_SCHEMA)
    src = SegmentSource(reader, ~reader.tombstones())
    q = np.array([0, 3, 4_000_000_000], np.uint32), np.array([2.0, 4.0, 1.0])
    pos, scores = src.sparse("s", *q)
    # id 1: 0.5·2 + 2·1 = 3; id 2: 1.25·4 = 5; id 4: −1·2 + 0.75·4 = 1; id 3 has none
    assert src.fetch_rows(pos, []).column("id").to_pylist() == [1, 2, 4]
    assert scores.tolist() == [3.0, 5.0, 1.0]


def test_golden_sparse_build_is_stable() -> None:
    ref, files = golden_files(GOLDEN_SPARSE)
    built = build_segment(
        golden_data.sparse_table(),
        golden_data.SPARSE_SCHEMA,
        segment_id=golden_data.SPARSE_SEGMENT_ID,
        level=0,
        seq_from=2,
        seq_to=2,
    )
    assert built.files["spv.s"] == files["spv.s"]
    # the docs file is written in version 2 since RFC 0006 (golden/v2-docs/); the rest is unchanged
    assert {k: v for k, v in built.ref.files.items() if k != "docs"} == {
        k: v for k, v in ref.files.items() if k != "docs"
    }
