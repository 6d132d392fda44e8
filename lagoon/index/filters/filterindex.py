"""The ``flt.<attr>`` file: a sorted-values index of one filterable scalar attribute, answering
Eq / In / Lt / Lte / Gt / Gte (and their negations, as complements) without scanning the column.

Layout (sections): ``dict`` (an Arrow IPC stream of one column ``v``: the distinct non-null values
in ascending order, typed as the attribute), ``value_ptr`` (int64[n_distinct + 1]), ``rows``
(uint32[n_non_null]: the rows of value i are ``rows[value_ptr[i]:value_ptr[i+1]]``, ascending)
and ``null_rows`` (uint32, ascending). Order: numbers numerically, datetimes by ms, strings by
code point (= UTF-8 bytes), uuids by their 16 bytes. Float columns store -0.0 as 0.0; a float
column holding NaN gets no index (scans decide NaN semantics).

``match`` follows ``lagoon.index.filters.tree`` exactly (docs/filters.md): ``Eq null`` matches null
rows, ``In`` with a null matches them too, ``Lt``/``Lte`` with a non-null operand also match null
rows (null sorts first), a null operand makes a range match nothing. A value range is one
contiguous slice of ``rows``, so a query costs two binary searches plus the rows it returns; when
more than half the rows match, ``match`` returns the (smaller) complement instead. Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lagoon.errors import DataCorruption
from lagoon.format.segment import MAGIC_FLT, SectionFile, SectionWriter, gather_runs
from lagoon.schema import AttributeSchema, AttrType

INDEXED_KINDS = ("string", "int", "uint", "float", "datetime", "uuid")
OPS = ("Eq", "In", "Lt", "Lte", "Gt", "Gte")


def indexable(a: AttributeSchema) -> bool:
    """Attributes that get a filter index: filterable scalars of an ordered type."""
    t = a.type
    return a.filterable and not t.is_vector and not t.array and t.kind in INDEXED_KINDS


def single(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        return col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    return col


def _ipc(arr: pa.Array) -> bytes:
    sink = pa.BufferOutputStream()
    table = pa.table({"v": arr})
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


def build_filter_index(
    attr: str, atype: AttrType, column: pa.ChunkedArray
) -> tuple[bytes, dict[str, Any]] | None:
    """The framed flt file of ``column`` (segment row order), or None when there is nothing to
    index (every value null) or the column cannot be indexed (float NaN)."""
    arr = single(column)
    n = len(arr)
    if arr.null_count == n:
        return None
    valid = np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    null_rows = np.flatnonzero(~valid).astype("<u4")
    rows_nn = np.flatnonzero(valid).astype(np.int64)
    vals = arr.drop_null()
    if atype.kind == "float":
        if pc.any(pc.is_nan(vals)).as_py():
            return None
        vals = pc.add(vals, pa.scalar(0.0))  # -0.0 -> 0.0
    key = vals.cast(pa.binary()) if pa.types.is_fixed_size_binary(vals.type) else vals
    order = np.asarray(pc.sort_indices(key).to_numpy(zero_copy_only=False), dtype=np.int64)
    sorted_vals = vals.take(pa.array(order))
    sorted_key = key.take(pa.array(order))
    srows = rows_nn[order]
    m = len(sorted_vals)
    change = np.ones(m, dtype=bool)
    if m > 1:
        neq = pc.not_equal(sorted_key.slice(1), sorted_key.slice(0, m - 1))
        change[1:] = np.asarray(neq.to_numpy(zero_copy_only=False), dtype=bool)
    starts = np.flatnonzero(change).astype(np.int64)
    values = sorted_vals.take(pa.array(starts))
    value_ptr = np.append(starts, m).astype("<i8")
    w = SectionWriter()
    w.add_bytes("dict", _ipc(values))
    w.add("value_ptr", value_ptr)
    w.add("rows", srows.astype("<u4"))
    w.add("null_rows", null_rows)
    meta = {
        "attr": attr,
        "type": str(atype),
        "n_rows": n,
        "n_values": m,
        "n_distinct": len(values),
        "null_count": int(null_rows.shape[0]),
    }
    summary = {"kind": "flt", "attr": attr, "distinct": len(values), "nulls": int(null_rows.shape[0])}
    return w.finish(MAGIC_FLT, meta), summary


class FilterIndex:
    """A loaded flt file (zero-copy arrays over the file bytes)."""

    def __init__(self, sf: SectionFile, n_rows: int, atype: AttrType) -> None:
        what = sf.what
        meta = sf.meta
        if meta.get("type") != str(atype) or meta.get("n_rows") != n_rows:
            raise DataCorruption(f"{what}: written for another type or row count")
        try:
            with pa.ipc.open_stream(pa.py_buffer(sf.array("dict", "|u1"))) as reader:
                dict_table = reader.read_all()
            self.values: pa.Array = single(dict_table.column("v"))
            self.values.validate(full=True)
            if self.values.type != atype.arrow_type() or self.values.null_count:
                raise ValueError(f"dictionary of type {self.values.type} with nulls")
        except (pa.ArrowException, KeyError, ValueError, OSError) as e:
            raise DataCorruption(f"{what}: unreadable value dictionary ({e})") from None
        self.kind = atype.kind
        self.value_ptr = sf.array("value_ptr", "<i8")
        self.rows = sf.array("rows", "<u4")
        self.null_rows = sf.array("null_rows", "<u4")
        d = len(self.values)
        m = self.rows.shape[0]
        if (
            self.value_ptr.shape != (d + 1,)
            or self.value_ptr[0] != 0
            or self.value_ptr[-1] != m
            or np.any(np.diff(self.value_ptr) <= 0)
            or m + self.null_rows.shape[0] != n_rows
            or (m and int(self.rows.max()) >= n_rows)
            or (self.null_rows.shape[0] and int(self.null_rows.max()) >= n_rows)
        ):
            raise DataCorruption(f"{what}: index arrays are inconsistent")
        self.n_rows = n_rows
        self.keys: np.ndarray | None = None
        if self.kind in ("int", "uint", "float"):
            self.keys = np.asarray(self.values.to_numpy(zero_copy_only=False))
        elif self.kind == "datetime":
            self.keys = np.asarray(self.values.cast(pa.int64()).to_numpy(zero_copy_only=False))

    # ------------------------------------------------------------------------------------- match

    def match(self, op: str, value: Any) -> tuple[np.ndarray, bool] | None:
        """Rows matching the positive operator ``op`` (Eq, In, Lt, Lte, Gt, Gte) against the
        canonical literal ``value``: (rows int64, complement). ``complement`` True means "every row
        except these". None when this index cannot answer (e.g. a literal of another type)."""
        m = self.rows.shape[0]
        ranges: list[tuple[int, int]] = []
        nulls = False
        if op == "Eq":
            if value is None:
                nulls = True
            else:
                r = self._value_range(value)
                if r is None:
                    return None
                ranges.append(r)
        elif op == "In":
            for v in value:
                if v is None:
                    nulls = True
                    continue
                r = self._value_range(v)
                if r is None:
                    return None
                ranges.append(r)
        elif op in ("Lt", "Lte", "Gt", "Gte"):
            if value is None:
                return np.zeros(0, np.int64), False
            b = self._bound(value, "left" if op in ("Lt", "Gte") else "right")
            if b is None:
                return None
            cut = int(self.value_ptr[b])
            if op in ("Lt", "Lte"):
                ranges.append((0, cut))
                nulls = True
            else:
                ranges.append((cut, m))
        else:
            return None
        return self._select(ranges, nulls)

    def _value_range(self, v: Any) -> tuple[int, int] | None:
        lo = self._bound(v, "left")
        hi = self._bound(v, "right")
        if lo is None or hi is None:
            return None
        return int(self.value_ptr[lo]), int(self.value_ptr[hi])

    def _bound(self, v: Any, side: str) -> int | None:
        """How many distinct values are < v (left) or <= v (right); None: not comparable here."""
        d = len(self.values)
        if self.keys is not None:
            keys = self.keys
            if isinstance(v, bool) or not isinstance(v, int | float):
                return None
            if keys.dtype.kind in "iu":
                if not isinstance(v, int):
                    return None
                info = np.iinfo(keys.dtype)
                if v < info.min:
                    return 0
                if v > info.max:
                    return d
                return int(np.searchsorted(keys, keys.dtype.type(v), side=side))  # type: ignore[call-overload]
            return int(np.searchsorted(keys, float(v) + 0.0, side=side))  # type: ignore[call-overload]
        if self.kind == "string":
            if not isinstance(v, str):
                return None
        elif not isinstance(v, bytes):
            return None
        lo, hi = 0, d
        values = self.values
        while lo < hi:  # binary search over the sorted dictionary: O(log d) scalar reads
            mid = (lo + hi) // 2
            x = values[mid].as_py()
            if x < v or (side == "right" and x == v):
                lo = mid + 1
            else:
                hi = mid
        return lo

    def _select(self, ranges: list[tuple[int, int]], nulls: bool) -> tuple[np.ndarray, bool]:
        m = self.rows.shape[0]
        rs = sorted({(lo, hi) for lo, hi in ranges if hi > lo})
        starts = np.array([r[0] for r in rs], np.int64)
        ends = np.array([r[1] for r in rs], np.int64)
        count = int((ends - starts).sum()) + (self.null_rows.shape[0] if nulls else 0)
        complement = count > self.n_rows // 2
        if complement:  # the gaps between the (disjoint, sorted) ranges, and the other null side
            starts, ends = np.r_[0, ends], np.r_[starts, m]
            nulls = not nulls
        parts = [self.rows[gather_runs(starts, ends - starts)]]
        if nulls:
            parts.append(self.null_rows)
        return np.concatenate(parts).astype(np.int64), complement
