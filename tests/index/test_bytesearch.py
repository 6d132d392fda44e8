"""``search_sorted`` on string, binary and uuid keys (the compiled bytewise search) against
Python's ``bisect`` over the same values as bytes."""

from __future__ import annotations

import bisect

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from lagoon.index.filters.kernels import search_sorted

TEXT = st.text(st.characters(codec="utf-8"), max_size=6)  # NULs, prefixes, multi-byte letters


def _expected(keys: list[bytes], wanted: list[bytes | None]) -> list[int]:
    out = []
    for w in wanted:
        i = -1 if w is None else bisect.bisect_left(keys, w)
        out.append(i if w is not None and i < len(keys) and keys[i] == w else -1)
    return out


@settings(max_examples=200, deadline=None)
@given(st.sets(TEXT, max_size=40), st.lists(st.one_of(TEXT, st.none()), max_size=30), st.integers(0, 3))
def test_strings_are_found_bytewise(keys: set[str], wanted: list[str | None], cut: int) -> None:
    ordered = sorted(keys, key=lambda v: v.encode())
    arr = pa.array(["pad"] * cut + ordered, pa.string()).slice(cut)  # an offset into the buffers
    probe = [*wanted, *ordered[:5]]
    got = search_sorted(arr, pa.array(probe, pa.string()))
    as_bytes = [v.encode() for v in ordered]
    assert got.tolist() == _expected(as_bytes, [None if w is None else w.encode() for w in probe])


@settings(max_examples=100, deadline=None)
@given(
    st.sets(st.binary(min_size=16, max_size=16), max_size=40),
    st.lists(st.binary(min_size=16, max_size=16), max_size=20),
)
def test_uuids_are_found_bytewise(keys: set[bytes], wanted: list[bytes]) -> None:
    ordered = sorted(keys)
    probe = [*wanted, *ordered[-3:]]
    for kind in (pa.binary(16), pa.binary()):
        got = search_sorted(pa.array(ordered, kind), pa.array(probe, kind))
        assert got.tolist() == _expected(ordered, list(probe))
        sliced = pa.array([b"\x01" * 16, *ordered], kind).slice(1)  # an offset into the buffers
        got = search_sorted(sliced, pa.array([b"\x02" * 16, *probe], kind).slice(1))
        assert got.tolist() == _expected(ordered, list(probe))


def test_empty_sides_and_all_null_wanted() -> None:
    assert search_sorted(pa.array([], pa.string()), pa.array(["a"])).tolist() == [-1]
    assert search_sorted(pa.array(["a"]), pa.array([], pa.string())).tolist() == []
    uuids = pa.array([b"\x00" * 16, b"\xff" * 16], pa.binary(16))
    assert search_sorted(uuids, pa.array([None, None], pa.binary(16))).tolist() == [-1, -1]
    assert np.array_equal(search_sorted(pa.array(["", "b"]), pa.array(["", "a", "b", None])), [0, -1, 1, -1])
