"""``parse_filter``: turbopuffer's JSON filter grammar checked against a namespace schema and built
into a ``Filter`` tree (``tree.py``) with canonical literals. Every problem in the input is an
``InvalidRequest`` naming the attribute and the operator; ``docs/filters.md`` is the grammar."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from lagoon.errors import InvalidRequest
from lagoon.index.filters.glob import glob_fast_path, glob_to_regex
from lagoon.index.filters.ops import (
    ALL_OPS,
    ANY_OPS,
    COMBINATORS,
    CONTAINS_ANY_OPS,
    CONTAINS_OPS,
    EQ_OPS,
    GLOB_OPS,
    ID_OPS,
    IN_OPS,
    MAX_DEPTH,
    MAX_FUZZY_DISTANCE,
    MAX_LIST_VALUES,
    MAX_NODES,
    MAX_PATTERN_CHARS,
    MAX_TEXT_CHARS,
    RANGE_OPS,
    TOKEN_OPS,
    TOKEN_PARAMS,
    UNSUPPORTED_OPS,
    got,
    json_snippet,
)
from lagoon.index.filters.tree import And, Condition, Filter, Not, Or
from lagoon.schema import AttributeSchema, AttrType, Schema, unstored_message
from lagoon.values import coerce_id, coerce_scalar

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
                f'expected a filter like [attribute, operator, value] or ["And", [...]], got {got(expr)}'
            )
        if len(expr) == 2 and expr[0] in COMBINATORS:
            return self.combinator(expr[0], expr[1], depth)
        if len(expr) in (3, 4):
            return self.condition(expr)
        if len(expr) == 2 and isinstance(expr[0], str) and expr[0].capitalize() in COMBINATORS:
            raise self.error(f"unknown combinator {expr[0]!r}; did you mean {expr[0].capitalize()!r}?")
        raise self.error(
            "a filter is [attribute, operator, value], [attribute, operator, value, params], "
            f'["And", [filters]], ["Or", [filters]] or ["Not", filter]; got {len(expr)} elements: '
            f"{json_snippet(expr)}"
        )

    def combinator(self, name: str, arg: Any, depth: int) -> Filter:
        if name == "Not":
            return Not(self.node(arg, depth + 1))
        if not isinstance(arg, list | tuple):
            raise self.error(f"{name} expects an array of filters, got {got(arg)}")
        if arg and isinstance(arg[0], str):
            raise self.error(
                f'{name} expects an array of filters like ["{name}", [[...], [...]]]; '
                f"got what looks like a single filter {json_snippet(arg)}"
            )
        children = tuple(self.node(child, depth + 1) for child in arg)
        return And(children) if name == "And" else Or(children)

    # -- conditions ------------------------------------------------------------------------------

    def condition(self, expr: Sequence[Any]) -> Condition:
        attr, op, value = expr[0], expr[1], expr[2]
        if not isinstance(attr, str) or not attr:
            raise self.error(f"expected an attribute name as the first element, got {json_snippet(attr)}")
        if not isinstance(op, str):
            raise self.error(f"expected an operator name as the second element, got {json_snippet(op)}")
        if op in UNSUPPORTED_OPS:
            raise self.error(f"{UNSUPPORTED_OPS[op]} (attribute {attr!r})")
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
                    f"{op} takes [attribute, operator, value]; got a 4th element {json_snippet(expr[3])}"
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
                f"unexpected object {json_snippet(value)} as the value of {op} on {attr!r}"
                + ('; the only object value is {"$ref_new": "attr"}' if self.allow_ref_new else "")
            )
        if not self.allow_ref_new:
            raise self.error(f"$ref_new is only allowed in write conditions (found in {op} on {attr!r})")
        name = value["$ref_new"]
        if not isinstance(name, str) or not name:
            raise self.error(f"$ref_new expects an attribute name, got {json_snippet(name)}")
        if op in GLOB_OPS or op in TOKEN_OPS or op in ("Regex", "Fuzzy"):
            raise self.error(f"$ref_new is not supported with {op} (attribute {attr!r})")
        return name

    def ref_type(self, name: str) -> AttrType | None:
        if name == "id":
            return AttrType(self.schema.id_type) if self.schema.id_type else None
        spec = self.schema.get(name)
        if spec is None:
            return None
        if spec.type.is_vector or spec.type.is_sparse or spec.type.is_multivector:
            raise self.error(f"$ref_new {name!r} is a vector attribute, which filters cannot compare")
        if not spec.store:
            raise self.error(f"$ref_new: {unstored_message(name)}")
        return spec.type

    def check_allowed(self, attr: str, op: str, spec: AttributeSchema) -> None:
        t = spec.type
        if t.is_vector or t.is_sparse or t.is_multivector:
            raise self.error(f"attribute {attr!r} is a vector ({t}); vectors cannot be filtered")
        if op in TOKEN_OPS:
            if spec.full_text_search is None:
                raise self.error(f"{op} needs full_text_search enabled on attribute {attr!r}")
            return
        if not spec.store:
            raise self.error(unstored_message(attr))
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
            raise self.error(f"attribute {attr!r} is {t}, got {got(value)} for {op}")
        return coerce_scalar(value, kind, where=f"{self.where}: attribute {attr!r} ({op})")

    def scalars(self, attr: str, op: str, value: Any, t: AttrType, *, allow_null: bool) -> tuple[Any, ...]:
        if not isinstance(value, list | tuple):
            raise self.error(f"{op} on {attr!r} expects an array of values, got {got(value)}")
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
            raise self.error(f"{op} on {attr!r} expects a pattern string, got {got(value)}")
        if len(value) > MAX_PATTERN_CHARS:
            raise self.error(f"{op} pattern on {attr!r} is longer than {MAX_PATTERN_CHARS} characters")
        fast: tuple[str, str] | None = None
        if op == "Regex":
            regex = value
        else:
            ci = op in ("IGlob", "NotIGlob")
            regex = glob_to_regex(value, case_insensitive=ci, where=self.where)
            if not ci:
                fast = glob_fast_path(value, self.where)
        try:
            pc.match_substring_regex(pa.array([""], type=pa.string()), pattern=regex)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise self.error(f"invalid {op} pattern {json_snippet(value)} on {attr!r}: {e}") from None
        return Condition(attr, op, value, t, regex=None if fast else regex, fast=fast)

    def fuzzy_condition(self, attr: str, value: Any, raw: Any, t: AttrType) -> Condition:
        """``[attr, "Fuzzy", text, {"max_edit_distance": [{"min_query_chars", "distance"}…],
        "case_sensitive"?}]``: the edit distance that applies is the largest ``distance`` whose
        ``min_query_chars`` the text reaches (codepoints); none applies -> the filter matches
        nothing. ``min_query_chars`` must be at least 3·(distance + 1), distance at most 2."""
        if not isinstance(value, str):
            raise self.error(f"Fuzzy on {attr!r} expects a text string, got {got(value)}")
        if len(value) > MAX_PATTERN_CHARS:
            raise self.error(f"Fuzzy text on {attr!r} is longer than {MAX_PATTERN_CHARS} characters")
        if not isinstance(raw, dict):
            raise self.error(
                f'Fuzzy on {attr!r}: expected {{"max_edit_distance": [...]}}, got {json_snippet(raw)}'
            )
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
                raise self.error(
                    f'{w}: expected {{"min_query_chars": n, "distance": d}}, got {json_snippet(rule)}'
                )
            d, m = rule["distance"], rule["min_query_chars"]
            if not _is_plain_int(d) or not 0 <= d <= MAX_FUZZY_DISTANCE:
                raise self.error(
                    f"{w}.distance: must be an integer from 0 to {MAX_FUZZY_DISTANCE}, got {json_snippet(d)}"
                )
            if not _is_plain_int(m) or m < 3 * (d + 1):
                raise self.error(
                    f"{w}.min_query_chars: must be an integer of at least 3·(distance + 1) = {3 * (d + 1)}, "
                    f"got {json_snippet(m)}"
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
            raise self.error(f"{op} params must be an object, got {json_snippet(raw)}")
        allowed = TOKEN_PARAMS[op]
        unknown = set(raw) - allowed
        if unknown:
            accepted = ", ".join(sorted(allowed)) or "none"
            raise self.error(f"{op}: unknown param(s) {', '.join(sorted(unknown))} (accepted: {accepted})")
        for key, v in raw.items():
            if not isinstance(v, bool):
                raise self.error(f"{op}: param {key} must be true or false, got {json_snippet(v)}")
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
        raise self.error(
            f"{op} on {attr!r} expects a string or an array of strings, got {json_snippet(value)}"
        )

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
                raise self.error(f"{op} on id expects an array of ids, got {got(value)}")
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
                raise self.error(f"{op} on {attr!r} expects an array of values, got {got(value)}")
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
        raise self.error(f"{op} on {attr!r}: unexpected value {got(value)}")


def _is_plain_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


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
