"""Binary search of string, binary and uuid values in an ascending Arrow array, bytewise.

``search_sorted`` (kernels.py) finds ids in a segment (``SegmentReader.lookup``: the rows the
tail hides, a patch's current documents). For uint64 ids numpy searches; for the others this
module does it in one compiled loop over the arrays' own buffers (offsets and bytes, no copy of
the values): O(len(wanted) · log len(keys)) byte comparisons. Arrow's order for these types is
the bytes' (unsigned, a prefix first), which is how segments sort their ids
(``id_sort_indices``). Compiled on first use and cached next to this file (numba).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba
import numpy as np
import pyarrow as pa

_F = TypeVar("_F", bound=Callable[..., Any])


def _jit(fn: _F) -> _F:
    return cast(_F, numba.njit(cache=True, nogil=True)(fn))


@_jit
def _compare(x: np.ndarray, x0: int, x1: int, y: np.ndarray, y0: int, y1: int) -> int:
    """-1, 0 or 1: bytes ``x[x0:x1]`` against ``y[y0:y1]``."""
    lx, ly = x1 - x0, y1 - y0
    for i in range(min(lx, ly)):
        a, b = x[x0 + i], y[y0 + i]
        if a != b:
            return -1 if a < b else 1
    return -1 if lx < ly else (1 if lx > ly else 0)


@_jit
def _bounds(offsets: np.ndarray, width: int, i: int) -> tuple[int, int]:
    """Where value ``i`` lies in its bytes: ``offsets`` (variable width) or ``i * width`` (fixed;
    ``offsets`` then holds the array's first slot)."""
    if width:
        start = (offsets[0] + i) * width
        return start, start + width
    return offsets[i], offsets[i + 1]


@_jit
def _search(
    key_offsets: np.ndarray,
    key_width: int,
    key_bytes: np.ndarray,
    n: int,
    offsets: np.ndarray,
    width: int,
    data: np.ndarray,
    out: np.ndarray,
) -> None:
    for j in range(out.shape[0]):
        a0, a1 = _bounds(offsets, width, j)
        lo, hi = 0, n
        while lo < hi:
            mid = (lo + hi) // 2
            b0, b1 = _bounds(key_offsets, key_width, mid)
            if _compare(key_bytes, b0, b1, data, a0, a1) < 0:
                lo = mid + 1
            else:
                hi = mid
        found = False
        if lo < n:
            b0, b1 = _bounds(key_offsets, key_width, lo)
            found = _compare(key_bytes, b0, b1, data, a0, a1) == 0
        out[j] = lo if found else -1


def _buffers(arr: pa.Array) -> tuple[np.ndarray, int, np.ndarray]:
    """(offsets of the values, len + 1 of them, or for a fixed width the first slot alone; the
    width or 0; the bytes) as views of the array's buffers."""
    n, at = len(arr), arr.offset
    bufs = arr.buffers()
    offsets: np.ndarray
    if pa.types.is_fixed_size_binary(arr.type):
        offsets, width, data = np.array([at], dtype=np.int64), int(arr.type.byte_width), bufs[1]
    else:
        kind = (
            np.int64 if pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type) else np.int32
        )
        offsets, width, data = np.frombuffer(bufs[1], dtype=kind)[at : at + n + 1], 0, bufs[2]
    raw = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, dtype=np.uint8)
    return offsets, width, raw


def supported(arrow_type: pa.DataType) -> bool:
    """String, binary or uuid (fixed-size binary): the types this module searches."""
    return bool(
        pa.types.is_string(arrow_type)
        or pa.types.is_large_string(arrow_type)
        or pa.types.is_binary(arrow_type)
        or pa.types.is_large_binary(arrow_type)
        or pa.types.is_fixed_size_binary(arrow_type)
    )


def search_bytes(keys: pa.Array, wanted: pa.Array) -> np.ndarray:
    """int64 index of each ``wanted`` value in ``keys`` (ascending bytewise, no nulls; the same
    kind of type), or -1. A null ``wanted`` value is looked up as its slot's bytes: callers
    clear them (``search_sorted`` does)."""
    out = np.full(len(wanted), -1, dtype=np.int64)
    if len(keys) and len(wanted):
        key_offsets, key_width, key_bytes = _buffers(keys)
        offsets, width, data = _buffers(wanted)
        _search(key_offsets, key_width, key_bytes, len(keys), offsets, width, data, out)
    return out


__all__ = ["search_bytes", "supported"]
