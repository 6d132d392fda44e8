"""The write route's body decoder (``server/body.py: parse_write_body``) against orjson.

The decoder reads the ``vector`` number arrays of upserts straight into float64
(``DecodedVector``) and leaves every body it is not sure about to orjson. These tests hold it to
orjson on JSON text built to hit the differences between the two parsers (number spellings,
integers past 64 bits, ``-0``, nested arrays, ``[`` inside strings, duplicate keys, a byte order
mark): the body it gives is orjson's, value for value and type for type, each decoded vector has
the float64 bits orjson's floats have, and ``parse_write`` accepts and refuses exactly the same
writes, with the same messages and the same columns.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lagoon.errors import InvalidRequest
from lagoon.schema import Schema
from lagoon.server.body import _decode_vectors, parse_json_object, parse_write_body
from lagoon.values import DecodedVector
from lagoon.wire.write import parse_write

DIMS = 4
DecodedBody = dict[str, Any] | None

TOKENS = [
    "-0", "-0.0", "0", "0.0", "1e5", "1E+2", "2.5e-3", "-7", "1e-400", "5e-324", "3.4028235e38",
    "3.4028236e38", "3.40282357e38", "1e39", "18446744073709551615", "9223372036854775808",
    "-9223372036854775808", "0.1000000000000000055511151231257827", "16777217", "9007199254740993",
]  # fmt: skip
"""Number spellings both parsers read: the decoder keeps the body for itself."""
NOT_NUMBERS = ["true", "false", "null", '"1.5"', "{}", '{"a":1}']
BEYOND = [
    "1e400", "-1e400", "18446744073709551616", "-9223372036854775809", "123456789012345678901234567890",
    "[1]", "[]", "[[1]]",
]  # fmt: skip
"""What simdjson refuses and orjson reads (or refuses itself), and arrays inside a vector (which
``as_buffer`` would flatten): the body goes to orjson."""
NUMERIC = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers(-(2**63), 2**64 - 1).map(str),
    st.integers(-300, 300).map(str),
    st.sampled_from(TOKENS),
)
NUMBER = st.one_of(NUMERIC, st.sampled_from(NOT_NUMBERS))
HOSTILE_NUMBER = st.one_of(NUMBER, st.integers(-(2**70), 2**70).map(str), st.sampled_from(BEYOND))
SPACE = st.sampled_from(["", "", " ", "\n  "])


@st.composite
def vector_text(draw: st.DrawFn, number: st.SearchStrategy[str] = NUMBER, hostile: bool = True) -> str:
    """A ``vector`` value: mostly DIMS numbers, else base64, null, another length (``hostile``:
    as often as numbers; else rarely, so that most bodies hold one matrix of vectors)."""
    kind = draw(st.sampled_from(["numbers"] * (3 if hostile else 12) + ["base64", "null", "short"]))
    if not hostile and draw(st.integers(0, 9)):
        number = NUMERIC  # no bool, null, string or object among them
    if kind == "base64":
        values = draw(st.lists(st.floats(-1e3, 1e3, width=32), min_size=DIMS, max_size=DIMS))
        return orjson.dumps(base64.b64encode(np.asarray(values, "<f4").tobytes()).decode()).decode()
    if kind == "null":
        return "null"
    size = draw(st.integers(0, DIMS + 1)) if kind == "short" else DIMS
    sep = draw(st.sampled_from([",", ", ", " ,\t"]))
    return (
        "[" + draw(SPACE) + sep.join(draw(st.lists(number, min_size=size, max_size=size))) + draw(SPACE) + "]"
    )


TITLE = st.one_of(
    st.text(max_size=6), st.sampled_from(["[draft]", "a]b", "x\\u005b", "\u00e9", "\U0001f30a"])
)


@st.composite
def row_text(draw: st.DrawFn, ident: int, hostile: bool) -> str:
    number = HOSTILE_NUMBER if hostile else NUMBER
    entries = [f'"id":{ident}']
    entries.append('"vector":' + draw(vector_text(number, hostile)))
    if draw(st.booleans()):
        title = TITLE if hostile else TITLE.filter(lambda t: "[" not in t)  # a "[" in a string: orjson's
        entries.append('"title":' + orjson.dumps(draw(title)).decode())
    if draw(st.booleans()):
        entries.append(f'"n":{draw(number)}')
    if draw(st.integers(0, 9)) == 0:
        entries.append('"tags":' + orjson.dumps(draw(st.lists(st.text(max_size=2), max_size=2))).decode())
    if hostile and draw(st.integers(0, 5)) == 0:  # a duplicate key, another value: orjson keeps the last
        entries.append(
            draw(st.sampled_from(['"vector":' + draw(vector_text(number)), f'"id":{ident + 100}', '"n":1']))
        )
    order = draw(st.permutations(entries))
    return "{" + ",".join(order) + "}"


@st.composite
def body_text(draw: st.DrawFn, hostile: bool = True) -> bytes:
    """A write body as JSON text. ``hostile``: with what sends a body to orjson (numbers beyond
    64 bits or float64, a "[" inside a string, duplicate keys, a byte order mark); else only what
    the decoder reads itself, up to 8 documents (most vectors of one length: one matrix)."""
    n = draw(st.integers(1, 4 if hostile else 8))
    number = HOSTILE_NUMBER if hostile else NUMBER
    if draw(st.booleans()):
        rows = [draw(row_text(i, hostile)) for i in range(n)]
        payload = '"upsert_rows":[' + ",".join(rows) + "]"
    else:
        vectors = [draw(vector_text(number, hostile)) for _ in range(n)]
        payload = f'"upsert_columns":{{"id":{list(range(n))},"vector":[' + ",".join(vectors) + "]}"
    parts = [payload]
    if draw(st.booleans()):
        parts.append('"distance_metric":"cosine_distance"')
    if draw(st.integers(0, 9)) == 0:
        extra = ['"schema":{"vector":{"type":"string"}}'] + ([payload] if hostile else [])
        parts.append(draw(st.sampled_from(extra)))
    text = draw(SPACE) + "{" + ",".join(draw(st.permutations(parts))) + "}" + draw(SPACE)
    prefix = "\ufeff" if hostile and draw(st.integers(0, 19)) == 0 else ""
    return (prefix + text).encode()


def _plain(value: Any) -> Any:
    if isinstance(value, DecodedVector):
        return value.as_list()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _decoded(value: Any) -> list[DecodedVector]:
    if isinstance(value, DecodedVector):
        return [value]
    if isinstance(value, list):
        return [d for v in value for d in _decoded(v)]
    if isinstance(value, dict):
        return [d for v in value.values() for d in _decoded(v)]
    return []


SCHEMAS = [
    Schema(),
    Schema.from_storage(
        {
            "id_type": "uint",
            "distance_metric": "cosine_distance",
            "attributes": {"vector": {"type": f"[{DIMS}]f32", "ann": {}}},
        }
    ),
    Schema.from_storage(
        {
            "id_type": "uint",
            "distance_metric": "cosine_distance",
            "attributes": {"vector": {"type": f"[{DIMS}]i8", "ann": {}}},
        }
    ),
    Schema.from_storage({"id_type": "uint", "attributes": {"vector": {"type": "string"}}}),
]


def _outcome(body: Any, schema: Schema) -> Any:
    try:
        w = parse_write(body, schema)
    except InvalidRequest as e:
        return ("refused", e.message)
    columns = {
        k: (str(c.type), c.to_pylist()) for k, c in w.upserts.columns.items()
    }  # floats exact, -0.0 kept
    return (w.schema, w.upserts.ids, orjson.dumps(columns), w.logical_bytes)


def _reads_as_orjson(raw: bytes) -> DecodedBody:
    """The decoder's body of ``raw`` (None: it left ``raw`` to orjson) after checking that
    ``parse_write_body`` gives orjson's body, or orjson's refusal, and that ``parse_write``
    accepts and refuses the same writes with the same columns as on orjson's lists."""
    fast = _decode_vectors(raw)
    try:
        expected = orjson.loads(raw)
    except orjson.JSONDecodeError:
        assert fast is None
        with pytest.raises(InvalidRequest) as want:
            parse_json_object(raw)
        with pytest.raises(InvalidRequest) as got:
            parse_write_body(raw)
        assert got.value.message == want.value.message
        return None
    if fast is not None:  # values and their types (1 vs 1.0, -0.0 vs 0), keys in order
        assert orjson.dumps(_plain(fast)) == orjson.dumps(expected)
        for vector in _decoded(fast):
            want_bits = np.asarray(vector.as_list(), dtype=np.float64).view(np.uint64)
            assert np.array_equal(vector.values.view(np.uint64), want_bits)
        for schema in SCHEMAS:
            assert _outcome(fast, schema) == _outcome(expected, schema)
    body = parse_write_body(raw)
    assert orjson.dumps(_plain(body)) == orjson.dumps(expected)
    for schema in SCHEMAS:
        assert _outcome(body, schema) == _outcome(expected, schema)
    return fast


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=body_text(hostile=True))
def test_the_decoder_reads_what_orjson_reads(raw: bytes) -> None:
    _reads_as_orjson(raw)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=body_text(hostile=False))
def test_the_decoder_reads_ordinary_bodies_itself_as_orjson_does(raw: bytes) -> None:
    """Bodies without what sends one to orjson are the decoder's own (its vectors joined into a
    matrix), and every document and column entry keeps its own vector through ``parse_write``."""
    assert _reads_as_orjson(raw) is not None


def _vectors(n: int, dims: int = 128) -> np.ndarray:
    return np.random.default_rng(7).standard_normal((n, dims)).astype(np.float32)


def test_json_vectors_of_rows_and_columns_are_decoded_to_arrays() -> None:
    vectors = _vectors(3)
    rows = {"upsert_rows": [{"id": i, "vector": v.tolist(), "title": "t"} for i, v in enumerate(vectors)]}
    columns = {"upsert_columns": {"id": [0, 1, 2], "vector": vectors.tolist(), "title": ["a", "b", "c"]}}
    for body in (rows, columns):
        got = parse_write_body(orjson.dumps(body))
        decoded = _decoded(got)
        assert len(decoded) == 3
        assert np.array_equal(np.stack([d.values for d in decoded]).astype(np.float32), vectors)
        assert _plain(got) == orjson.loads(orjson.dumps(body))


def test_bodies_the_decoder_is_not_sure_about_are_orjsons() -> None:
    vector = "[0.5,1,2,3]"
    for raw in (
        b"\xef\xbb\xbf"
        + b'{"upsert_rows":[{"id":1,"vector":'
        + vector.encode()
        + b"}]}",  # orjson refuses a BOM
        b'{"upsert_rows":[{"id":1,"vector":[[0.5],1,2,3]}]}',  # nested: as_buffer would flatten it
        b'{"upsert_rows":[{"id":1,"vector":' + vector.encode() + b',"vector":[9,9,9,9]}]}',  # last key wins
        b'{"upsert_rows":[{"id":1,"vector":[1,2,3,123456789012345678901234567890]}]}',  # a big integer
        b'{"upsert_columns":{"id":[1,2],"vector":[[[1],2],[3,[4]]]}}',  # flattened: 2 x 2 numbers
    ):
        assert _decode_vectors(raw) is None
        try:
            want: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            with pytest.raises(InvalidRequest, match="not valid JSON"):
                parse_write_body(raw)
            continue
        assert parse_write_body(raw) == want


def test_base64_bodies_go_to_orjson_without_the_walk() -> None:
    b64 = base64.b64encode(_vectors(1)[0].tobytes()).decode()
    raw = orjson.dumps({"upsert_rows": [{"id": 1, "vector": b64}]})
    body = parse_write_body(raw)
    assert body == orjson.loads(raw) and not _decoded(body)


def _reachable(root: Any) -> list[Any]:
    """The objects reachable from ``root`` through references (the garbage collector's view),
    not through classes, modules or functions (the rest of the interpreter)."""
    import gc
    import types

    skip = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.CodeType)
    seen: dict[int, Any] = {}
    todo = [root]
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, skip) or type(obj).__name__ == "cython_function_or_method":
            continue
        seen[id(obj)] = obj
        todo.extend(gc.get_referents(obj))
    return list(seen.values())


def test_decoded_vectors_do_not_keep_the_parsers_document() -> None:
    """A decoded body holds no simdjson object: one would keep the parser's whole document (about
    3.5 times the body) alive for as long as the write is in flight. ``as_list`` still gives the
    lists orjson builds, for rows and for columns."""
    import simdjson

    text = (
        b'{"upsert_rows": [{"id": 1, "vector": [1, 2.5, -0.0, 3]}, {"id": 2, "vector": [4, 5, 6, 7]}],'
        b' "upsert_columns": {"id": [3], "vector": [[0.5, 1, 2, 3e2]]}}'
    )
    body = parse_write_body(text)
    vectors = [r["vector"] for r in body["upsert_rows"]] + body["upsert_columns"]["vector"]
    assert all(isinstance(v, DecodedVector) for v in vectors)
    kinds = (simdjson.Parser, simdjson.Object, simdjson.Array)
    held = [type(o).__name__ for o in _reachable(body) if isinstance(o, kinds)]
    assert held == []
    want = orjson.loads(text)
    assert [v.as_list() for v in vectors] == [r["vector"] for r in want["upsert_rows"]] + want[
        "upsert_columns"
    ]["vector"]
    assert [type(x) for x in vectors[0].as_list()] == [int, float, float, int]


FINITE = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr),
    st.floats(-1e6, 1e6).map(repr),
    st.integers(-(2**40), 2**40).map(str),
)


@st.composite
def decodable_rows(draw: st.DrawFn) -> bytes:
    """``upsert_rows`` bodies the decoder always reads itself (finite numbers, no big integers):
    most documents hold a vector of the same length, some a null, another length or none."""
    rows = []
    for ident in range(draw(st.integers(1, 12))):
        title = draw(TITLE.filter(lambda t: "[" not in t))  # a "[" in a string goes to orjson
        entries = [f'"id":{ident}', '"title":' + orjson.dumps(title).decode()]
        kind = draw(st.sampled_from(["vector"] * 6 + ["null", "none", "short"]))
        if kind != "none":
            size = draw(st.integers(0, DIMS + 1)) if kind == "short" else DIMS
            numbers = draw(st.lists(FINITE, min_size=size, max_size=size))
            entries.append('"vector":' + ("null" if kind == "null" else "[" + ",".join(numbers) + "]"))
        rows.append("{" + ",".join(draw(st.permutations(entries))) + "}")
    return ('{"distance_metric":"cosine_distance","upsert_rows":[' + ",".join(rows) + "]}").encode()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=decodable_rows())
def test_rows_decoded_into_one_matrix_validate_as_orjsons_lists(raw: bytes) -> None:
    """The decoder joins the rows' vectors into one matrix and ``coerce_vectors`` takes that
    matrix as it is: every document keeps its own vector, nulls and odd lengths included."""
    body = _decode_vectors(raw)
    assert body is not None
    expected = orjson.loads(raw)
    assert orjson.dumps(_plain(body)) == orjson.dumps(expected)
    for schema in SCHEMAS:
        assert _outcome(body, schema) == _outcome(expected, schema)
