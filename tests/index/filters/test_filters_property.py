"""Property test: Filter.evaluate agrees with a naive per-row oracle on random tables and filters.

The oracle below is written from the operator table in docs/filters.md, row by row in plain
Python, and shares no code with lagoon.index.filters.tree (globs are matched from the generated token
structure, not from the pattern text).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lagoon.index.filters.parse import parse_filter
from lagoon.schema import AttributeSchema, AttrType, Schema

ALPHABET = "abAB"
SCHEMA = Schema(
    "uint",
    {
        "i": AttributeSchema(AttrType("int")),
        "f": AttributeSchema(AttrType("float")),
        "s": AttributeSchema(AttrType("string")),
        "b": AttributeSchema(AttrType("bool")),
        "tags": AttributeSchema(AttrType("string", array=True)),
        "nums": AttributeSchema(AttrType("int", array=True)),
    },
)
ARROW = {
    "i": pa.int64(),
    "f": pa.float64(),
    "s": pa.string(),
    "b": pa.bool_(),
    "tags": pa.list_(pa.string()),
    "nums": pa.list_(pa.int64()),
}
REFS = ("i", "s", "tags", "nums")

ints = st.integers(-3, 3)
floats = st.sampled_from([-1.5, 0.0, 0.5, 2.0, 3.0])
strs = st.text(ALPHABET, max_size=3)
bools = st.booleans()
SCALAR_VALUES = {"i": ints, "f": st.one_of(floats, ints), "s": strs, "b": bools}
CELL = {
    "i": st.none() | ints,
    "f": st.none() | floats,
    "s": st.none() | strs,
    "b": st.none() | bools,
    "tags": st.none() | st.lists(st.text(ALPHABET, max_size=2), max_size=3),
    "nums": st.none() | st.lists(ints, max_size=3),
}
ELEMENT = {"tags": st.text(ALPHABET, max_size=2), "nums": ints}
ELEMENT_REF = {"tags": "s", "nums": "i"}  # the scalar column whose kind matches the elements

# ---------------------------------------------------------------------------------- globs

GlobToken = tuple[Any, ...]
glob_token = st.one_of(
    st.tuples(st.just("lit"), st.sampled_from(ALPHABET)),
    st.tuples(st.just("any")),
    st.tuples(st.just("star")),
    st.tuples(st.just("class"), st.booleans(), st.text(ALPHABET, min_size=1, max_size=3)),
    st.tuples(st.just("alt"), st.lists(st.text(ALPHABET, min_size=1, max_size=2), min_size=1, max_size=3)),
)
glob_tokens = st.lists(glob_token, max_size=4)


def render_glob(tokens: list[GlobToken]) -> str:
    out = []
    for t in tokens:
        if t[0] == "lit":
            out.append(t[1])
        elif t[0] == "any":
            out.append("?")
        elif t[0] == "star":
            out.append("*")
        elif t[0] == "class":
            out.append("[" + ("!" if t[1] else "") + t[2] + "]")
        else:
            out.append("{" + ",".join(t[1]) + "}")
    return "".join(out)


def glob_matches(tokens: list[GlobToken], text: str, ci: bool) -> bool:
    fold = (lambda c: c.lower()) if ci else (lambda c: c)

    @functools.cache
    def m(ti: int, si: int) -> bool:
        if ti == len(tokens):
            return si == len(text)
        t = tokens[ti]
        if t[0] == "star":
            return any(m(ti + 1, k) for k in range(si, len(text) + 1))
        if t[0] == "alt":
            return any(
                text[si : si + len(alt)].__len__() == len(alt)
                and fold(text[si : si + len(alt)]) == fold(alt)
                and m(ti + 1, si + len(alt))
                for alt in t[1]
            )
        if si >= len(text):
            return False
        c = text[si]
        if t[0] == "lit":
            ok = fold(c) == fold(t[1])
        elif t[0] == "any":
            ok = True
        else:
            inside = fold(c) in {fold(x) for x in t[2]}
            ok = inside != t[1]
        return ok and m(ti + 1, si + 1)

    return m(0, 0)


# ---------------------------------------------------------------------------------- filters


def ref(attr: str) -> dict[str, str]:
    return {"$ref_new": attr}


@st.composite
def scalar_leaf(draw: st.DrawFn) -> Any:
    attr = draw(st.sampled_from(["i", "f", "s", "b"]))
    value = SCALAR_VALUES[attr]
    kind = draw(st.sampled_from(["cmp", "in", "ref", "ref_in"]))
    if kind == "cmp":
        op = draw(st.sampled_from(["Eq", "NotEq", "Lt", "Lte", "Gt", "Gte"]))
        return [attr, op, draw(st.none() | value)]
    if kind == "in":
        op = draw(st.sampled_from(["In", "NotIn"]))
        return [attr, op, draw(st.lists(st.none() | value, max_size=draw(st.sampled_from([3, 12]))))]
    if kind == "ref" and attr in ("i", "s"):
        return [attr, draw(st.sampled_from(["Eq", "NotEq", "Lt", "Lte", "Gt", "Gte"])), ref(attr)]
    if attr in ("i", "s"):
        return [attr, draw(st.sampled_from(["In", "NotIn"])), ref("nums" if attr == "i" else "tags")]
    return [attr, "Eq", draw(st.none() | value)]


@st.composite
def array_leaf(draw: st.DrawFn) -> Any:
    attr = draw(st.sampled_from(["tags", "nums"]))
    elem = ELEMENT[attr]
    kind = draw(st.sampled_from(["eq", "contains", "any_of", "any_cmp", "ref_elem", "ref_list"]))
    if kind == "eq":
        return [attr, draw(st.sampled_from(["Eq", "NotEq"])), draw(st.none() | st.lists(elem, max_size=3))]
    if kind == "contains":
        return [attr, draw(st.sampled_from(["Contains", "NotContains"])), draw(elem)]
    if kind == "any_of":
        op = draw(st.sampled_from(["ContainsAny", "NotContainsAny"]))
        return [attr, op, draw(st.lists(elem, max_size=draw(st.sampled_from([3, 12]))))]
    if kind == "any_cmp":
        return [attr, draw(st.sampled_from(["AnyLt", "AnyLte", "AnyGt", "AnyGte"])), draw(elem)]
    if kind == "ref_elem":
        ops = ["Contains", "NotContains", "AnyLt", "AnyLte", "AnyGt", "AnyGte"]
        return [attr, draw(st.sampled_from(ops)), ref(ELEMENT_REF[attr])]
    ops = ["ContainsAny", "NotContainsAny", "Eq", "NotEq"]
    return [attr, draw(st.sampled_from(ops)), ref(attr)]


@st.composite
def glob_leaf(draw: st.DrawFn) -> Any:
    attr = draw(st.sampled_from(["s", "tags", "zz"]))
    op = draw(st.sampled_from(["Glob", "NotGlob", "IGlob", "NotIGlob"]))
    tokens = draw(glob_tokens)
    return [attr, op, render_glob(tokens), tokens]  # the 4th element is for the oracle only


@st.composite
def unknown_leaf(draw: st.DrawFn) -> Any:
    op = draw(
        st.sampled_from(
            ["Eq", "NotEq", "Lt", "Lte", "Gt", "Gte", "Contains", "NotContains", "AnyLt", "AnyGte"]
        )
    )
    if op in ("Contains", "NotContains", "AnyLt", "AnyGte"):
        return ["zz", op, draw(ints)]
    if draw(st.booleans()):
        return ["zz", draw(st.sampled_from(["In", "NotIn", "ContainsAny"])), draw(st.lists(st.none() | ints))]
    return ["zz", op, draw(st.none() | ints)]


leaf = st.one_of(scalar_leaf(), array_leaf(), glob_leaf(), unknown_leaf())
filters = st.recursive(
    leaf,
    lambda inner: st.one_of(
        st.tuples(st.just("And"), st.lists(inner, min_size=1, max_size=3)).map(list),
        st.tuples(st.just("Or"), st.lists(inner, min_size=1, max_size=3)).map(list),
        st.sampled_from([["And", []], ["Or", []]]),
        st.tuples(st.just("Not"), inner).map(list),
    ),
    max_leaves=8,
)


def to_wire(f: Any) -> Any:
    """Drop the oracle-only glob tokens."""
    if f[0] in ("And", "Or"):
        return [f[0], [to_wire(c) for c in f[1]]]
    if f[0] == "Not":
        return ["Not", to_wire(f[1])]
    return f[:3]


# ---------------------------------------------------------------------------------- the oracle

NEGATIVE = {
    "NotEq": "Eq",
    "NotIn": "In",
    "NotContains": "Contains",
    "NotContainsAny": "ContainsAny",
    "NotGlob": "Glob",
    "NotIGlob": "IGlob",
}
LESS = {"Lt": lambda a, b: a < b, "Lte": lambda a, b: a <= b}
MORE = {"Gt": lambda a, b: a > b, "Gte": lambda a, b: a >= b}


def oracle(f: Any, row: dict[str, Any]) -> bool:
    head = f[0]
    if head == "And" and len(f) == 2:
        return all(oracle(c, row) for c in f[1])
    if head == "Or" and len(f) == 2:
        return any(oracle(c, row) for c in f[1])
    if head == "Not" and len(f) == 2:
        return not oracle(f[1], row)
    attr, op, value = f[0], f[1], f[2]
    if op in NEGATIVE:
        return not oracle([attr, NEGATIVE[op], *f[2:]], row)
    x = row.get(attr)  # unknown attributes and missing columns are None
    v = row.get("$ref_new." + value["$ref_new"]) if isinstance(value, dict) else value
    if op == "Eq":
        if v is None or x is None:
            return v is None and x is None
        return list(x) == list(v) if isinstance(x, list) else x == v
    if op == "In":
        if v is None:
            return False
        if x is None:
            return any(e is None for e in v)
        return any(e is not None and e == x for e in v)
    if op in LESS:
        if v is None:
            return False
        return True if x is None else LESS[op](x, v)
    if op in MORE:
        return v is not None and x is not None and MORE[op](x, v)
    if x is None or v is None:
        return False
    if op == "Contains":
        return any(e == v for e in x)
    if op == "ContainsAny":
        return any(e == w for e in x for w in v)
    if op.startswith("Any"):
        cmp = {**LESS, **MORE}[op[3:]]
        return any(cmp(e, v) for e in x)
    if op in ("Glob", "IGlob"):
        tokens = f[3]
        items = x if isinstance(x, list) else [x]
        return any(glob_matches(tokens, e, op == "IGlob") for e in items)
    raise AssertionError(f"oracle does not know {op}")


# ---------------------------------------------------------------------------------- tables


@st.composite
def tables(draw: st.DrawFn) -> tuple[list[dict[str, Any]], pa.Table]:
    n = draw(st.integers(0, 12))
    stored = [a for a in ARROW if draw(st.integers(0, 9)) > 0]  # sometimes a column is missing
    refs = [a for a in REFS if draw(st.integers(0, 5)) > 0]
    rows: list[dict[str, Any]] = []
    for _ in range(n):
        row = {a: draw(CELL[a]) for a in stored}
        row.update({"$ref_new." + a: draw(CELL[a]) for a in refs})
        rows.append(row)
    cols: dict[str, pa.Array] = {"id": pa.array(range(n), pa.uint64())}
    for a in stored:
        cols[a] = pa.array([r[a] for r in rows], ARROW[a])
    for a in refs:
        cols["$ref_new." + a] = pa.array([r["$ref_new." + a] for r in rows], ARROW[a])
    table = pa.table(cols)
    layout = draw(st.sampled_from(["one", "chunks", "sliced"]))
    if layout == "chunks" and n:
        table = pa.Table.from_batches(table.to_batches(max_chunksize=draw(st.integers(1, n))))
    elif layout == "sliced" and n:
        table = pa.concat_tables([table.slice(0, 1), table]).combine_chunks().slice(1)
    return rows, table


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=tables(), fs=st.lists(filters, min_size=1, max_size=6))
def test_evaluate_matches_the_oracle(data: tuple[list[dict[str, Any]], pa.Table], fs: list[Any]) -> None:
    rows, table = data
    for f in fs:
        flt = parse_filter(to_wire(f), SCHEMA, allow_ref_new=True, max_depth=64)
        got = flt.evaluate(table)
        assert got.dtype == np.bool_ and got.shape == (len(rows),)
        want = [oracle(f, r) for r in rows]
        assert got.tolist() == want, flt.describe()


@st.composite
def wide_tables(draw: st.DrawFn) -> tuple[list[dict[str, Any]], pa.Table]:
    """``tables``' rows repeated past several 64-row words, laid out as Arrow gives columns to a
    filter: one chunk, chunks of odd sizes, or a slice at an offset that is not a whole byte (the
    boolean results then carry that offset, and a chunk boundary falls inside a byte)."""
    rows, _ = draw(tables())
    rows = rows * draw(st.sampled_from([1, 7, 23]))
    lead = draw(st.integers(1, 9))
    n = len(rows)
    cols: dict[str, pa.Array] = {"id": pa.array(range(n), pa.uint64())}
    for name in rows[0] if rows else ():
        kind = ARROW[name.removeprefix("$ref_new.")]
        cols[name] = pa.array([None] * lead + [r[name] for r in rows], kind)
        cols[name] = cols[name].slice(lead)
    table = pa.table(cols)
    if n and draw(st.booleans()):
        table = pa.Table.from_batches(table.to_batches(max_chunksize=draw(st.integers(1, max(1, n // 2)))))
    return rows, table


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=wide_tables(), fs=st.lists(filters, min_size=1, max_size=4))
def test_evaluate_bits_matches_the_oracle_and_the_mask(
    data: tuple[list[dict[str, Any]], pa.Table], fs: list[Any]
) -> None:
    """``evaluate_bits`` (Arrow's bitmaps kept as bits, nulls by each operator's rule) sets
    exactly the rows the oracle matches and ``evaluate``'s mask holds, with the right count and
    nothing set past the last row."""
    rows, table = data
    for f in fs:
        flt = parse_filter(to_wire(f), SCHEMA, allow_ref_new=True, max_depth=64)
        bits = flt.evaluate_bits(table)
        want = [oracle(f, r) for r in rows]
        assert bits.n == len(rows) and bits.mask.tolist() == want, flt.describe()
        assert bits.count == sum(want)
        assert np.array_equal(bits.mask, flt.evaluate(table))
        tail = np.unpackbits(bits.data, bitorder="little")[len(rows) :]
        assert not tail.any(), flt.describe()
