"""Which groups of writes are resolved and encoded on the event loop (``_plain_upserts``): only
plain upserts, bounded in rows and in bytes, so no group holds the loop for long."""

from __future__ import annotations

from typing import Any

from lagoon.engine.writer import INLINE_GROUP_BYTES, INLINE_GROUP_ROWS, Op, _plain_upserts
from lagoon.schema import Schema
from lagoon.wire.write import parse_write


def _schema() -> Schema:
    return parse_write({"upsert_rows": [{"id": 0, "text": "x", "n": 1}]}, Schema()).schema


def _op(body: dict[str, Any], schema: Schema) -> Op:
    return Op("write", request=parse_write(body, schema), parsed_against=schema, future=None)  # type: ignore[arg-type]


def test_small_plain_upserts_run_inline() -> None:
    schema = _schema()
    group = [_op({"upsert_rows": [{"id": i, "text": "a", "n": i}]}, schema) for i in range(8)]
    assert _plain_upserts(group, schema)


def test_conditions_deletes_and_schema_changes_do_not() -> None:
    schema = _schema()
    plain = _op({"upsert_rows": [{"id": 1, "text": "a"}]}, schema)
    for body in (
        {"deletes": [1]},
        {"upsert_rows": [{"id": 1, "n": 2}], "upsert_condition": ["n", "Lt", 5]},
        {"upsert_rows": [{"id": 1, "other": 2}]},  # a new attribute changes the schema
        {"patch_rows": [{"id": 1, "n": 2}]},
    ):
        assert not _plain_upserts([plain, _op(body, schema)], schema), body
    # validated against another schema than the group's: resolved in a worker thread
    assert not _plain_upserts([plain], _schema())


def test_groups_past_the_row_or_byte_bound_leave_the_loop() -> None:
    schema = _schema()
    rows = [{"id": i, "n": i} for i in range(INLINE_GROUP_ROWS + 1)]
    assert not _plain_upserts([_op({"upsert_rows": rows}, schema)], schema)
    assert _plain_upserts([_op({"upsert_rows": rows[:-1]}, schema)], schema)
    # few rows, many bytes: 4 rows of 300 KB of text
    big = [{"id": i, "text": "x" * 300_000} for i in range(4)]
    op = _op({"upsert_rows": big}, schema)
    assert op.request is not None and op.request.logical_bytes > INLINE_GROUP_BYTES
    assert not _plain_upserts([op], schema)
    assert _plain_upserts([_op({"upsert_rows": big[:3]}, schema)], schema)
