"""The committed ``golden/v1-i8`` segment (an ``[2]i8`` vector column) opens and answers queries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lagoon.index.segment.read import SegmentReader
from lagoon.index.sources.segment import SegmentSource
from tests.index.segment import golden_data
from tests.index.segment.test_golden_and_corruption import golden_files

GOLDEN_I8 = Path(__file__).parent / "golden" / "v1-i8"


def test_golden_i8_opens_and_ranks() -> None:
    ref, files = golden_files(GOLDEN_I8)
    assert set(files) == {"docs", "vec.q"}
    reader = SegmentReader.from_files(ref, dict(files), golden_data.I8_SCHEMA)
    assert reader.table().column("q").to_pylist() == [[1, 2], [0, 0], [-128, 127], None]  # ids 1..4
    src = SegmentSource(reader, ~reader.tombstones())
    pos, dist = src.vector_topk("q", np.array([1, 1], np.float32), "euclidean_squared", 4, None)
    # (1-1)²+(2-1)² = 1; 1+1 = 2; 129² + 126² = 32517; id 4 has no vector
    assert src.fetch_rows(pos, []).column("id").to_pylist() == [1, 2, 3]
    assert dist.tolist() == pytest.approx([1.0, 2.0, 32517.0])
