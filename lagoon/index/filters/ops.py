"""Filter operators: the names the grammar knows, their negations, the size limits, and how
filter values are shown in messages. Shared by the parser and the tree."""

from __future__ import annotations

import json
import uuid as uuidlib
from collections.abc import Callable
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from lagoon.schema import AttrType
from lagoon.values import format_datetime, json_kind

Mask: TypeAlias = npt.NDArray[np.bool_]
Column: TypeAlias = Any  # pa.Array | pa.ChunkedArray (pyarrow is untyped)
TokenMatcher: TypeAlias = Callable[[str, str, str | list[str], dict[str, Any], pa.Table], Mask]


MAX_DEPTH = 16  # nesting levels; a bare condition is depth 1
MAX_NODES = 4096  # conditions + And/Or/Not nodes
MAX_LIST_VALUES = 10_000  # values in one In / ContainsAny / array literal / token list
MAX_PATTERN_CHARS = 4096  # Glob / Regex pattern length
MAX_TEXT_CHARS = 8192  # token-operator query length (turbopuffer's FTS query limit)
REF_NEW_PREFIX = "$ref_new."
SMALL_IN = 8  # In lists up to this size run as equality scans on fixed-width columns (faster than hashing)
SMALL_IN_STRINGS = 3  # string equality scans cost more; hashing wins sooner

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
UNSUPPORTED_OPS: dict[str, str] = {}
MAX_FUZZY_DISTANCE = 2
NEGATIVE = {
    "NotEq": "Eq",
    "NotIn": "In",
    "NotContains": "Contains",
    "NotContainsAny": "ContainsAny",
    "NotGlob": "Glob",
    "NotIGlob": "IGlob",
}
CMP = {"Lt": pc.less, "Lte": pc.less_equal, "Gt": pc.greater, "Gte": pc.greater_equal}
ANY_CMP = {"AnyLt": "Lt", "AnyLte": "Lte", "AnyGt": "Gt", "AnyGte": "Gte"}
TOKEN_PARAMS: dict[str, frozenset[str]] = {
    "ContainsAllTokens": frozenset({"last_as_prefix"}),
    "ContainsAnyToken": frozenset({"last_as_prefix"}),
    "ContainsTokenSequence": frozenset(),
}
COMBINATORS = ("And", "Or", "Not")


def ref_new_column(attr: str) -> str:
    """The table column that carries the new document's value of ``attr`` for ``$ref_new``."""
    return REF_NEW_PREFIX + attr


def show_value(value: Any, t: AttrType | None) -> str:
    if isinstance(value, tuple):
        items = [show_value(v, t) for v in value[:5]]
        if len(value) > 5:
            items.append(f"... ({len(value)} values)")
        return "[" + ", ".join(items) + "]"
    if value is None:
        return "null"
    if isinstance(value, bytes) and len(value) == 16:
        return str(uuidlib.UUID(bytes=value))
    if t is not None and t.kind == "datetime" and isinstance(value, int):
        return format_datetime(value)
    return json_snippet(value, limit=80)


def json_snippet(value: Any, *, limit: int = 60) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def got(value: Any) -> str:
    """``string "2020"``, ``int 5``, ``null``: a JSON value with its kind, for error messages."""
    return "null" if value is None else f"{json_kind(value)} {json_snippet(value)}"
