"""parse_write's columnar validation against value-by-value coercion.

Upserted documents are checked a column at a time (``values.coerce_vectors``, ``DocBatch``);
these tests hold that stage to the per-value functions it replaces on the hot path: it accepts
exactly the columns ``coerce_vector`` accepts, with the same float32 values, refuses the others
with the same message, and gives the same documents and billed bytes whether they arrive as
``upsert_rows`` or ``upsert_columns``.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np
import pybase64
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lagoon.errors import InvalidRequest
from lagoon.schema import AttrType, Schema
from lagoon.values import coerce_vector, coerce_vectors
from lagoon.wire.write import parse_write

DIMS = 4
F32 = AttrType("vector", dims=DIMS, dtype="f32")
I8 = AttrType("vector", dims=DIMS, dtype="i8")

ELEMENT = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.integers(-200, 200),
    st.sampled_from([True, False, None, "1.5", 1e39, -1e300, 2**70, float("nan"), [1.0]]),
)
VECTOR = st.one_of(
    st.lists(ELEMENT, min_size=DIMS, max_size=DIMS),
    st.lists(st.floats(-1e6, 1e6, width=32), min_size=DIMS - 1, max_size=DIMS + 1),
    st.builds(
        lambda xs: base64.b64encode(np.asarray(xs, "<f4").tobytes()).decode(),
        st.lists(st.floats(-1e6, 1e6, width=32), min_size=DIMS - 1, max_size=DIMS + 1),
    ),
    st.sampled_from([None, "not base64!", "AAAA", 7, {"a": 1}]),
    st.builds(  # a character of a valid base64 vector replaced, or one put in: padding, whitespace
        lambda xs, at, c, put: (lambda t: t[:at] + c + t[at + (0 if put else 1) :])(
            base64.b64encode(np.asarray(xs, "<f4").tobytes()).decode()
        ),
        st.lists(st.floats(-1e6, 1e6, width=32), min_size=DIMS, max_size=DIMS),
        st.integers(0, 24),
        st.sampled_from(["=", " ", "\n", "-", "_", "\u00e9", "A", "=="]),
        st.booleans(),
    ),
)


def _one_by_one(values: list[Any], atype: AttrType) -> np.ndarray:
    rows = [
        np.zeros(DIMS, np.float32) if v is None else coerce_vector(v, atype, where=f"v[{i}]")
        for i, v in enumerate(values)
    ]
    return np.stack(rows) if rows else np.zeros((0, DIMS), np.float32)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(VECTOR, max_size=6), int8=st.booleans())
def test_vector_column_agrees_with_value_by_value(values: list[Any], int8: bool) -> None:
    atype = I8 if int8 else F32
    try:
        expected = _one_by_one(values, atype)
    except InvalidRequest as e:
        with pytest.raises(InvalidRequest) as got:
            coerce_vectors(values, atype, where=lambda i: f"v[{i}]")
        assert got.value.message == e.message
        return
    matrix, valid = coerce_vectors(values, atype, where=lambda i: f"v[{i}]")
    assert matrix.dtype == np.float32 and matrix.shape == (len(values), DIMS)
    assert valid.tolist() == [v is not None for v in values]
    assert np.array_equal(matrix, expected)


@settings(max_examples=500, deadline=None)
@given(text=st.text(alphabet="AQgw+/=\n -_\u00e9", max_size=13))
def test_base64_the_column_decoder_accepts_binascii_accepts_with_the_same_bytes(text: str) -> None:
    """A base64 vector column is decoded with pybase64; ``coerce_vector`` (and its messages)
    with binascii's strict mode: anything the first accepts, the second must accept alike."""
    try:
        fast = pybase64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return
    assert binascii.a2b_base64(text, strict_mode=True) == fast


def test_a_bool_or_numeric_string_in_a_vector_is_refused() -> None:
    for bad in (True, "0.5", None):
        column = [[0.5] * DIMS, [0.25, bad, 0.5, 0.5]]
        with pytest.raises(InvalidRequest, match=r"v\[1\]: vector elements must be numbers"):
            coerce_vectors(column, F32, where=lambda i: f"v[{i}]")


SCHEMA = Schema.from_storage(
    {
        "id_type": "uint",
        "distance_metric": "cosine_distance",
        "attributes": {
            "v": {"type": f"[{DIMS}]f32", "ann": {}},
            "title": {"type": "string"},
            "n": {"type": "int"},
            "tags": {"type": "[]string"},
        },
    }
)

DOC = st.fixed_dictionaries(
    {"id": st.integers(0, 30)},
    optional={
        "v": st.one_of(st.none(), st.lists(st.floats(-10, 10, width=32), min_size=DIMS, max_size=DIMS)),
        "title": st.one_of(st.none(), st.text(max_size=8)),
        "n": st.one_of(st.none(), st.integers(-5, 5)),
        "tags": st.one_of(st.none(), st.lists(st.text(max_size=3), max_size=3)),
        "fresh": st.one_of(st.none(), st.integers(0, 3)),
    },
)


def _columns(docs: list[dict[str, Any]]) -> dict[str, list[Any]]:
    names = list(dict.fromkeys(k for d in docs for k in d))
    return {k: [d.get(k) for d in docs] for k in ["id", *[n for n in names if n != "id"]]}


@settings(max_examples=60, deadline=None)
@given(docs=st.lists(DOC, min_size=1, max_size=8, unique_by=lambda d: d["id"]))
def test_rows_and_columns_give_the_same_documents_and_bytes(docs: list[dict[str, Any]]) -> None:
    by_rows = parse_write({"upsert_rows": docs}, SCHEMA)
    by_columns = parse_write({"upsert_columns": _columns(docs)}, SCHEMA)
    assert by_rows.schema == by_columns.schema
    rows = list(by_rows.upserts.rows(by_rows.schema))
    assert [i for i, _ in rows] == [d["id"] for d in docs]
    for (_, got), sent in zip(rows, docs, strict=True):
        want = {k: v for k, v in sent.items() if k != "id" and v is not None}
        assert set(got) == set(want)
        for k, v in want.items():
            if k == "v":
                assert np.array_equal(got[k], np.asarray(v, np.float32))
            else:
                assert got[k] == v
    assert [list(r[1]) for r in by_columns.upserts.rows(by_columns.schema)] == [list(r[1]) for r in rows]
    # upsert_columns names every attribute in every document (null or not): billed as such
    typed = by_rows.schema.attributes
    nulls_in_rows = sum(len(k) + 8 for d in docs for k, v in d.items() if k in typed and v is None)
    cols = _columns(docs)
    nulls_in_cols = sum(len(k) + 8 for k in cols if k in typed for v in cols[k] if v is None)
    assert by_columns.logical_bytes - by_rows.logical_bytes == nulls_in_cols - nulls_in_rows


def test_billed_bytes_count_each_value_once() -> None:
    docs = [
        {"id": 1, "v": [0.5] * DIMS, "title": "héllo", "n": 3, "tags": ["a", "b"]},
        {"id": 2, "title": None},
    ]
    req = parse_write({"upsert_rows": docs}, SCHEMA)
    want = (8 + 1 + 4 * DIMS + 5 + 6 + 1 + 8 + 4 + 16) + (8 + 5 + 8)
    assert req.logical_bytes == want


def test_a_bad_value_is_named_by_its_document() -> None:
    cols = {"id": [1, 2, 3], "v": [[0.5] * DIMS, [0.5] * DIMS, [0.5] * (DIMS + 1)]}
    with pytest.raises(InvalidRequest, match=rf"upsert_columns\[2\]\.v: vector has {DIMS + 1} dimensions"):
        parse_write({"upsert_columns": cols}, SCHEMA)
    rows = [{"id": 1, "n": 1}, {"id": 2, "n": "two"}]
    with pytest.raises(InvalidRequest, match=r"upsert_rows\[1\]\.n: expected int"):
        parse_write({"upsert_rows": rows}, SCHEMA)
    both = {"upsert_rows": [{"id": 1, "n": 1}], "upsert_columns": {"id": [2], "n": [2**63]}}
    with pytest.raises(InvalidRequest, match=r"upsert_columns\[0\]\.n: .* out of range"):
        parse_write(both, SCHEMA)


def test_a_duplicate_uuid_id_is_named_as_the_client_wrote_it() -> None:
    """The 400 for an id written twice in one request names it in its wire form (a UUID string),
    not as the 16 bytes it is stored as."""
    schema = Schema()
    u = "bae86d5c-1a31-4470-9818-bf135f012703"
    for body in (
        {"upsert_rows": [{"id": u}, {"id": u.upper()}], "schema": {"id": "uuid"}},
        {"deletes": [u, u], "schema": {"id": "uuid"}},
    ):
        with pytest.raises(InvalidRequest) as e:
            parse_write(body, schema)
        assert f"id '{u}' appears more than once" in str(e.value), str(e.value)
