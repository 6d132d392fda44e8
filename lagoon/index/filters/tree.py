"""Filter expressions: turbopuffer's JSON filter grammar -> a typed tree -> a boolean mask over Arrow.

Role. ``parse_filter`` checks a filter (``filters``, ``delete_by_filter``, ``patch_by_filter``,
``*_condition``) against a namespace ``Schema`` and returns a ``Filter`` tree whose literals are
already in canonical form (``lagoon.values``: datetime = int ms, uuid = 16 bytes, float attributes
take ints). ``Filter.evaluate(table)`` returns one bool per row of a ``pyarrow.Table`` of documents
(column ``id`` plus one column per attribute, typed by ``AttrType.arrow_type()``). Index-backed
planning (bitmaps, sorted values) lives elsewhere; it can walk ``Filter.conditions()``. The
semantics, including every operator's null behaviour, are specified in ``docs/filters.md``.

Invariants.
- Every error in the input is an ``InvalidRequest`` raised by ``parse_filter``, naming the problem
  and the attribute. ``evaluate`` never raises ``InvalidRequest``; it raises ``InternalError``
  only for a caller bug (no token matcher, a column of the wrong type, a bad matcher result).
- Two-valued logic: every node gives True or False for every row, never null. ``Not`` is the exact
  complement, and each negative operator is exactly ``Not`` of its positive twin (``NotEq`` of
  ``Eq``, ``NotIn`` of ``In``, ``NotContains``, ``NotContainsAny``, ``NotGlob``, ``NotIGlob``).
- A missing or null value is "null". ``Eq null`` matches it, ``Lt``/``Lte`` with a non-null operand
  match it (null sorts first), every other positive operator does not match it, and an operand
  that is null (a ``null`` literal or a null ``$ref_new`` value) makes ``Lt``/``Lte``/``Gt``/``Gte``
  match nothing. A column absent from the table, and an attribute absent from the schema, are null
  in every row.
- ``evaluate`` is vectorised: a constant amount of Python work per node, the rest in
  ``pyarrow.compute`` and numpy kernels. Arrays are handled by flattening them and scattering the
  element results back to rows by ``list_parent_indices``.
- Pure: no I/O, no clocks, no global state. Trees are immutable and safe to share across threads.

``$ref_new`` (conditional writes). With ``allow_ref_new=True`` a value may be
``{"$ref_new": "attr"}``: the attribute's value in the NEW document of the same row. The caller
adds those values to the table as columns named ``ref_new_column(attr)`` (``"$ref_new.<attr>"``),
typed like the attribute; a missing column means null (as for deletes). Comparisons are then
column against column, row by row, with the same null rules as literals.

Token operators. ``ContainsAllTokens``, ``ContainsAnyToken`` and ``ContainsTokenSequence`` need the
attribute's text analysis, which this module does not own. ``evaluate`` calls the query engine's
``token_matcher(attr, op, query, params, table) -> numpy bool array (len = table.num_rows)`` with
``query`` the filter's string or list of tokens as given, and ``params`` a fresh dict
(``{"last_as_prefix": True}`` or ``{}``). The matcher decides null rows (it should not match
them); the column may be absent from the table when the matcher reads an index instead.
"""

from __future__ import annotations

import json
import math
import string
import uuid as uuidlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import regex as fuzzy_regex

from lagoon.errors import InternalError, InvalidRequest
from lagoon.index.cancel import checkpoint, match_in_slices
from lagoon.schema import AttributeSchema, AttrType, Schema, id_arrow_type
from lagoon.values import coerce_id, coerce_scalar, format_datetime, json_kind

__all__ = [
    "ALL_OPS",
    "MAX_DEPTH",
    "MAX_LIST_VALUES",
    "MAX_NODES",
    "REF_NEW_PREFIX",
    "And",
    "Condition",
    "Filter",
    "Mask",
    "Not",
    "Or",
    "TokenMatcher",
    "glob_to_regex",
    "parse_filter",
    "ref_new_column",
]

Mask: TypeAlias = npt.NDArray[np.bool_]
TokenMatcher: TypeAlias = Callable[[str, str, str | list[str], dict[str, Any], pa.Table], Mask]

MAX_DEPTH = 16  # nesting levels; a bare condition is depth 1
MAX_NODES = 4096  # conditions + And/Or/Not nodes
MAX_LIST_VALUES = 10_000  # values in one In / ContainsAny / array literal / token list
MAX_PATTERN_CHARS = 4096  # Glob / Regex pattern length
MAX_TEXT_CHARS = 8192  # token-operator query length (turbopuffer's FTS query limit)
REF_NEW_PREFIX = "$ref_new."
_SMALL_IN = 8  # In lists up to this size run as equality scans on fixed-width columns (faster than hashing)
_SMALL_IN_STRINGS = 3  # string equality scans cost more; hashing wins sooner

EQ_OPS = ("Eq", "NotEq")
IN_OPS = ("In", "NotIn")
RANGE_OPS = ("Lt", "Lte", "Gt", "Gte")
CONTAINS_OPS = ("Contains", "NotContains")
CONTAINS_ANY_OPS = ("ContainsAny", "NotContainsAny")
ANY_OPS = ("AnyLt", "AnyLte", "AnyGt", "AnyGte")
GLOB_OPS = ("Glob", "NotGlob", "IGlob", "NotIGlob")
TOKEN_OPS = ("ContainsAllTokens", "ContainsAnyToken", "ContainsTokenSequence")
ALL_OPS = (
    EQ_OPS
    + IN_OPS
    + RANGE_OPS
    + CONTAINS_OPS
    + CONTAINS_ANY_OPS
    + ANY_OPS
    + GLOB_OPS
    + ("Regex",)
    + TOKEN_OPS
    + ("Fuzzy",)
)
ID_OPS = EQ_OPS + IN_OPS + RANGE_OPS
_UNSUPPORTED_OPS: dict[str, str] = {}
MAX_FUZZY_DISTANCE = 2
_NEGATIVE = {
    "NotEq": "Eq",
    "NotIn": "In",
    "NotContains": "Contains",
    "NotContainsAny": "ContainsAny",
    "NotGlob": "Glob",
    "NotIGlob": "IGlob",
}
_CMP = {"Lt": pc.less, "Lte": pc.less_equal, "Gt": pc.greater, "Gte": pc.greater_equal}
_ANY_CMP = {"AnyLt": "Lt", "AnyLte": "Lte", "AnyGt": "Gt", "AnyGte": "Gte"}
_TOKEN_PARAMS: dict[str, frozenset[str]] = {
    "ContainsAllTokens": frozenset({"last_as_prefix"}),
    "ContainsAnyToken": frozenset({"last_as_prefix"}),
    "ContainsTokenSequence": frozenset(),
}
_COMBINATORS = ("And", "Or", "Not")


def ref_new_column(attr: str) -> str:
    """The table column that carries the new document's value of ``attr`` for ``$ref_new``."""
    return REF_NEW_PREFIX + attr


# --------------------------------------------------------------------------------------------
# The tree
# --------------------------------------------------------------------------------------------


class Filter(ABC):
    """A parsed filter. Build with ``parse_filter``; immutable."""

    __slots__ = ()

    def evaluate(self, table: pa.Table, *, token_matcher: TokenMatcher | None = None) -> Mask:
        """One bool per row of ``table``: does the row match? See the module docstring."""
        try:
            return self._eval(_Ctx(table, token_matcher))
        except pa.ArrowException as e:  # a column not typed as the schema says: a caller bug
            raise InternalError(f"filter {self.describe()[:200]} failed on this table: {e}") from e

    @abstractmethod
    def _eval(self, ctx: _Ctx) -> Mask: ...

    @abstractmethod
    def conditions(self) -> Iterator[Condition]:
        """The leaf conditions, left to right."""

    @abstractmethod
    def describe(self) -> str:
        """Compact one-line text for explain plans, e.g. ``And(year Gte 2010, cat In ["a", "b"])``."""

    def attributes(self) -> set[str]:
        """The stored attributes (and ``id``) this filter reads."""
        return {c.attr for c in self.conditions()}

    def ref_new_attributes(self) -> set[str]:
        """The attributes of the new document referenced with ``$ref_new``."""
        return {c.ref_new for c in self.conditions() if c.ref_new is not None}

    def __str__(self) -> str:
        return self.describe()


@dataclass(frozen=True, slots=True)
class And(Filter):
    children: tuple[Filter, ...]

    def _eval(self, ctx: _Ctx) -> Mask:
        out = np.ones(ctx.n, dtype=bool)
        for child in self.children:
            if not out.any():
                break
            checkpoint()
            np.logical_and(out, child._eval(ctx), out=out)
        return out

    def conditions(self) -> Iterator[Condition]:
        for c in self.children:
            yield from c.conditions()

    def describe(self) -> str:
        return "And(" + ", ".join(c.describe() for c in self.children) + ")"


@dataclass(frozen=True, slots=True)
class Or(Filter):
    children: tuple[Filter, ...]

    def _eval(self, ctx: _Ctx) -> Mask:
        out = np.zeros(ctx.n, dtype=bool)
        for child in self.children:
            if out.all() and ctx.n:
                break
            checkpoint()
            np.logical_or(out, child._eval(ctx), out=out)
        return out

    def conditions(self) -> Iterator[Condition]:
        for c in self.children:
            yield from c.conditions()

    def describe(self) -> str:
        return "Or(" + ", ".join(c.describe() for c in self.children) + ")"


@dataclass(frozen=True, slots=True)
class Not(Filter):
    child: Filter

    def _eval(self, ctx: _Ctx) -> Mask:
        return np.logical_not(self.child._eval(ctx))

    def conditions(self) -> Iterator[Condition]:
        yield from self.child.conditions()

    def describe(self) -> str:
        return f"Not({self.child.describe()})"


@dataclass(frozen=True, slots=True)
class Condition(Filter):
    """``[attr, op, value(, params)]`` with ``value`` canonical.

    ``value``: a scalar or None (Eq, NotEq, Lt..Gte, Contains, Any*), a tuple (In, NotIn,
    ContainsAny, NotContainsAny, Eq/NotEq on an array attribute; In may hold None), the pattern
    (Glob, Regex), or a string / tuple of tokens (token operators). Unused when ``ref_new`` is set.
    ``attr_type`` is None for an attribute the schema does not know (read as all null);
    ``ref_type`` likewise for the ``$ref_new`` attribute. ``regex`` is the RE2 program for
    Glob/IGlob/Regex, or None when ``fast`` = (``"equals"`` | ``"prefix"`` | ``"suffix"`` |
    ``"substring"``, text) says what a case-sensitive glob reduces to (cheaper kernels; a planner
    may also use a prefix for a range scan).
    """

    attr: str
    op: str
    value: Any
    attr_type: AttrType | None
    ref_new: str | None = None
    ref_type: AttrType | None = None
    params: tuple[tuple[str, Any], ...] = ()
    regex: str | None = None
    fast: tuple[str, str] | None = None
    fuzzy: tuple[int, bool] | None = None  # Fuzzy: (edit distance that applies or -1, case_sensitive)

    def conditions(self) -> Iterator[Condition]:
        yield self

    def describe(self) -> str:
        if self.ref_new is not None:
            shown = ref_new_column(self.ref_new)
        else:
            shown = _show_value(self.value, self.attr_type)
        text = f"{self.attr} {self.op} {shown}"
        if self.params:
            text += " " + json.dumps(dict(self.params), separators=(",", ":"))
        return text

    # -- evaluation ----------------------------------------------------------------------------

    def _eval(self, ctx: _Ctx) -> Mask:
        if self.op in TOKEN_OPS:
            return ctx.match_tokens(self)
        positive = _NEGATIVE.get(self.op)
        if positive is None:
            return self._positive(self.op, ctx)
        return np.logical_not(self._positive(positive, ctx))

    def _positive(self, op: str, ctx: _Ctx) -> Mask:
        x = ctx.column(self.attr) if self.attr_type is not None else None
        if self.ref_new is not None:
            v = ctx.column(ref_new_column(self.ref_new)) if self.ref_type is not None else None
            if x is None:
                return _null_stored_vs_ref(op, v, ctx.n)
            if v is None:
                return _vs_null(op, x, ctx.n)
            return self._vs_column(op, x, v, ctx.n)
        if x is None:
            return _null_stored_vs_literal(op, self.value, ctx.n)
        return self._vs_literal(op, x, ctx.n)

    def _scalar(self, value: Any) -> Any:
        t = self.attr_type
        if t is None:  # pragma: no cover - unknown attributes never reach a typed comparison
            raise InternalError("filter on an unknown attribute compared as typed")
        return pa.scalar(value, type=_scalar_arrow_type(t, self.attr))

    def _vs_literal(self, op: str, x: Column, n: int) -> Mask:
        value = self.value
        is_array = self.attr_type is not None and self.attr_type.array
        if op == "Eq":
            if value is None:
                return _to_mask(x.is_null())
            if is_array:
                return _list_eq_literal(_single(x), value, self._element_type(), n)
            return _to_mask(pc.equal(x, self._scalar(value)))
        if op == "In":
            present = [v for v in value if v is not None]
            out = _to_mask(self._is_in(x, present))
            if len(present) != len(value):
                out |= _to_mask(x.is_null())
            return out
        if op in _CMP:
            if value is None:
                return np.zeros(n, dtype=bool)
            return _to_mask(_CMP[op](x, self._scalar(value)), null=op in ("Lt", "Lte"))
        if op == "Fuzzy":
            return _fuzzy_mask(x, self.value, self.fuzzy or (-1, True), n, is_array)
        if op in ("Glob", "IGlob", "Regex") and not is_array:
            return _to_mask(self._match_strings(x))
        # Array operators: flatten, test the elements, scatter back to rows.
        arr = _single(x)
        flat, parents = pc.list_flatten(arr), _parents(arr)
        if op == "Contains":
            hits = pc.equal(flat, self._scalar(value))
        elif op == "ContainsAny":
            hits = self._is_in(flat, list(value))
        elif op in _ANY_CMP:
            hits = _CMP[_ANY_CMP[op]](flat, self._scalar(value))
        elif op in ("Glob", "IGlob", "Regex"):
            hits = self._match_strings(flat)
        else:  # pragma: no cover - parse_filter admits no other operator
            raise InternalError(f"filter operator {op} has no array evaluation")
        return _scatter(n, parents, _to_mask(hits))

    def _vs_column(self, op: str, x: Column, v: Column, n: int) -> Mask:
        """Row-wise comparison of the stored column ``x`` with the new document's column ``v``."""
        if op == "Eq":
            both_null = _to_mask(x.is_null()) & _to_mask(v.is_null())
            if self.attr_type is not None and self.attr_type.array:
                return _list_eq_column(_single(x), _single(_cast_like(v, x.type)), n) | both_null
            return _to_mask(pc.equal(x, _cast_like(v, x.type))) | both_null
        if op in _CMP:
            out = _to_mask(_CMP[op](x, _cast_like(v, x.type)))
            if op in ("Lt", "Lte"):
                out |= _to_mask(x.is_null()) & _to_mask(v.is_valid())
            return out
        if op in ("Contains", *_ANY_CMP):
            arr = _single(x)
            flat, parents = pc.list_flatten(arr), _parents(arr)
            rep = _single(_cast_like(v, flat.type)).take(pa.array(parents))
            cmp = pc.equal if op == "Contains" else _CMP[_ANY_CMP[op]]
            return _scatter(n, parents, _to_mask(cmp(flat, rep)))
        if op == "In":
            arr = _single(v)
            flat, parents = pc.list_flatten(arr), _parents(arr)
            rep = _single(_cast_like(x, flat.type)).take(pa.array(parents))
            return _scatter(n, parents, _to_mask(pc.equal(flat, rep)))
        if op == "ContainsAny":
            return _rows_intersect(_single(x), _single(_cast_like(v, x.type)), n)
        raise InternalError(f"filter operator {op} has no $ref_new evaluation")  # pragma: no cover

    def _match_strings(self, strings: Any) -> Any:
        if self.fast is None:
            regex = self.regex
            return match_in_slices(strings, lambda part: pc.match_substring_regex(part, pattern=regex))
        kind, text = self.fast
        return match_in_slices(strings, lambda part: _match_fast(part, kind, text))

    def _element_type(self) -> pa.DataType:
        t = self.attr_type
        if t is None:  # pragma: no cover
            raise InternalError("filter on an unknown attribute compared as typed")
        return _scalar_arrow_type(AttrType(t.kind), self.attr)

    def _is_in(self, col: Column, values: list[Any]) -> Any:
        """Boolean (nulls where ``col`` is null) ``col in values``; a few equality scans beat hashing."""
        small = _SMALL_IN_STRINGS if _is_stringish(col.type) else _SMALL_IN
        if not values or len(values) > small:
            return pc.is_in(col, value_set=self._value_set(values, col.type))
        out = None
        for v in values:
            hit = pc.equal(col, self._scalar(v))
            out = hit if out is None else pc.or_(out, hit)
        return out

    def _value_set(self, values: list[Any], target: pa.DataType) -> pa.Array:
        arr = pa.array(values, type=self._element_type())
        return arr if arr.type == target else _cast(arr, target)


# --------------------------------------------------------------------------------------------
# Evaluation helpers
# --------------------------------------------------------------------------------------------

Column: TypeAlias = Any  # pa.Array | pa.ChunkedArray (pyarrow is untyped)


class _Ctx:
    __slots__ = ("_cols", "n", "table", "token_matcher")

    def __init__(self, table: pa.Table, token_matcher: TokenMatcher | None) -> None:
        self.table = table
        self.n: int = table.num_rows
        self.token_matcher = token_matcher
        self._cols: dict[str, Column] = {}

    def column(self, name: str) -> Column | None:
        """The column ``name`` (dictionaries decoded), or None when the table lacks it."""
        if name in self._cols:
            return self._cols[name]
        if name not in self.table.column_names:
            return None
        col = self.table.column(name)
        if pa.types.is_dictionary(col.type):
            col = _cast(col, col.type.value_type)
        self._cols[name] = col
        return col

    def match_tokens(self, cond: Condition) -> Mask:
        if self.token_matcher is None:
            raise InternalError(f"filter {cond.describe()!r} needs a token_matcher and none was given")
        query = cond.value if isinstance(cond.value, str) else list(cond.value)
        out = self.token_matcher(cond.attr, cond.op, query, dict(cond.params), self.table)
        res = np.asarray(out)
        if res.dtype != np.bool_ or res.shape != (self.n,):
            raise InternalError(
                f"token_matcher returned {res.dtype}{list(res.shape)} for {cond.op}; "
                f"expected a bool array of {self.n} rows"
            )
        return res


def _is_plain_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _fuzzy_mask(x: Column, query: str, rule: tuple[int, bool], n: int, is_array: bool) -> Mask:
    """Rows with a value (an element, for arrays) containing a substring within ``distance``
    Levenshtein edits of ``query``; each distinct value is tested once."""
    distance, case_sensitive = rule
    if distance < 0:
        return np.zeros(n, dtype=bool)
    arr = _single(x)
    parents = None
    if is_array:
        parents = _parents(arr)
        arr = pc.list_flatten(arr)
    if not case_sensitive:
        arr = pc.utf8_lower(arr)
        query = query.lower()
    if distance == 0:
        hits = _to_mask(pc.match_substring(arr, pattern=query))
    else:
        distinct = pc.unique(arr).drop_null()
        pattern = fuzzy_regex.compile(f"(?:{fuzzy_regex.escape(query)}){{e<={distance}}}")
        found = np.fromiter(
            (pattern.search(v) is not None for v in distinct.to_pylist()), dtype=bool, count=len(distinct)
        )
        where = np.asarray(pc.index_in(arr, value_set=distinct).fill_null(-1).to_numpy(zero_copy_only=False))
        hits = np.zeros(len(arr), dtype=bool)
        valid = where >= 0
        hits[valid] = found[where[valid]]
    return hits if parents is None else _scatter(n, parents, hits)


def _is_stringish(t: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_fixed_size_binary(t)
    )


def _match_fast(strings: Any, kind: str, text: str) -> Any:
    """A case-sensitive glob reduced to an equality, prefix, suffix or substring test."""
    if kind == "equals":
        return pc.equal(strings, pa.scalar(text, type=pa.string()))
    if kind == "prefix":
        return pc.starts_with(strings, pattern=text)
    if kind == "suffix":
        return pc.ends_with(strings, pattern=text)
    return pc.match_substring(strings, pattern=text)


def _to_mask(arr: Any, *, null: bool = False) -> Mask:
    """A pyarrow boolean (Chunked)Array -> numpy bools, nulls replaced by ``null``."""
    if arr.null_count:
        arr = arr.fill_null(null)
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=bool)


def _single(col: Column) -> Any:
    """A ChunkedArray as one contiguous Array (no copy when it has one chunk)."""
    if isinstance(col, pa.ChunkedArray):
        if col.num_chunks == 1:
            return col.chunk(0)
        if col.num_chunks == 0:
            return pa.array([], type=col.type)
        return col.combine_chunks()
    return col


def _parents(list_array: Any) -> npt.NDArray[np.int64]:
    return np.asarray(pc.list_parent_indices(list_array).to_numpy(zero_copy_only=False), dtype=np.int64)


def _scatter(n: int, parents: npt.NDArray[np.int64], hits: Mask) -> Mask:
    out = np.zeros(n, dtype=bool)
    out[parents[hits]] = True
    return out


def _cast(arr: Any, target: pa.DataType) -> Any:
    try:
        return pc.cast(arr, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
        raise InternalError(f"filter: cannot compare a column of type {arr.type} as {target}: {e}") from e


def _cast_like(col: Column, target: pa.DataType) -> Column:
    return col if col.type == target else _cast(col, target)


def _scalar_arrow_type(t: AttrType, attr: str) -> pa.DataType:
    if attr == "id":
        return id_arrow_type(t.kind)
    return AttrType(t.kind).arrow_type()


def _null_stored_vs_literal(op: str, value: Any, n: int) -> Mask:
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


def _null_stored_vs_ref(op: str, v: Column | None, n: int) -> Mask:
    """A positive operator on an all-null stored column, against the new document's column."""
    if op == "Eq":
        return np.ones(n, dtype=bool) if v is None else _to_mask(v.is_null())
    if op in ("Lt", "Lte"):
        return np.zeros(n, dtype=bool) if v is None else _to_mask(v.is_valid())
    return np.zeros(n, dtype=bool)


def _vs_null(op: str, x: Column, n: int) -> Mask:
    """A positive operator against an operand that is null in every row (missing $ref_new)."""
    if op == "Eq":
        return _to_mask(x.is_null())
    return np.zeros(n, dtype=bool)


def _list_counts(n: int, parents: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Elements per row (0 for null rows), from the parent indices of the flattened elements."""
    return np.bincount(parents, minlength=n).astype(np.int64)


def _positions(parents: npt.NDArray[np.int64], counts: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Each flattened element's index inside its own list."""
    starts = np.cumsum(counts) - counts
    return np.arange(parents.shape[0], dtype=np.int64) - starts[parents]


def _list_eq_literal(arr: Any, value: Sequence[Any], elem_type: pa.DataType, n: int) -> Mask:
    valid = _to_mask(arr.is_valid())
    flat, parents = pc.list_flatten(arr), _parents(arr)
    counts = _list_counts(n, parents)
    cand: Mask = valid & (counts == len(value))
    if not value or not cand.any():
        return cand
    sel = cand[parents]
    expected = pa.array(list(value), type=elem_type).take(pa.array(_positions(parents, counts)[sel]))
    eq = _to_mask(pc.equal(flat.filter(pa.array(sel)), _cast_like(expected, flat.type)))
    cand[parents[sel][~eq]] = False
    return cand


def _list_eq_column(x: Any, v: Any, n: int) -> Mask:
    fx, px = pc.list_flatten(x), _parents(x)
    fv, pv = pc.list_flatten(v), _parents(v)
    cx, cv = _list_counts(n, px), _list_counts(n, pv)
    cand: Mask = _to_mask(x.is_valid()) & _to_mask(v.is_valid()) & (cx == cv)
    if not cand.any():
        return cand
    sx, sv = cand[px], cand[pv]
    eq = _to_mask(pc.equal(fx.filter(pa.array(sx)), fv.filter(pa.array(sv))))
    cand[px[sx][~eq]] = False
    return cand


def _rows_intersect(x: Any, v: Any, n: int) -> Mask:
    """Row-wise: do the lists ``x[i]`` and ``v[i]`` share an element?"""
    fx, px = pc.list_flatten(x), _parents(x)
    fv, pv = pc.list_flatten(v), _parents(v)
    if len(fx) == 0 or len(fv) == 0:
        return np.zeros(n, dtype=bool)
    codes = pc.dictionary_encode(pa.concat_arrays([fx, _cast_like(fv, fx.type)])).indices
    codes_np = np.asarray(codes.to_numpy(zero_copy_only=False), dtype=np.int64)
    k = int(codes_np.max()) + 1
    kx = px * k + codes_np[: len(fx)]
    kv = pv * k + codes_np[len(fx) :]
    return _scatter(n, px, np.isin(kx, kv))


def _show_value(value: Any, t: AttrType | None) -> str:
    if isinstance(value, tuple):
        items = [_show_value(v, t) for v in value[:5]]
        if len(value) > 5:
            items.append(f"... ({len(value)} values)")
        return "[" + ", ".join(items) + "]"
    if value is None:
        return "null"
    if isinstance(value, bytes) and len(value) == 16:
        return str(uuidlib.UUID(bytes=value))
    if t is not None and t.kind == "datetime" and isinstance(value, int):
        return format_datetime(value)
    return _json(value, limit=80)


def _json(value: Any, *, limit: int = 60) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _got(value: Any) -> str:
    """``string "2020"``, ``int 5``, ``null``: a JSON value with its kind, for error messages."""
    return "null" if value is None else f"{json_kind(value)} {_json(value)}"


# --------------------------------------------------------------------------------------------
# Glob (Rust globset syntax) -> RE2
# --------------------------------------------------------------------------------------------

_PUNCT = frozenset(string.punctuation) - {"_"}
_LIT, _ANY, _ZOM, _RPREFIX, _RSUFFIX, _RZOM, _CLASS, _ALT = range(8)
_Token: TypeAlias = tuple[Any, ...]


def _re_escape(c: str) -> str:
    return "\\" + c if c in _PUNCT else c


class _GlobParser:
    """A port of globset's parser (default options: ``*`` and ``?`` cross ``/``, ``\\`` escapes)."""

    def __init__(self, glob: str, where: str) -> None:
        self.glob = glob
        self.where = where
        self.chars = glob
        self.i = 0
        self.prev: str | None = None
        self.cur: str | None = None
        self.stack: list[int] = []
        self.branches: list[list[_Token]] = [[]]

    def error(self, what: str) -> InvalidRequest:
        return InvalidRequest(f"{self.where}: invalid glob pattern {_json(self.glob)}: {what}")

    def bump(self) -> str | None:
        self.prev = self.cur
        self.cur = self.chars[self.i] if self.i < len(self.chars) else None
        if self.cur is not None:
            self.i += 1
        return self.cur

    def peek(self) -> str | None:
        return self.chars[self.i] if self.i < len(self.chars) else None

    def push(self, tok: _Token) -> None:
        self.branches[-1].append(tok)

    def parse(self) -> list[_Token]:
        while (c := self.bump()) is not None:
            if c == "?":
                self.push((_ANY,))
            elif c == "*":
                self.star()
            elif c == "[":
                self.klass()
            elif c == "{":
                self.stack.append(len(self.branches))
                self.branches.append([])
            elif c == "}":
                if not self.stack:
                    raise self.error("'}' without a matching '{'")
                start = self.stack.pop()
                alts = self.branches[start:]
                del self.branches[start:]
                self.push((_ALT, alts))
            elif c == "," and self.stack:
                self.branches.append([])
            elif c == "\\":
                nxt = self.bump()
                if nxt is None:
                    raise self.error("dangling '\\' at the end")
                self.push((_LIT, nxt))
            else:
                self.push((_LIT, c))
        if len(self.branches) > 1:
            raise self.error("'{' without a matching '}'")
        return self.branches[0]

    def star(self) -> None:
        prev = self.prev
        if self.peek() != "*":
            self.push((_ZOM,))
            return
        self.bump()
        if not self.branches[-1]:
            if self.peek() not in (None, "/"):
                self.push((_ZOM,))
                self.push((_ZOM,))
            else:
                self.push((_RPREFIX,))
                self.bump()
            return
        if prev != "/" and (len(self.branches) <= 1 or prev not in (",", "{")):
            self.push((_ZOM,))
            self.push((_ZOM,))
            return
        nxt = self.peek()
        if nxt is None or (nxt in (",", "}") and len(self.branches) >= 2):
            is_suffix = True
        elif nxt == "/":
            self.bump()
            is_suffix = False
        else:
            self.push((_ZOM,))
            self.push((_ZOM,))
            return
        last = self.branches[-1].pop()
        if last[0] in (_RPREFIX, _RSUFFIX):
            self.push(last)
        else:
            self.push((_RSUFFIX,) if is_suffix else (_RZOM,))

    def klass(self) -> None:
        negated = False
        if self.peek() in ("!", "^"):
            self.bump()
            negated = True
        ranges: list[tuple[str, str]] = []
        first, in_range = True, False
        while True:
            c = self.bump()
            if c is None:
                raise self.error("'[' without a matching ']'")
            if c == "]" and not first:
                break
            if c == "-" and not first:
                if in_range:
                    self.extend_range(ranges, "-")
                    in_range = False
                else:
                    in_range = True
            elif in_range:
                self.extend_range(ranges, c)
                in_range = False
            else:
                ranges.append((c, c))
            first = False
        if in_range:
            ranges.append(("-", "-"))
        self.push((_CLASS, negated, ranges))

    def extend_range(self, ranges: list[tuple[str, str]], end: str) -> None:
        start = ranges[-1][0]
        if end < start:
            raise self.error(f"invalid range {start}-{end}")
        ranges[-1] = (start, end)


def _tokens_to_regex(tokens: list[_Token]) -> str:
    out: list[str] = []
    for tok in tokens:
        kind = tok[0]
        if kind == _LIT:
            out.append(_re_escape(tok[1]))
        elif kind == _ANY:
            out.append(".")
        elif kind == _ZOM:
            out.append(".*")
        elif kind == _RPREFIX:
            out.append("(?:/?|.*/)")
        elif kind == _RSUFFIX:
            out.append("/.*")
        elif kind == _RZOM:
            out.append("(?:/|/.*/)")
        elif kind == _CLASS:
            body = "".join(_re_escape(a) if a == b else f"{_re_escape(a)}-{_re_escape(b)}" for a, b in tok[2])
            out.append("[" + ("^" if tok[1] else "") + body + "]")
        else:
            parts = [p for p in (_tokens_to_regex(branch) for branch in tok[1]) if p]
            if parts:
                out.append("(?:" + "|".join(parts) + ")")
    return "".join(out)


def glob_to_regex(pattern: str, *, case_insensitive: bool = False, where: str = "filters") -> str:
    """The RE2 regex, anchored at both ends, that matches what globset's ``pattern`` matches.

    ``*`` any run of characters (``/`` and newlines included), ``?`` one character, ``[abc]``,
    ``[a-z]``, ``[!abc]``/``[^abc]``, ``{a,b}`` (nestable), ``**`` path forms, ``\\`` escapes.
    Raises InvalidRequest for an unclosed ``[``/``{``, a stray ``}``, a bad range or a dangling ``\\``.
    """
    tokens = _GlobParser(pattern, where).parse()
    body = ".*" if tokens == [(_RPREFIX,)] else _tokens_to_regex(tokens)
    return "(?s" + ("i" if case_insensitive else "") + ")^" + body + "$"


def _glob_fast_path(pattern: str, where: str) -> tuple[str, str] | None:
    """What a case-sensitive glob of literals and at most a leading and a trailing ``*`` reduces to."""
    tokens = _GlobParser(pattern, where).parse()
    lead = bool(tokens) and tokens[0] == (_ZOM,)
    trail = len(tokens) > int(lead) and tokens[-1] == (_ZOM,)
    body = tokens[int(lead) : len(tokens) - int(trail)]
    if any(t[0] != _LIT for t in body):
        return None
    text = "".join(t[1] for t in body)
    kind = {
        (False, False): "equals",
        (False, True): "prefix",
        (True, False): "suffix",
        (True, True): "substring",
    }
    return kind[(lead, trail)], text


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------


def parse_filter(
    expr: Any,
    schema: Schema,
    *,
    where: str = "filters",
    allow_ref_new: bool = False,
    max_depth: int = MAX_DEPTH,
    max_nodes: int = MAX_NODES,
    max_list_values: int = MAX_LIST_VALUES,
) -> Filter:
    """Check ``expr`` (decoded JSON; tuples accepted for lists) against ``schema`` and build the tree.

    ``where`` prefixes error messages (``"upsert_condition"``, ...). ``allow_ref_new`` admits
    ``{"$ref_new": attr}`` values (write conditions only). Raises InvalidRequest.
    """
    return _Parser(schema, where, allow_ref_new, max_depth, max_nodes, max_list_values).node(expr, 1)


class _Parser:
    def __init__(
        self,
        schema: Schema,
        where: str,
        allow_ref_new: bool,
        max_depth: int,
        max_nodes: int,
        max_list_values: int,
    ) -> None:
        self.schema = schema
        self.where = where
        self.allow_ref_new = allow_ref_new
        self.max_depth = max_depth
        self.max_nodes = max_nodes
        self.max_list_values = max_list_values
        self.nodes = 0

    def error(self, message: str) -> InvalidRequest:
        return InvalidRequest(f"{self.where}: {message}")

    # -- structure -------------------------------------------------------------------------------

    def node(self, expr: Any, depth: int) -> Filter:
        if depth > self.max_depth:
            raise self.error(f"filter is nested more than {self.max_depth} levels deep")
        self.nodes += 1
        if self.nodes > self.max_nodes:
            raise self.error(f"filter has more than {self.max_nodes} conditions and combinators")
        if not isinstance(expr, list | tuple):
            raise self.error(
                f'expected a filter like [attribute, operator, value] or ["And", [...]], got {_got(expr)}'
            )
        if len(expr) == 2 and expr[0] in _COMBINATORS:
            return self.combinator(expr[0], expr[1], depth)
        if len(expr) in (3, 4):
            return self.condition(expr)
        if len(expr) == 2 and isinstance(expr[0], str) and expr[0].capitalize() in _COMBINATORS:
            raise self.error(f"unknown combinator {expr[0]!r}; did you mean {expr[0].capitalize()!r}?")
        raise self.error(
            "a filter is [attribute, operator, value], [attribute, operator, value, params], "
            f'["And", [filters]], ["Or", [filters]] or ["Not", filter]; got {len(expr)} elements: '
            f"{_json(expr)}"
        )

    def combinator(self, name: str, arg: Any, depth: int) -> Filter:
        if name == "Not":
            return Not(self.node(arg, depth + 1))
        if not isinstance(arg, list | tuple):
            raise self.error(f"{name} expects an array of filters, got {_got(arg)}")
        if arg and isinstance(arg[0], str):
            raise self.error(
                f'{name} expects an array of filters like ["{name}", [[...], [...]]]; '
                f"got what looks like a single filter {_json(arg)}"
            )
        children = tuple(self.node(child, depth + 1) for child in arg)
        return And(children) if name == "And" else Or(children)

    # -- conditions ------------------------------------------------------------------------------

    def condition(self, expr: Sequence[Any]) -> Condition:
        attr, op, value = expr[0], expr[1], expr[2]
        if not isinstance(attr, str) or not attr:
            raise self.error(f"expected an attribute name as the first element, got {_json(attr)}")
        if not isinstance(op, str):
            raise self.error(f"expected an operator name as the second element, got {_json(op)}")
        if op in _UNSUPPORTED_OPS:
            raise self.error(f"{_UNSUPPORTED_OPS[op]} (attribute {attr!r})")
        if op not in ALL_OPS:
            hint = next((o for o in ALL_OPS if o.lower() == op.lower()), None)
            suffix = f"; did you mean {hint!r}?" if hint else f"; expected one of {', '.join(ALL_OPS)}"
            raise self.error(f"unknown filter operator {op!r}{suffix}")
        params: dict[str, Any] = {}
        if op == "Fuzzy":
            if len(expr) != 4:
                raise self.error(
                    f'Fuzzy takes [attribute, "Fuzzy", text, {{"max_edit_distance": [...]}}] on {attr!r}'
                )
        elif len(expr) == 4:
            if op not in TOKEN_OPS:
                raise self.error(
                    f"{op} takes [attribute, operator, value]; got a 4th element {_json(expr[3])}"
                )
            params = self.token_params(op, expr[3])
        ref = self.ref_new(value, attr, op)
        if attr == "id":
            return self.id_condition(op, value, ref)
        spec = self.schema.get(attr)
        if spec is None:
            return self.unknown_condition(attr, op, value, ref)
        self.check_allowed(attr, op, spec)
        t = spec.type
        if op in TOKEN_OPS:
            return Condition(attr, op, self.token_query(attr, op, value), t, params=tuple(params.items()))
        if op in GLOB_OPS or op == "Regex":
            return self.pattern_condition(attr, op, value, t, ref)
        if op == "Fuzzy":
            return self.fuzzy_condition(attr, value, expr[3], t)
        if ref is not None:
            return self.ref_condition(attr, op, t, ref)
        return Condition(attr, op, self.typed_value(attr, op, value, t), t)

    def ref_new(self, value: Any, attr: str, op: str) -> str | None:
        if not isinstance(value, dict):
            return None
        if set(value) != {"$ref_new"}:
            raise self.error(
                f"unexpected object {_json(value)} as the value of {op} on {attr!r}"
                + ('; the only object value is {"$ref_new": "attr"}' if self.allow_ref_new else "")
            )
        if not self.allow_ref_new:
            raise self.error(f"$ref_new is only allowed in write conditions (found in {op} on {attr!r})")
        name = value["$ref_new"]
        if not isinstance(name, str) or not name:
            raise self.error(f"$ref_new expects an attribute name, got {_json(name)}")
        if op in GLOB_OPS or op in TOKEN_OPS or op in ("Regex", "Fuzzy"):
            raise self.error(f"$ref_new is not supported with {op} (attribute {attr!r})")
        return name

    def ref_type(self, name: str) -> AttrType | None:
        if name == "id":
            return AttrType(self.schema.id_type) if self.schema.id_type else None
        spec = self.schema.get(name)
        if spec is None:
            return None
        if spec.type.is_vector:
            raise self.error(f"$ref_new {name!r} is a vector attribute, which filters cannot compare")
        return spec.type

    def check_allowed(self, attr: str, op: str, spec: AttributeSchema) -> None:
        t = spec.type
        if t.is_vector:
            raise self.error(f"attribute {attr!r} is a vector ({t}); vectors cannot be filtered")
        if op in TOKEN_OPS:
            if spec.full_text_search is None:
                raise self.error(f"{op} needs full_text_search enabled on attribute {attr!r}")
            return
        if op == "Fuzzy":
            if not spec.fuzzy:
                raise self.error(f"Fuzzy needs fuzzy: true in the schema of attribute {attr!r}")
            if t.kind != "string":
                raise self.error(f"Fuzzy applies to string and []string attributes; {attr!r} is {t}")
            return
        if op == "Regex":
            if not spec.regex:
                raise self.error(f"Regex needs regex: true in the schema of attribute {attr!r}")
        elif op in GLOB_OPS:
            if not (spec.glob or spec.filterable):
                raise self.error(f"{op} needs glob: true or filterable: true on attribute {attr!r}")
        elif not spec.filterable:
            raise self.error(f"attribute {attr!r} is not filterable (set filterable: true in the schema)")
        if op in GLOB_OPS or op == "Regex":
            if t.kind != "string":
                raise self.error(f"{op} applies to string and []string attributes; {attr!r} is {t}")
        elif op in CONTAINS_OPS + CONTAINS_ANY_OPS + ANY_OPS:
            if not t.array:
                alt = {
                    "Contains": "Eq",
                    "NotContains": "NotEq",
                    "ContainsAny": "In",
                    "NotContainsAny": "NotIn",
                }
                hint = alt.get(op, op[3:])
                raise self.error(f"{op} applies to array attributes; {attr!r} is {t} (use {hint})")
        elif op in IN_OPS + RANGE_OPS and t.array:
            hint = {"In": "ContainsAny", "NotIn": "NotContainsAny"}.get(op, "Any" + op)
            raise self.error(f"{op} does not apply to array attribute {attr!r} ({t}); use {hint}")

    def typed_value(self, attr: str, op: str, value: Any, t: AttrType) -> Any:
        """The canonical literal for ``op`` on an attribute of type ``t`` (schema-checked)."""
        if op in EQ_OPS:
            if value is None:
                return None
            if t.array:
                return self.scalars(attr, op, value, t, allow_null=False)
            return self.scalar(attr, op, value, t)
        if op in IN_OPS:
            return self.scalars(attr, op, value, t, allow_null=True)
        if op in CONTAINS_ANY_OPS:
            return self.scalars(attr, op, value, t, allow_null=False)
        if op in RANGE_OPS:
            return None if value is None else self.scalar(attr, op, value, t)
        # Contains / Any*: one element value, never null.
        if value is None:
            raise self.error(f"{op} on {attr!r} needs a value; array elements are never null")
        return self.scalar(attr, op, value, t)

    def scalar(self, attr: str, op: str, value: Any, t: AttrType) -> Any:
        kind = t.kind
        if not _kind_accepts(kind, value):
            raise self.error(f"attribute {attr!r} is {t}, got {_got(value)} for {op}")
        return coerce_scalar(value, kind, where=f"{self.where}: attribute {attr!r} ({op})")

    def scalars(self, attr: str, op: str, value: Any, t: AttrType, *, allow_null: bool) -> tuple[Any, ...]:
        if not isinstance(value, list | tuple):
            raise self.error(f"{op} on {attr!r} expects an array of values, got {_got(value)}")
        if len(value) > self.max_list_values:
            raise self.error(f"{op} on {attr!r} has {len(value)} values; the limit is {self.max_list_values}")
        out: list[Any] = []
        for v in value:
            if v is None:
                if not allow_null:
                    raise self.error(f"{op} on {attr!r}: null is not allowed in the array")
                out.append(None)
            else:
                out.append(self.scalar(attr, op, v, t))
        return tuple(out)

    def ref_condition(self, attr: str, op: str, t: AttrType, ref: str) -> Condition:
        rt = self.ref_type(ref)
        if rt is not None:
            self.check_ref_types(attr, op, t, ref, rt)
        return Condition(attr, op, None, t, ref_new=ref, ref_type=rt)

    def check_ref_types(self, attr: str, op: str, t: AttrType, ref: str, rt: AttrType) -> None:
        if op in EQ_OPS or op in RANGE_OPS:
            want = t
        elif op in CONTAINS_OPS or op in ANY_OPS:
            want = AttrType(t.kind)
        elif op in IN_OPS or op in CONTAINS_ANY_OPS:
            want = AttrType(t.kind, array=True)
        else:  # pragma: no cover
            raise self.error(f"$ref_new is not supported with {op}")
        if rt != want:
            raise self.error(f"{op} on {attr!r} ({t}) needs $ref_new of type {want}; {ref!r} is {rt}")

    def pattern_condition(
        self, attr: str, op: str, value: Any, t: AttrType | None, ref: str | None
    ) -> Condition:
        if not isinstance(value, str):
            raise self.error(f"{op} on {attr!r} expects a pattern string, got {_got(value)}")
        if len(value) > MAX_PATTERN_CHARS:
            raise self.error(f"{op} pattern on {attr!r} is longer than {MAX_PATTERN_CHARS} characters")
        fast: tuple[str, str] | None = None
        if op == "Regex":
            regex = value
        else:
            ci = op in ("IGlob", "NotIGlob")
            regex = glob_to_regex(value, case_insensitive=ci, where=self.where)
            if not ci:
                fast = _glob_fast_path(value, self.where)
        try:
            pc.match_substring_regex(pa.array([""], type=pa.string()), pattern=regex)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise self.error(f"invalid {op} pattern {_json(value)} on {attr!r}: {e}") from None
        return Condition(attr, op, value, t, regex=None if fast else regex, fast=fast)

    def fuzzy_condition(self, attr: str, value: Any, raw: Any, t: AttrType) -> Condition:
        """``[attr, "Fuzzy", text, {"max_edit_distance": [{"min_query_chars", "distance"}…],
        "case_sensitive"?}]``: the edit distance that applies is the largest ``distance`` whose
        ``min_query_chars`` the text reaches (codepoints); none applies -> the filter matches
        nothing. ``min_query_chars`` must be at least 3·(distance + 1), distance at most 2."""
        if not isinstance(value, str):
            raise self.error(f"Fuzzy on {attr!r} expects a text string, got {_got(value)}")
        if len(value) > MAX_PATTERN_CHARS:
            raise self.error(f"Fuzzy text on {attr!r} is longer than {MAX_PATTERN_CHARS} characters")
        if not isinstance(raw, dict):
            raise self.error(f'Fuzzy on {attr!r}: expected {{"max_edit_distance": [...]}}, got {_json(raw)}')
        unknown = sorted(set(raw) - {"max_edit_distance", "case_sensitive"})
        if unknown:
            raise self.error(
                f"Fuzzy on {attr!r}: unknown parameter(s) {', '.join(map(repr, unknown))}; "
                "expected max_edit_distance, case_sensitive"
            )
        case_sensitive = raw.get("case_sensitive", True)
        if not isinstance(case_sensitive, bool):
            raise self.error(f"Fuzzy on {attr!r}: case_sensitive must be true or false")
        rules = raw.get("max_edit_distance")
        if not isinstance(rules, list) or not rules:
            raise self.error(
                f"Fuzzy on {attr!r}: max_edit_distance must be a non-empty array of "
                '{"min_query_chars": n, "distance": d}'
            )
        chars = len(value)
        distance = -1
        normalised: list[dict[str, int]] = []
        for i, rule in enumerate(rules):
            w = f"Fuzzy on {attr!r}: max_edit_distance[{i}]"
            if not isinstance(rule, dict) or set(rule) != {"min_query_chars", "distance"}:
                raise self.error(f'{w}: expected {{"min_query_chars": n, "distance": d}}, got {_json(rule)}')
            d, m = rule["distance"], rule["min_query_chars"]
            if not _is_plain_int(d) or not 0 <= d <= MAX_FUZZY_DISTANCE:
                raise self.error(
                    f"{w}.distance: must be an integer from 0 to {MAX_FUZZY_DISTANCE}, got {_json(d)}"
                )
            if not _is_plain_int(m) or m < 3 * (d + 1):
                raise self.error(
                    f"{w}.min_query_chars: must be an integer of at least 3·(distance + 1) = {3 * (d + 1)}, "
                    f"got {_json(m)}"
                )
            normalised.append({"min_query_chars": m, "distance": d})
            if chars >= m:
                distance = max(distance, d)
        params = (
            ("max_edit_distance", tuple(tuple(r.items()) for r in normalised)),
            ("case_sensitive", case_sensitive),
        )
        return Condition(attr, "Fuzzy", value, t, params=params, fuzzy=(distance, case_sensitive))

    def token_params(self, op: str, raw: Any) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise self.error(f"{op} params must be an object, got {_json(raw)}")
        allowed = _TOKEN_PARAMS[op]
        unknown = set(raw) - allowed
        if unknown:
            accepted = ", ".join(sorted(allowed)) or "none"
            raise self.error(f"{op}: unknown param(s) {', '.join(sorted(unknown))} (accepted: {accepted})")
        for key, v in raw.items():
            if not isinstance(v, bool):
                raise self.error(f"{op}: param {key} must be true or false, got {_json(v)}")
        return dict(raw)

    def token_query(self, attr: str, op: str, value: Any) -> str | tuple[str, ...]:
        if isinstance(value, str):
            if len(value) > MAX_TEXT_CHARS:
                raise self.error(f"{op} query on {attr!r} is longer than {MAX_TEXT_CHARS} characters")
            return value
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            if len(value) > self.max_list_values:
                raise self.error(
                    f"{op} on {attr!r} has {len(value)} tokens; the limit is {self.max_list_values}"
                )
            return tuple(value)
        raise self.error(f"{op} on {attr!r} expects a string or an array of strings, got {_json(value)}")

    def id_condition(self, op: str, value: Any, ref: str | None) -> Condition:
        if op not in ID_OPS:
            raise self.error(f"{op} does not apply to id; id supports {', '.join(ID_OPS)}")
        id_type = self.schema.id_type
        if ref is not None:
            rt = self.ref_type(ref)
            t = AttrType(id_type) if id_type else rt
            if t is None:
                t = AttrType("string")
            elif rt is not None:
                self.check_ref_types("id", op, t, ref, rt)
            return Condition("id", op, None, t, ref_new=ref, ref_type=rt)
        where = f"{self.where}: id ({op})"
        if op in IN_OPS:
            if not isinstance(value, list | tuple):
                raise self.error(f"{op} on id expects an array of ids, got {_got(value)}")
            if len(value) > self.max_list_values:
                raise self.error(f"{op} on id has {len(value)} values; the limit is {self.max_list_values}")
            out: list[Any] = []
            for v in value:
                if v is None:
                    out.append(None)
                    continue
                canon, implied = coerce_id(v, self.schema.id_type, where=where)
                if id_type is None:
                    id_type = implied
                elif implied != id_type:  # only when the namespace has no id type yet
                    raise self.error(f"{op} on id mixes {id_type} and {implied} ids")
                out.append(canon)
            return Condition("id", op, tuple(out), AttrType(id_type or "uint"))
        if value is None:
            return Condition("id", op, None, AttrType(id_type or "uint"))
        canon, implied = coerce_id(value, id_type, where=where)
        return Condition("id", op, canon, AttrType(implied))

    def unknown_condition(self, attr: str, op: str, value: Any, ref: str | None) -> Condition:
        """An attribute the schema does not know: every row reads null; values are only shape-checked."""
        if op in TOKEN_OPS:
            raise self.error(
                f"{op} needs full_text_search enabled on attribute {attr!r}, which is not in the schema"
            )
        if op == "Regex":
            raise self.error(f"Regex needs regex: true on attribute {attr!r}, which is not in the schema")
        if op == "Fuzzy":
            raise self.error(f"Fuzzy needs fuzzy: true on attribute {attr!r}, which is not in the schema")
        if op in GLOB_OPS:
            return self.pattern_condition(attr, op, value, None, ref)
        if ref is not None:
            return Condition(attr, op, None, None, ref_new=ref, ref_type=self.ref_type(ref))
        if op in IN_OPS + CONTAINS_ANY_OPS:
            if not isinstance(value, list | tuple):
                raise self.error(f"{op} on {attr!r} expects an array of values, got {_got(value)}")
            if len(value) > self.max_list_values:
                raise self.error(
                    f"{op} on {attr!r} has {len(value)} values; the limit is {self.max_list_values}"
                )
            for v in value:
                self.check_json_scalar(attr, op, v)
            return Condition(attr, op, tuple(value), None)
        if op in CONTAINS_OPS + ANY_OPS and value is None:
            raise self.error(f"{op} on {attr!r} needs a value; array elements are never null")
        if op in EQ_OPS and isinstance(value, list | tuple):
            for v in value:
                self.check_json_scalar(attr, op, v)
            return Condition(attr, op, tuple(value), None)
        self.check_json_scalar(attr, op, value)
        return Condition(attr, op, value, None)

    def check_json_scalar(self, attr: str, op: str, value: Any) -> None:
        if value is None or isinstance(value, str | bool | int):
            return
        if isinstance(value, float) and math.isfinite(value):
            return
        raise self.error(f"{op} on {attr!r}: unexpected value {_got(value)}")


def _kind_accepts(kind: str, value: Any) -> bool:
    """Whether a JSON value has a shape ``coerce_scalar`` may accept for ``kind``."""
    if isinstance(value, bool):
        return kind == "bool"
    if kind in ("int", "uint"):
        return isinstance(value, int)
    if kind == "float":
        return isinstance(value, int | float)
    if kind in ("string",):
        return isinstance(value, str)
    if kind == "datetime":
        return isinstance(value, str | int)
    if kind == "uuid":
        return isinstance(value, str) or (isinstance(value, bytes) and len(value) == 16)
    return False
