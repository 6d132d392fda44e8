"""Orderings of a document column: positions in ascending order (ids order by their bytes) and
dense ranks with nulls lowest. Used for tie-breaking (id rank) and order-by (attribute ranks)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def sort_positions(col: pa.ChunkedArray) -> np.ndarray:
    arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if pa.types.is_fixed_size_binary(arr.type):
        arr = arr.cast(pa.binary())
    idx = pc.sort_indices(arr)
    return np.asarray(idx.to_numpy(zero_copy_only=False), dtype=np.int64)


def dense_rank(col: pa.ChunkedArray) -> np.ndarray:
    """Dense ascending ranks with nulls lowest: null -> 0, smallest value -> 1 (when nulls exist)."""
    if len(col) == 0:
        return np.empty(0, dtype=np.int64)
    arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if pa.types.is_fixed_size_binary(arr.type):
        arr = arr.cast(pa.binary())
    if pa.types.is_null(arr.type):
        return np.zeros(len(arr), dtype=np.int64)
    ranks = pc.rank(arr, sort_keys=[("v", "ascending", "at_start")], tiebreaker="dense")
    out = np.asarray(ranks.to_numpy(zero_copy_only=False), dtype=np.int64)
    if arr.null_count:
        out -= 1  # nulls share rank 1 and come first; shift so null == 0
    out.setflags(write=False)
    return out


def rank_of_order(order: np.ndarray) -> np.ndarray:
    """The inverse permutation of ``order`` (position -> its rank), read-only int64."""
    rank = np.empty(order.shape[0], dtype=np.int64)
    rank[order] = np.arange(order.shape[0], dtype=np.int64)
    rank.setflags(write=False)
    return rank
