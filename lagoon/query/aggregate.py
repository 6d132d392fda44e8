"""Aggregations over the documents a query's filters select: Count and Sum, optionally grouped.

Without ``group_by`` the result is ``{"aggregations": {label: value}}``. With it, the result is
``{"aggregation_groups": [{<group attrs>…, label: value}, …]}``: one entry per distinct key tuple
among the matching documents (a null value is a key of its own), ordered by key ascending with
nulls first, at most ``limit`` groups. A ``{name: ["ForEachUnique", array_attr]}`` entry groups each
document under every distinct element of its array (a null array: the null group; an empty one:
no group), so a document may count in several groups. ``Count`` counts documents (``["Count", attr]`` counts the
non-null values of attr); ``Sum`` adds the non-null values (int/uint sums are exact integers, float
sums are float64; the sum over no values is 0). Vectorised: one sort of group codes, reduceat sums.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lagoon.index.sources.ranks import dense_rank
from lagoon.schema import AttrType
from lagoon.values import arrow_value_to_json, id_to_json
from lagoon.wire.query import GroupKey

if TYPE_CHECKING:
    from lagoon.index.sources.protocol import DocSource
    from lagoon.wire.query import Aggregation, QueryRequest

_EXACT_INT_BOUND = float(2**62)


def run_aggregation(req: QueryRequest, src: DocSource, mask: np.ndarray) -> dict[str, Any]:
    pos = np.flatnonzero(mask)
    if not req.group_by:
        return {"aggregations": {a.label: _aggregate(a, src, pos, None, 1)[0] for a in req.aggregations}}
    keys = req.group_keys or tuple(GroupKey(n, n) for n in req.group_by)
    each = next((k for k in keys if k.each), None)
    elements: pa.Array | None = None
    if each is not None:  # one (document, distinct element) pair per row from here on
        pos, elements = _each_unique(src, each.attr, pos)
    if pos.size == 0:
        return {"aggregation_groups": []}
    ranks = [_element_rank(elements) if k.each else src.sort_rank(k.attr)[pos] for k in keys]
    codes = _codes(ranks)
    n_groups = int(codes.max()) + 1
    keep = min(n_groups, req.limit)
    order = np.argsort(codes, kind="stable")
    pos, codes = pos[order], codes[order]
    if elements is not None:
        elements = elements.take(pa.array(order))
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    # Only the first `keep` groups are returned: cut the work down to their rows.
    if keep < n_groups:
        end = int(starts[keep])
        pos, codes, starts = pos[:end], codes[:end], starts[:keep]
    groups = [dict[str, Any]() for _ in range(keep)]
    plain = [k.attr for k in keys if not k.each]
    first = src.fetch_rows(pos[starts], plain)
    for k in keys:
        if k.each and elements is not None:
            spec = src.schema.get(k.attr)
            element_type = AttrType(spec.type.kind) if spec is not None else None
            raw = elements.take(pa.array(starts)).to_pylist()
            values = [arrow_value_to_json(v, element_type) if element_type else v for v in raw]
        else:
            values = _key_json(src, k.attr, first.column(k.attr))
        for g, v in zip(groups, values, strict=True):
            g[k.name] = v
    for a in req.aggregations:
        for g, v in zip(groups, _aggregate(a, src, pos, starts, keep), strict=True):
            g[a.label] = v
    return {"aggregation_groups": groups}


def _each_unique(src: DocSource, attr: str, pos: np.ndarray) -> tuple[np.ndarray, pa.Array]:
    """ForEachUnique: (position, element) for every distinct element of each document's array.
    A document whose array is null (missing) is one pair with a null element (the null group); an
    empty array contributes nothing."""
    col = src.column(attr).take(pa.array(pos))
    arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if pa.types.is_null(arr.type):
        return pos, pa.nulls(len(pos))
    flat = pc.list_flatten(arr)
    parents = np.asarray(pc.list_parent_indices(arr).to_numpy(zero_copy_only=False), dtype=np.int64)
    if len(flat):
        value_ids = np.asarray(
            pc.dictionary_encode(flat).indices.to_numpy(zero_copy_only=False), dtype=np.int64
        )
        _, first = np.unique(np.stack([parents, value_ids], axis=1), axis=0, return_index=True)
        first = np.sort(first)
    else:
        first = np.zeros(0, dtype=np.int64)
    null_rows = np.flatnonzero(np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=bool))
    rows = np.concatenate([parents[first], null_rows])
    values = pa.concat_arrays([flat.take(pa.array(first)), pa.nulls(len(null_rows), type=flat.type)])
    return pos[rows], values


def _element_rank(values: pa.Array | None) -> np.ndarray:
    """Dense ascending rank of the elements, nulls lowest."""
    if values is None or len(values) == 0:
        return np.zeros(0 if values is None else len(values), dtype=np.int64)
    return dense_rank(pa.chunked_array([values]))


def _codes(ranks: list[np.ndarray]) -> np.ndarray:
    if len(ranks) == 1:
        _, inverse = np.unique(ranks[0], return_inverse=True)
    else:
        _, inverse = np.unique(np.stack(ranks, axis=1), axis=0, return_inverse=True)
    return np.asarray(inverse, dtype=np.int64).reshape(-1)


def group_codes(src: DocSource, attrs: Sequence[str], positions: np.ndarray) -> np.ndarray:
    """int64 group id per position; ids increase with the key tuple (nulls first)."""
    return _codes([src.sort_rank(a)[positions] for a in attrs])


def _key_json(src: DocSource, name: str, col: pa.ChunkedArray) -> list[Any]:
    if name == "id":
        return [id_to_json(v) for v in col.to_pylist()]
    a = src.schema.get(name)
    if a is None:
        return list(col.to_pylist())
    return [arrow_value_to_json(v, a.type) for v in col.to_pylist()]


def _aggregate(
    a: Aggregation, src: DocSource, pos: np.ndarray, starts: np.ndarray | None, n: int
) -> list[Any]:
    """The aggregate per group (``starts`` = group boundaries in ``pos``; None = one group)."""
    bounds = np.zeros(1, dtype=np.int64) if starts is None else starts
    if a.func == "Count" and a.attr is None:
        return _segment_counts(bounds, pos.size)
    col = src.column(a.attr or "id").take(pa.array(pos))
    valid = np.asarray(col.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    if a.func == "Count":
        return [int(x) for x in _segment_sum(valid.astype(np.int64), bounds, n)]
    kind = pa.types.is_floating(col.type)
    values = col.fill_null(0) if col.null_count else col
    arr = np.asarray(pc.cast(values, pa.float64() if kind else values.type).to_numpy(), dtype=None)
    if kind:
        return [float(x) for x in _segment_sum(arr.astype(np.float64), bounds, n)]
    approx = _segment_sum(arr.astype(np.float64), bounds, n)
    if approx.size == 0 or float(np.max(np.abs(approx))) < _EXACT_INT_BOUND:
        # Wrapping 64-bit addition is exact modulo 2**64, so a total that fits is exact.
        dtype = np.uint64 if arr.dtype == np.uint64 else np.int64
        return [int(x) for x in _segment_sum(arr.astype(dtype), bounds, n)]
    # Near the 64-bit range: exact Python integers (rare, so a per-value loop is acceptable).
    edges = [*bounds.tolist(), arr.size]
    values_py = arr.tolist()
    return [sum(values_py[edges[i] : edges[i + 1]]) for i in range(n)]


def _segment_counts(bounds: np.ndarray, total: int) -> list[Any]:
    edges = np.r_[bounds, total]
    return [int(x) for x in np.diff(edges)]


def _segment_sum(values: np.ndarray, bounds: np.ndarray, n: int) -> np.ndarray:
    if values.size == 0:
        return np.zeros(n, dtype=values.dtype)
    return np.add.reduceat(values, bounds)  # type: ignore[no-any-return]
