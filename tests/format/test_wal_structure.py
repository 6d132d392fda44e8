"""check_structure refuses what a reader cannot fold: an unknown $op, an id twice."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from lagoon.errors import DataCorruption
from lagoon.format.wal import WalEntry, check_structure


def _entry(ids: list[int], ops: list[int], chunks: int = 1) -> WalEntry:
    half = len(ids) // chunks
    parts = [
        pa.table(
            {
                "id": pa.array(np.array(ids[i : i + half], dtype=np.uint64)),
                "$op": pa.array(np.array(ops[i : i + half], dtype=np.uint8)),
            }
        )
        for i in range(0, len(ids), half)
    ]
    return WalEntry(seq=1, nonce=b"n", created_at_ms=0, writer="w", docs=pa.concat_tables(parts))


@pytest.mark.parametrize("chunks", [1, 2])
def test_an_unknown_op_or_a_repeated_id_is_refused_in_any_chunk(chunks: int) -> None:
    check_structure(_entry([1, 2, 3, 4], [0, 1, 0, 1], chunks))
    with pytest.raises(DataCorruption, match=r"unknown \$op"):
        check_structure(_entry([1, 2, 3, 4], [0, 1, 0, 2], chunks))
    with pytest.raises(DataCorruption, match="more than once"):
        check_structure(_entry([1, 2, 3, 1], [0, 0, 0, 0], chunks))
