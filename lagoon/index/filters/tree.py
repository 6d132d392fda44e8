"""The filter tree: ``Filter`` nodes (``And``, ``Or``, ``Not``, ``Condition``) and their evaluation
to a boolean mask over an Arrow table.

Role. ``parse_filter`` (``parse.py``) checks a filter (``filters``, ``delete_by_filter``, ``patch_by_filter``,
``*_condition``) against a namespace ``Schema`` and returns a ``Filter`` tree whose literals are
already in canonical form (``lagoon.values``: datetime = int ms, uuid = 16 bytes, float attributes
take ints). ``Filter.evaluate(table)`` returns one bool per row of a ``pyarrow.Table`` of documents
(column ``id`` plus one column per attribute, typed by ``AttrType.arrow_type()``). Index-backed
planning (``filterindex.py``) walks ``Filter.conditions()``. Operator tables and limits are in
``ops.py``, the Arrow kernels in ``kernels.py``, glob compilation in ``glob.py``. The
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
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lagoon.errors import InternalError
from lagoon.index.bits import Bits
from lagoon.index.cancel import checkpoint, match_in_slices
from lagoon.index.filters.kernels import (
    cast,
    cast_like,
    fuzzy_mask,
    is_stringish,
    list_eq_column,
    list_eq_literal,
    list_parents,
    match_fast,
    null_stored_vs_literal,
    null_stored_vs_ref,
    rows_intersect,
    scalar_arrow_type,
    scatter,
    single,
    to_mask,
    vs_null,
)
from lagoon.index.filters.ops import (
    ANY_CMP,
    CMP,
    NEGATIVE,
    SMALL_IN,
    SMALL_IN_STRINGS,
    TOKEN_OPS,
    Column,
    Mask,
    TokenMatcher,
    ref_new_column,
    show_value,
)
from lagoon.schema import AttrType

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

    def evaluate_bits(self, table: pa.Table, *, token_matcher: TokenMatcher | None = None) -> Bits:
        """``evaluate`` as packed bits (lagoon/index/bits.py): a condition Arrow evaluates keeps
        its boolean bitmap (a null as the operator's null rule says), And/Or/Not combine the
        bits; only conditions computed in numpy (arrays, token operators, ``$ref_new``, Fuzzy)
        are packed from a bool mask. Equal to ``Bits.from_mask(evaluate(table))``."""
        ctx = _Ctx(table, token_matcher)
        try:
            return self.combine_bits(ctx.n, lambda c: c._leaf_bits(ctx))
        except pa.ArrowException as e:  # a column not typed as the schema says: a caller bug
            raise InternalError(f"filter {self.describe()[:200]} failed on this table: {e}") from e

    @abstractmethod
    def _eval(self, ctx: _Ctx) -> Mask: ...

    @abstractmethod
    def combine_bits(self, n: int, leaf: Callable[[Condition], Bits]) -> Bits:
        """This filter's rows among ``n`` as Bits, each condition's rows from ``leaf``:
        And/Or/Not combine them 64 rows per operation and stop once the result cannot change.
        Shared by ``evaluate_bits`` (leaves evaluated on a table) and sources that answer some
        leaves from an index (lagoon/index/sources/segment.py)."""

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

    def combine_bits(self, n: int, leaf: Callable[[Condition], Bits]) -> Bits:
        out = Bits.full(n)
        for child in self.children:
            if not out.any():
                break
            checkpoint()
            out = out & child.combine_bits(n, leaf)
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

    def combine_bits(self, n: int, leaf: Callable[[Condition], Bits]) -> Bits:
        out = Bits.full(n, False)
        for child in self.children:
            if out.count == n and n:
                break
            checkpoint()
            out = out | child.combine_bits(n, leaf)
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

    def combine_bits(self, n: int, leaf: Callable[[Condition], Bits]) -> Bits:
        return ~self.child.combine_bits(n, leaf)

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
            shown = show_value(self.value, self.attr_type)
        text = f"{self.attr} {self.op} {shown}"
        if self.params:
            text += " " + json.dumps(dict(self.params), separators=(",", ":"))
        return text

    # -- evaluation ----------------------------------------------------------------------------

    def _eval(self, ctx: _Ctx) -> Mask:
        if self.op in TOKEN_OPS:
            return ctx.match_tokens(self)
        positive = NEGATIVE.get(self.op)
        if positive is None:
            return self._positive(self.op, ctx)
        return np.logical_not(self._positive(positive, ctx))

    def combine_bits(self, n: int, leaf: Callable[[Condition], Bits]) -> Bits:
        return leaf(self)

    def _leaf_bits(self, ctx: _Ctx) -> Bits:
        """This condition's rows of ``ctx``'s table as Bits (``_eval``'s, packed where numpy computes them)."""
        if self.op in TOKEN_OPS:
            return Bits.from_mask(ctx.match_tokens(self))
        positive = NEGATIVE.get(self.op)
        op = positive or self.op
        x = ctx.column(self.attr) if self.attr_type is not None else None
        arrow = None if self.ref_new is not None or x is None else self._arrow_literal(op, x)
        if arrow is None:
            out = Bits.from_mask(self._positive(op, ctx))
        else:
            out = Bits.from_arrow(arrow[0], null=arrow[1])
        return out if positive is None else ~out

    def _positive(self, op: str, ctx: _Ctx) -> Mask:
        x = ctx.column(self.attr) if self.attr_type is not None else None
        if self.ref_new is not None:
            v = ctx.column(ref_new_column(self.ref_new)) if self.ref_type is not None else None
            if x is None:
                return null_stored_vs_ref(op, v, ctx.n)
            if v is None:
                return vs_null(op, x, ctx.n)
            return self._vs_column(op, x, v, ctx.n)
        if x is None:
            return null_stored_vs_literal(op, self.value, ctx.n)
        return self._vs_literal(op, x, ctx.n)

    def _scalar(self, value: Any) -> Any:
        t = self.attr_type
        if t is None:  # pragma: no cover - unknown attributes never reach a typed comparison
            raise InternalError("filter on an unknown attribute compared as typed")
        return pa.scalar(value, type=scalar_arrow_type(t, self.attr))

    def _arrow_literal(self, op: str, x: Column) -> tuple[Any, bool] | None:
        """The positive operator ``op`` on the stored column ``x`` against the literal, as Arrow
        evaluates it: (boolean array, what a null in it means), or None when it is computed in
        numpy (array attributes, Fuzzy, a range against null). Shared by both evaluations."""
        value = self.value
        if self.attr_type is not None and self.attr_type.array:
            if op == "Eq" and value is None:
                return x.is_null(), False
            return None
        if op == "Eq":
            return (x.is_null(), False) if value is None else (pc.equal(x, self._scalar(value)), False)
        if op == "In":
            present = [v for v in value if v is not None]
            hits = self._is_in(x, present)
            if len(present) != len(value):
                hits = pc.or_kleene(hits, x.is_null())
            return hits, False
        if op in CMP:
            if value is None:
                return None
            return CMP[op](x, self._scalar(value)), op in ("Lt", "Lte")
        if op in ("Glob", "IGlob", "Regex"):
            return self._match_strings(x), False
        return None

    def _vs_literal(self, op: str, x: Column, n: int) -> Mask:
        value = self.value
        is_array = self.attr_type is not None and self.attr_type.array
        arrow = self._arrow_literal(op, x)
        if arrow is not None:
            return to_mask(arrow[0], null=arrow[1])
        if op == "Eq":
            return list_eq_literal(single(x), value, self._element_type(), n)
        if op in CMP:  # against null: nothing
            return np.zeros(n, dtype=bool)
        if op == "Fuzzy":
            return fuzzy_mask(x, self.value, self.fuzzy or (-1, True), n, is_array)
        # Array operators: flatten, test the elements, scatter back to rows.
        arr = single(x)
        flat, parents = pc.list_flatten(arr), list_parents(arr)
        if op == "Contains":
            hits = pc.equal(flat, self._scalar(value))
        elif op == "ContainsAny":
            hits = self._is_in(flat, list(value))
        elif op in ANY_CMP:
            hits = CMP[ANY_CMP[op]](flat, self._scalar(value))
        elif op in ("Glob", "IGlob", "Regex"):
            hits = self._match_strings(flat)
        else:  # pragma: no cover - parse_filter admits no other operator
            raise InternalError(f"filter operator {op} has no array evaluation")
        return scatter(n, parents, to_mask(hits))

    def _vs_column(self, op: str, x: Column, v: Column, n: int) -> Mask:
        """Row-wise comparison of the stored column ``x`` with the new document's column ``v``."""
        if op == "Eq":
            both_null = to_mask(x.is_null()) & to_mask(v.is_null())
            if self.attr_type is not None and self.attr_type.array:
                return list_eq_column(single(x), single(cast_like(v, x.type)), n) | both_null
            return to_mask(pc.equal(x, cast_like(v, x.type))) | both_null
        if op in CMP:
            out = to_mask(CMP[op](x, cast_like(v, x.type)))
            if op in ("Lt", "Lte"):
                out |= to_mask(x.is_null()) & to_mask(v.is_valid())
            return out
        if op in ("Contains", *ANY_CMP):
            arr = single(x)
            flat, parents = pc.list_flatten(arr), list_parents(arr)
            rep = single(cast_like(v, flat.type)).take(pa.array(parents))
            cmp = pc.equal if op == "Contains" else CMP[ANY_CMP[op]]
            return scatter(n, parents, to_mask(cmp(flat, rep)))
        if op == "In":
            arr = single(v)
            flat, parents = pc.list_flatten(arr), list_parents(arr)
            rep = single(cast_like(x, flat.type)).take(pa.array(parents))
            return scatter(n, parents, to_mask(pc.equal(flat, rep)))
        if op == "ContainsAny":
            return rows_intersect(single(x), single(cast_like(v, x.type)), n)
        raise InternalError(f"filter operator {op} has no $ref_new evaluation")  # pragma: no cover

    def _match_strings(self, strings: Any) -> Any:
        if self.fast is None:
            regex = self.regex
            return match_in_slices(strings, lambda part: pc.match_substring_regex(part, pattern=regex))
        kind, text = self.fast
        return match_in_slices(strings, lambda part: match_fast(part, kind, text))

    def _element_type(self) -> pa.DataType:
        t = self.attr_type
        if t is None:  # pragma: no cover
            raise InternalError("filter on an unknown attribute compared as typed")
        return scalar_arrow_type(AttrType(t.kind), self.attr)

    def _is_in(self, col: Column, values: list[Any]) -> Any:
        """Boolean (nulls where ``col`` is null) ``col in values``; a few equality scans beat hashing."""
        small = SMALL_IN_STRINGS if is_stringish(col.type) else SMALL_IN
        if not values or len(values) > small:
            return pc.is_in(col, value_set=self._value_set(values, col.type))
        out = None
        for v in values:
            hit = pc.equal(col, self._scalar(v))
            out = hit if out is None else pc.or_(out, hit)
        return out

    def _value_set(self, values: list[Any], target: pa.DataType) -> pa.Array:
        arr = pa.array(values, type=self._element_type())
        return arr if arr.type == target else cast(arr, target)


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
            col = cast(col, col.type.value_type)
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
