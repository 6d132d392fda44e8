"""Attribute types and namespace schemas: parsing, inference, merging, and their JSON forms.

A namespace schema maps attribute names to ``AttributeSchema``; the ``id`` type is kept apart.
Types are inferred on the first write that carries an attribute (string, int, float, bool and
their arrays; ``vector`` as ``[N]f32``) and fixed afterwards; other types must be declared. A
conflicting type is an ``InvalidRequest``. This module is pure: values in, values out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

import pyarrow as pa

from lagoon.errors import InvalidRequest

SCALARS = ("string", "int", "uint", "float", "bool", "datetime", "uuid")
ID_TYPES = ("uint", "uuid", "string")
DISTANCE_METRICS = ("cosine_distance", "euclidean_squared")
MAX_DIMS = 10_752
MAX_ATTR_NAME_BYTES = 128
MAX_ATTRIBUTES = 1024
_VECTOR_RE = re.compile(r"^\[(\d+)\](f32|f16)$")


@dataclass(frozen=True, slots=True)
class AttrType:
    """``kind`` is a scalar name or "vector"; ``array`` for ``[]T``; ``dims``/``dtype`` for vectors."""

    kind: str
    array: bool = False
    dims: int = 0
    dtype: str = ""

    @staticmethod
    def parse(text: Any, *, where: str = "type") -> AttrType:
        if not isinstance(text, str):
            raise InvalidRequest(f"{where}: expected a type name string, got {text!r}")
        m = _VECTOR_RE.match(text)
        if m:
            dims = int(m.group(1))
            if not 1 <= dims <= MAX_DIMS:
                raise InvalidRequest(f"{where}: vector dimensions must be 1..{MAX_DIMS}, got {dims}")
            return AttrType("vector", dims=dims, dtype=m.group(2))
        if text.startswith("[]") and text[2:] in SCALARS:
            return AttrType(text[2:], array=True)
        if text in SCALARS:
            return AttrType(text)
        raise InvalidRequest(
            f"{where}: unknown type {text!r}; expected one of {', '.join(SCALARS)}, "
            "their arrays ([]string, ...), [N]f32 or [N]f16"
        )

    @property
    def is_vector(self) -> bool:
        return self.kind == "vector"

    def __str__(self) -> str:
        if self.is_vector:
            return f"[{self.dims}]{self.dtype}"
        return f"[]{self.kind}" if self.array else self.kind

    def arrow_type(self) -> pa.DataType:
        if self.is_vector:
            return pa.list_(pa.float32() if self.dtype == "f32" else pa.float16(), self.dims)
        scalar = _ARROW_SCALARS[self.kind]
        return pa.list_(scalar) if self.array else scalar


_ARROW_SCALARS: dict[str, pa.DataType] = {
    "string": pa.string(),
    "int": pa.int64(),
    "uint": pa.uint64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "datetime": pa.timestamp("ms", tz="UTC"),
    "uuid": pa.binary(16),
}


def id_arrow_type(id_type: str) -> pa.DataType:
    return {"uint": pa.uint64(), "uuid": pa.binary(16), "string": pa.string()}[id_type]


@dataclass(frozen=True, slots=True)
class AttributeSchema:
    type: AttrType
    filterable: bool = True
    full_text_search: dict[str, Any] | None = None  # normalised FTS options, or None when off
    ann: dict[str, Any] | None = None  # {"distance_metric": ...} for vector columns
    regex: bool = False
    glob: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": str(self.type)}
        if self.type.is_vector:
            out["ann"] = dict(self.ann) if self.ann is not None else False
        else:
            out["filterable"] = self.filterable
        if self.full_text_search is not None:
            out["full_text_search"] = dict(self.full_text_search)
        if self.regex:
            out["regex"] = True
        if self.glob:
            out["glob"] = True
        return out


@dataclass(frozen=True, slots=True)
class Schema:
    """A namespace's schema. ``id_type`` is None until the first write fixes it."""

    id_type: str | None = None
    attributes: dict[str, AttributeSchema] = field(default_factory=dict)
    distance_metric: str | None = None

    def get(self, name: str) -> AttributeSchema | None:
        return self.attributes.get(name)

    def vector_columns(self) -> list[str]:
        return [n for n, a in self.attributes.items() if a.type.is_vector]

    def fts_columns(self) -> list[str]:
        return [n for n, a in self.attributes.items() if a.full_text_search is not None]

    def to_json(self) -> dict[str, Any]:
        """The wire form of GET /v1/namespaces/{ns}/schema."""
        out: dict[str, Any] = {}
        if self.id_type is not None:
            out["id"] = {"type": self.id_type}
        for name in sorted(self.attributes):
            a = self.attributes[name]
            j = a.to_json()
            if a.type.is_vector and a.ann is not None and self.distance_metric:
                j["ann"] = {"distance_metric": a.ann.get("distance_metric", self.distance_metric)}
            out[name] = j
        return out

    def to_storage(self) -> dict[str, Any]:
        """The persisted form (WAL entries and manifests)."""
        return {
            "id_type": self.id_type,
            "distance_metric": self.distance_metric,
            "attributes": {n: a.to_json() for n, a in sorted(self.attributes.items())},
        }

    @staticmethod
    def from_storage(data: dict[str, Any]) -> Schema:
        attrs = {n: _attr_from_json(n, j, existing=None) for n, j in data.get("attributes", {}).items()}
        return Schema(data.get("id_type"), attrs, data.get("distance_metric"))


def check_attr_name(name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"attribute names must be non-empty strings, got {name!r}")
    if name.startswith("$"):
        raise InvalidRequest(f"attribute name {name!r} may not start with '$'")
    if len(name.encode()) > MAX_ATTR_NAME_BYTES:
        raise InvalidRequest(f"attribute name {name[:40]!r}... is longer than {MAX_ATTR_NAME_BYTES} bytes")
    return name


def _attr_from_json(name: str, spec: Any, existing: AttributeSchema | None) -> AttributeSchema:
    """Parse one attribute's schema spec (a type string or a config object)."""
    from lagoon.index.text.analyze import FtsConfig

    where = f"schema.{name}"
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, dict):
        raise InvalidRequest(f"{where}: expected a type string or an object, got {spec!r}")
    unknown = set(spec) - {"type", "filterable", "full_text_search", "ann", "regex", "glob"}
    if unknown:
        raise InvalidRequest(f"{where}: unknown option(s) {', '.join(sorted(unknown))}")
    if "type" in spec:
        atype = AttrType.parse(spec["type"], where=f"{where}.type")
        if existing is not None and existing.type != atype:
            raise InvalidRequest(
                f"{where}: type is {existing.type}, cannot change it to {atype} "
                "(drop the attribute or write to a new namespace)"
            )
    elif existing is not None:
        atype = existing.type
    else:
        raise InvalidRequest(f"{where}: 'type' is required for a new attribute")
    base = existing or AttributeSchema(type=atype)
    fts = base.full_text_search
    if "full_text_search" in spec:
        v = spec["full_text_search"]
        if v is False or v is None:
            fts = None
        else:
            if atype.kind != "string" or atype.is_vector:
                raise InvalidRequest(f"{where}.full_text_search: only string and []string attributes")
            cfg = FtsConfig.from_json(v, attribute=name)
            fts = cfg.to_json() if cfg is not None else None
    filterable_default = fts is None and not spec.get("regex", False)
    filterable = spec.get("filterable", base.filterable if existing else filterable_default)
    if not isinstance(filterable, bool):
        raise InvalidRequest(f"{where}.filterable: expected true or false")
    ann = base.ann
    if "ann" in spec:
        v = spec["ann"]
        if not atype.is_vector and v not in (False, None):
            raise InvalidRequest(f"{where}.ann: only vector attributes ([N]f32, [N]f16) can be indexed")
        if v is True:
            ann = {}
        elif v in (False, None):
            ann = None
        elif isinstance(v, dict):
            unknown = set(v) - {"distance_metric"}
            if unknown:
                raise InvalidRequest(f"{where}.ann: unknown option(s) {', '.join(sorted(unknown))}")
            if "distance_metric" in v and v["distance_metric"] not in DISTANCE_METRICS:
                raise InvalidRequest(
                    f"{where}.ann.distance_metric: expected one of {', '.join(DISTANCE_METRICS)}"
                )
            ann = dict(v)
        else:
            raise InvalidRequest(f"{where}.ann: expected true, false or an object")
    elif existing is None and atype.is_vector:
        ann = {}
    flags = {}
    for flag in ("regex", "glob"):
        fv = spec.get(flag, getattr(base, flag))
        if not isinstance(fv, bool):
            raise InvalidRequest(f"{where}.{flag}: expected true or false")
        flags[flag] = fv
    if atype.is_vector:
        filterable = False
    return AttributeSchema(atype, filterable, fts, ann, flags["regex"], flags["glob"])


def apply_schema_update(schema: Schema, update: Any) -> Schema:
    """Merge a write's (or POST schema's) ``schema`` object into ``schema``. Validates everything."""
    if not isinstance(update, dict):
        raise InvalidRequest("schema: expected an object mapping attribute names to types")
    id_type = schema.id_type
    attrs = dict(schema.attributes)
    for name, spec in update.items():
        if name == "id":
            t = spec.get("type") if isinstance(spec, dict) else spec
            if t not in ID_TYPES:
                raise InvalidRequest(f"schema.id: expected one of {', '.join(ID_TYPES)}, got {t!r}")
            if id_type is not None and id_type != t:
                raise InvalidRequest(f"schema.id: the namespace's id type is {id_type}, cannot change to {t}")
            id_type = t
            continue
        check_attr_name(name)
        if isinstance(spec, dict) and spec.get("drop") is True:
            if set(spec) != {"drop"}:
                raise InvalidRequest(f"schema.{name}: 'drop' cannot be combined with other options")
            attrs.pop(name, None)
            continue
        attrs[name] = _attr_from_json(name, spec, attrs.get(name))
    if len(attrs) > MAX_ATTRIBUTES:
        raise InvalidRequest(f"schema: more than {MAX_ATTRIBUTES} attributes")
    return replace(schema, id_type=id_type, attributes=attrs)


def infer_type(name: str, value: Any) -> AttrType | None:
    """The type a first value implies, or None for null / empty arrays (decided later)."""
    if value is None:
        return None
    if name == "vector":
        if isinstance(value, list):
            return AttrType("vector", dims=len(value), dtype="f32") if value else None
        if isinstance(value, str):
            from lagoon.values import decode_base64_vector

            return AttrType("vector", dims=len(decode_base64_vector(value, where=name)), dtype="f32")
    if isinstance(value, bool):
        return AttrType("bool")
    if isinstance(value, int):
        return AttrType("int")
    if isinstance(value, float):
        return AttrType("float")
    if isinstance(value, str):
        return AttrType("string")
    if isinstance(value, list):
        for item in value:
            t = infer_type("", item)
            if t is None:
                continue
            if t.array or t.is_vector:
                break
            return AttrType(t.kind, array=True)
        if not value:
            return None
        raise InvalidRequest(
            f"attribute {name!r}: cannot infer a type from {value!r:.80}; declare it in schema"
        )
    raise InvalidRequest(f"attribute {name!r}: unsupported value {value!r:.80}")
