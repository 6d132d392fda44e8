"""Evaluation kernels of filter conditions over Arrow columns: null handling, list attributes
(flattened, results scattered back to rows), casts. Vectorised: no per-row Python work."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import regex as fuzzy_regex

from lagoon.errors import InternalError
from lagoon.index.cancel import checkpoint
from lagoon.index.filters.bytesearch import search_bytes, supported
from lagoon.index.filters.ops import Column, Mask
from lagoon.schema import AttrType, id_arrow_type

FUZZY_SLICE_CHARS = 64 * 1024  # Fuzzy: text characters matched between cancellation checkpoints


is_stringish = supported  # string, binary or uuid (fixed-size binary): compared bytewise


def fuzzy_mask(x: Column, query: str, rule: tuple[int, bool], n: int, is_array: bool) -> Mask:
    """Rows with a value (an element, for arrays) containing a substring within ``distance``
    Levenshtein edits of ``query``; each distinct value is tested once."""
    distance, case_sensitive = rule
    if distance < 0:
        return np.zeros(n, dtype=bool)
    arr = single(x)
    parents = None
    if is_array:
        parents = list_parents(arr)
        arr = pc.list_flatten(arr)
    if not case_sensitive:
        arr = pc.utf8_lower(arr)
        query = query.lower()
    if distance == 0:
        hits = to_mask(pc.match_substring(arr, pattern=query))
    else:
        distinct = pc.unique(arr).drop_null()
        pattern = fuzzy_regex.compile(f"(?:{fuzzy_regex.escape(query)}){{e<={distance}}}")
        found = np.zeros(len(distinct), dtype=bool)
        budget = 0
        for k, v in enumerate(distinct.to_pylist()):
            found[k] = pattern.search(v) is not None
            budget += len(v)
            if budget >= FUZZY_SLICE_CHARS:  # a cancelled or late query stops between values
                checkpoint()
                budget = 0
        where = np.asarray(pc.index_in(arr, value_set=distinct).fill_null(-1).to_numpy(zero_copy_only=False))
        hits = np.zeros(len(arr), dtype=bool)
        valid = where >= 0
        hits[valid] = found[where[valid]]
    return hits if parents is None else scatter(n, parents, hits)


def match_fast(strings: Any, kind: str, text: str) -> Any:
    """A case-sensitive glob reduced to an equality, prefix, suffix or substring test."""
    if kind == "equals":
        return pc.equal(strings, pa.scalar(text, type=pa.string()))
    if kind == "prefix":
        return pc.starts_with(strings, pattern=text)
    if kind == "suffix":
        return pc.ends_with(strings, pattern=text)
    return pc.match_substring(strings, pattern=text)


def to_mask(arr: Any, *, null: bool = False) -> Mask:
    """A pyarrow boolean (Chunked)Array -> numpy bools, nulls replaced by ``null``."""
    if arr.null_count:
        arr = arr.fill_null(null)
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=bool)


def single(col: Column) -> Any:
    """A ChunkedArray as one contiguous Array (no copy when it has one chunk)."""
    if isinstance(col, pa.ChunkedArray):
        if col.num_chunks == 1:
            return col.chunk(0)
        if col.num_chunks == 0:
            return pa.array([], type=col.type)
        return col.combine_chunks()
    return col


def list_parents(list_array: Any) -> npt.NDArray[np.int64]:
    return np.asarray(pc.list_parent_indices(list_array).to_numpy(zero_copy_only=False), dtype=np.int64)


def scatter(n: int, parents: npt.NDArray[np.int64], hits: Mask) -> Mask:
    out = np.zeros(n, dtype=bool)
    out[parents[hits]] = True
    return out


def cast(arr: Any, target: pa.DataType) -> Any:
    try:
        return pc.cast(arr, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
        raise InternalError(f"filter: cannot compare a column of type {arr.type} as {target}: {e}") from e


def cast_like(col: Column, target: pa.DataType) -> Column:
    return col if col.type == target else cast(col, target)


def scalar_arrow_type(t: AttrType, attr: str) -> pa.DataType:
    if attr == "id":
        return id_arrow_type(t.kind)
    return AttrType(t.kind).arrow_type()


def null_stored_vs_literal(op: str, value: Any, n: int) -> Mask:
    """A positive operator on a column that is null in every row, against a literal."""
    if op == "Eq":
        match = value is None
    elif op == "In":
        match = any(v is None for v in value)
    elif op in ("Lt", "Lte"):
        match = value is not None
    else:
        match = False
    return np.full(n, match, dtype=bool)


def null_stored_vs_ref(op: str, v: Column | None, n: int) -> Mask:
    """A positive operator on an all-null stored column, against the new document's column."""
    if op == "Eq":
        return np.ones(n, dtype=bool) if v is None else to_mask(v.is_null())
    if op in ("Lt", "Lte"):
        return np.zeros(n, dtype=bool) if v is None else to_mask(v.is_valid())
    return np.zeros(n, dtype=bool)


def vs_null(op: str, x: Column, n: int) -> Mask:
    """A positive operator against an operand that is null in every row (missing $ref_new)."""
    if op == "Eq":
        return to_mask(x.is_null())
    return np.zeros(n, dtype=bool)


def _list_counts(n: int, parents: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Elements per row (0 for null rows), from the parent indices of the flattened elements."""
    return np.bincount(parents, minlength=n).astype(np.int64)


def _positions(parents: npt.NDArray[np.int64], counts: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Each flattened element's index inside its own list."""
    starts = np.cumsum(counts) - counts
    return np.arange(parents.shape[0], dtype=np.int64) - starts[parents]


def list_eq_literal(arr: Any, value: Sequence[Any], elem_type: pa.DataType, n: int) -> Mask:
    valid = to_mask(arr.is_valid())
    flat, parents = pc.list_flatten(arr), list_parents(arr)
    counts = _list_counts(n, parents)
    cand: Mask = valid & (counts == len(value))
    if not value or not cand.any():
        return cand
    sel = cand[parents]
    expected = pa.array(list(value), type=elem_type).take(pa.array(_positions(parents, counts)[sel]))
    eq = to_mask(pc.equal(flat.filter(pa.array(sel)), cast_like(expected, flat.type)))
    cand[parents[sel][~eq]] = False
    return cand


def list_eq_column(x: Any, v: Any, n: int) -> Mask:
    fx, px = pc.list_flatten(x), list_parents(x)
    fv, pv = pc.list_flatten(v), list_parents(v)
    cx, cv = _list_counts(n, px), _list_counts(n, pv)
    cand: Mask = to_mask(x.is_valid()) & to_mask(v.is_valid()) & (cx == cv)
    if not cand.any():
        return cand
    sx, sv = cand[px], cand[pv]
    eq = to_mask(pc.equal(fx.filter(pa.array(sx)), fv.filter(pa.array(sv))))
    cand[px[sx][~eq]] = False
    return cand


def rows_intersect(x: Any, v: Any, n: int) -> Mask:
    """Row-wise: do the lists ``x[i]`` and ``v[i]`` share an element?"""
    fx, px = pc.list_flatten(x), list_parents(x)
    fv, pv = pc.list_flatten(v), list_parents(v)
    if len(fx) == 0 or len(fv) == 0:
        return np.zeros(n, dtype=bool)
    codes = pc.dictionary_encode(pa.concat_arrays([fx, cast_like(fv, fx.type)])).indices
    codes_np = np.asarray(codes.to_numpy(zero_copy_only=False), dtype=np.int64)
    k = int(codes_np.max()) + 1
    kx = px * k + codes_np[: len(fx)]
    kv = pv * k + codes_np[len(fx) :]
    return scatter(n, px, np.isin(kx, kv))


def search_sorted(keys: pa.Array, wanted: pa.Array) -> np.ndarray:
    """int64 index of each ``wanted`` value in ``keys`` (ascending, of the same type; strings and
    uuids bytewise), or -1 (also for a null): O(len(wanted) log len(keys)). Strings, binaries and
    uuids are searched by a compiled loop over the arrays' buffers (``bytesearch``); other types
    take one binary search for all values at once, log2(len(keys)) rounds of a take and a
    comparison: a hash lookup (``pc.index_in``) would hash every key on each call."""
    n, k = len(keys), len(wanted)
    if n == 0 or k == 0:
        return np.full(k, -1, dtype=np.int64)
    valid = np.asarray(wanted.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    if is_stringish(keys.type) and keys.type == wanted.type and keys.null_count == 0:
        if not wanted.null_count:
            return search_bytes(keys, wanted)
        out = np.full(k, -1, dtype=np.int64)
        out[valid] = search_bytes(keys, wanted.filter(pa.array(valid)))
        return out
    if pa.types.is_uint64(keys.type):
        sorted_keys = np.asarray(keys.to_numpy())
        q = np.asarray(wanted.fill_null(0).to_numpy(), dtype=np.uint64)
        lo = np.searchsorted(sorted_keys, q).astype(np.int64)
        hit = (lo < n) & (sorted_keys[np.minimum(lo, n - 1)] == q)
        return np.where(hit & valid, lo, -1).astype(np.int64)
    lo, hi = np.zeros(k, dtype=np.int64), np.full(k, n, dtype=np.int64)
    while (active := lo < hi).any():
        mid = (lo + hi) // 2
        probe = keys.take(pa.array(np.minimum(mid, n - 1)))
        below = np.asarray(pc.less(probe, wanted).fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)
        lo = np.where(active & below, mid + 1, lo)
        hi = np.where(active & ~below, mid, hi)
    at = keys.take(pa.array(np.minimum(lo, n - 1)))
    hit = np.asarray(pc.equal(at, wanted).fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)
    return np.where(hit & valid & (lo < n), lo, -1).astype(np.int64)
