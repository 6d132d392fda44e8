"""A filtered ANN query's candidate rows as a packed bitmap: one pass over the filter's mask.

Filters reach a segment's vector index as a bool mask over its rows. The probes test a row's bit
(lagoon/index/vector/quantized.py), and a small candidate set is scanned exactly from its list of
rows: a packed bitmap (one bit per row, little-endian bit order as ``np.packbits(...,
bitorder="little")``) serves both. ``pack`` reads the mask once, eight rows per 64-bit word, and
counts it on the way (the planner's candidate share): at 1M rows that one pass replaces
``np.count_nonzero`` plus ``np.packbits`` (two passes over 1 MB), and ``rows`` lists the set bits
from the 125 KB bitmap, word by word, skipping empty words (``np.flatnonzero`` over the bool mask
took 0.3 ms of CPU for a 1 % filter, a third of an unfiltered query). Pure: arrays in, arrays out.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from numba.cpython.unsafe.numbers import trailing_zeros as _numba_trailing_zeros

_PACK = np.uint64(0x0102040810204080)  # x * _PACK >> 56: the low bits of x's 8 bytes as one byte
_SUM = np.uint64(0x0101010101010101)  # x * _SUM >> 56: the sum of x's 8 bytes (each 0 or 1)
_trailing_zeros: Any = _numba_trailing_zeros  # (an intrinsic: callable in jitted code only)


@numba.njit(cache=True, nogil=True)
def _pack(words: Any, tail: Any, out: Any) -> int:
    """Pack the bool bytes ``words`` (8 per uint64) then ``tail`` (the last < 8) into ``out``;
    returns how many are set."""
    count = np.int64(0)
    shift = np.uint64(56)
    for w in range(words.shape[0]):
        x = words[w]
        out[w] = np.uint8((x * _PACK) >> shift)
        count += np.int64((x * _SUM) >> shift)
    last = np.uint8(0)
    for b in range(tail.shape[0]):
        bit = np.uint8(tail[b] & 1)
        last |= np.uint8(bit << b)
        count += np.int64(bit)
    if tail.shape[0]:
        out[words.shape[0]] = last
    return int(count)


@numba.njit(cache=True, nogil=True)
def _rows(words: Any, out: Any) -> int:
    """The set bits of the uint64 ``words`` (bit b of word w = row 64 w + b) into ``out``, ascending."""
    c = 0
    one = np.uint64(1)
    for w in range(words.shape[0]):
        x = words[w]
        base = w * 64
        while x:
            out[c] = base + np.int64(_trailing_zeros(x))
            c += 1
            x &= x - one
    return c


def pack(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """(packed bitmap of the bool ``mask``, number of rows set). The bitmap has the bytes of
    ``np.packbits(mask, bitorder="little")``, then zeros up to a multiple of 8 bytes (``rows``
    reads it as 64-bit words)."""
    m = np.ascontiguousarray(mask, dtype=bool).view(np.uint8)
    n = m.shape[0]
    whole = n - n % 8
    out = np.empty((n + 63) // 64 * 8, np.uint8)
    out[whole // 8 :] = 0
    count = _pack(m[:whole].view(np.uint64), m[whole:], out)
    return out, int(count)


def rows(bitmap: np.ndarray, count: int) -> np.ndarray:
    """int64 rows set in ``bitmap`` (``pack``'s; ``count`` of them), ascending."""
    out = np.empty(count, np.int64)
    found = _rows(bitmap.view(np.uint64), out)
    return out[:found]


def warm_kernels() -> None:
    """Compile (or load from numba's cache) both kernels."""
    bits, count = pack(np.array([True, False] * 9, bool))
    rows(bits, count)


__all__ = ["pack", "rows", "warm_kernels"]
