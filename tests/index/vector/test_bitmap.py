"""Candidate bitmaps (lagoon/index/vector/bitmap.py): ``pack`` gives np.packbits's bytes (little
bit order), zero-padded to whole 64-bit words, and the count of set rows; ``rows`` lists them back,
ascending, for every length around the 8-, 32- and 64-row boundaries and every density."""

from __future__ import annotations

import numpy as np
import pytest

from lagoon.index.vector import bitmap


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


def test_pack_reads_a_strided_mask_as_its_values() -> None:
    """A mask that is a view (every other row of a larger mask) is packed by value, not by memory."""
    wide = np.random.default_rng(4).random(2001) < 0.3
    view = wide[::2]
    bits, count = bitmap.pack(view)
    assert count == int(np.count_nonzero(view))
    assert np.array_equal(bitmap.rows(bits, count), np.flatnonzero(view))
