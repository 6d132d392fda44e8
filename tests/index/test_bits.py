"""Packed row sets (lagoon/index/bits.py): ``pack`` gives np.packbits's bytes (little bit
order), zero-padded to whole 64-bit words, and the count of set rows; ``rows`` lists them back,
ascending, for every length around the 8-, 32- and 64-row boundaries and every density; Arrow
booleans at any offset and chunking become the same bits (nulls as asked); the set operations,
slices and concatenations agree with numpy."""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lagoon.index import bits as bitmap
from lagoon.index.bits import Bits


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 31, 32, 33, 63, 64, 65, 127, 1000, 100_003])
@pytest.mark.parametrize("share", [0.0, 0.01, 0.5, 1.0])
def test_pack_and_rows_round_trip(n: int, share: float) -> None:
    mask = np.random.default_rng(n).random(n) < share
    bits, count = bitmap.pack(mask)
    expect = np.packbits(mask, bitorder="little")
    assert bits.shape[0] % 8 == 0 and bits.shape[0] >= expect.shape[0]
    assert np.array_equal(bits[: expect.shape[0]], expect)
    assert not bits[expect.shape[0] :].any()
    assert count == int(np.count_nonzero(mask))
    assert np.array_equal(bitmap.rows(bits, count), np.flatnonzero(mask))
    probe = np.random.default_rng(n + 1).integers(0, max(n, 1), 50) if n else np.zeros(0, np.int64)
    assert np.array_equal(Bits(bits, n, count).test(probe), mask[probe])


def test_pack_reads_a_strided_mask_as_its_values() -> None:
    """A mask that is a view (every other row of a larger mask) is packed by value, not by memory."""
    wide = np.random.default_rng(4).random(2001) < 0.3
    view = wide[::2]
    bits, count = bitmap.pack(view)
    assert count == int(np.count_nonzero(view))
    assert np.array_equal(bitmap.rows(bits, count), np.flatnonzero(view))


bool_cells = st.lists(st.none() | st.booleans(), max_size=300)


@settings(max_examples=200, deadline=None)
@given(
    cells=bool_cells,
    lead=st.integers(0, 17),
    chunk=st.integers(1, 70),
    null=st.booleans(),
)
def test_from_arrow_reads_offsets_chunks_and_nulls(
    cells: list[bool | None], lead: int, chunk: int, null: bool
) -> None:
    """An Arrow boolean array sliced at any bit offset, in chunks of any size, with nulls, gives
    the bits of its values, a null counting as ``null``; nothing is set past the last row."""
    arr = pa.array([True, False] * lead + cells, pa.bool_()).slice(2 * lead)
    chunked = pa.chunked_array([arr.slice(i, chunk) for i in range(0, len(arr), chunk)], pa.bool_())
    want = np.array([null if c is None else c for c in cells], bool)
    for a in (arr, chunked):
        b = Bits.from_arrow(a, null=null)
        assert b.n == len(cells) and b.mask.tolist() == want.tolist()
        assert b.count == int(want.sum())
        assert not np.unpackbits(b.data, bitorder="little")[b.n :].any()


@settings(max_examples=200, deadline=None)
@given(
    a=st.lists(st.booleans(), max_size=200),
    seed=st.integers(0, 2**16),
    cuts=st.lists(st.integers(0, 200), max_size=4),
)
def test_combine_slice_and_concat(a: list[bool], seed: int, cuts: list[int]) -> None:
    """And / Or / minus / Not, slices at any row and concatenations of parts of any size agree
    with numpy on the bool masks, counts included."""
    x = np.array(a, bool)
    y = np.random.default_rng(seed).random(x.shape[0]) < 0.5
    bx, by = Bits.from_mask(x), Bits.from_mask(y)
    for got, want in ((bx & by, x & y), (bx | by, x | y), (bx - by, x & ~y), (~bx, ~x)):
        assert got.mask.tolist() == want.tolist() and got.count == int(want.sum())
        assert not np.unpackbits(got.data, bitorder="little")[got.n :].any()
    edges = sorted({0, x.shape[0], *(min(c, x.shape[0]) for c in cuts)})
    parts = [bx.slice(lo, hi) for lo, hi in itertools.pairwise(edges)]
    for p, lo, hi in zip(parts, edges, edges[1:], strict=False):
        assert p.mask.tolist() == x[lo:hi].tolist() and p.count == int(x[lo:hi].sum())
    joined = Bits.concat(parts)
    assert joined.mask.tolist() == x.tolist() and joined.count == int(x.sum())
    rows = np.flatnonzero(x)
    assert np.array_equal(Bits.from_rows(rows, x.shape[0]).data, bx.data)
    assert np.array_equal(bx.rows(), rows)
