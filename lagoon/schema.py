"""Attribute types and namespace schemas: parsing, inference, merging, and their JSON forms.

A namespace schema maps attribute names to ``AttributeSchema``; the ``id`` type is kept apart.
Types are inferred on the first write that carries an attribute (string, int, float, bool and
their arrays; ``vector`` as ``[N]f32``) and fixed afterwards; other types must be declared. A
conflicting type is an ``InvalidRequest``. This module is pure: values in, values out.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

import pyarrow as pa

from lagoon.errors import DataCorruption, InvalidRequest

SCALARS = ("string", "int", "uint", "float", "bool", "datetime", "uuid")
ID_TYPES = ("uint", "uuid", "string")
DISTANCE_METRICS = ("cosine_distance", "euclidean_squared")
SPARSE_METRICS = ("dot_product",)
EMBED_MODEL = "all-minilm-l6-v2"
"""The one local embedding model (lagoon/index/embed.py, the optional 'embed' extra)."""
EMBED_MODEL_ALIASES = (EMBED_MODEL, "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")
EMBED_DIMS = 384
MAX_EMBEDDED_ATTRIBUTES = 4
SPARSE_TYPE = "{}f16"
MAX_SPARSE_DIMS = 1024
"""Most non-zero dimensions one written sparse vector may hold (turbopuffer's published limit)."""
MAX_DIMS = 10_752
"""Largest vector a write may declare or infer. Persisted schemas are read with any positive
dimension (an older build may have stored more): limits are write-time policy."""
MAX_ATTR_NAME_BYTES = 128
MAX_ATTRIBUTES = 1024
MAX_STORED_DIMS = 1 << 24
"""A persisted vector type above this is damage, not an old limit."""
_VECTOR_RE = re.compile(r"^\[(\d+)\](f32|f16|i8)$")
_MULTIVECTOR_RE = re.compile(r"^\[\]\[(\d+)\](f32)$")
MULTIVECTOR = "multivector"
"""``[][N]f32``: a list of N-dim vectors per document (late interaction, ``ann.late_interaction``)."""


def _dims(digits: str, *, where: str, stored: bool) -> int:
    """The dimensions a vector type names (``[N]...``), within the write limit or, ``stored``,
    any a persisted type may hold; a number of more than 9 digits is out of range either way."""
    dims = int(digits) if len(digits) <= 9 else MAX_STORED_DIMS + 1
    if not 1 <= dims <= (MAX_STORED_DIMS if stored else MAX_DIMS):
        raise InvalidRequest(f"{where}: vector dimensions must be 1..{MAX_DIMS}, got {dims}")
    return dims


@dataclass(frozen=True, slots=True)
class AttrType:
    """``kind`` is a scalar name or "vector"; ``array`` for ``[]T``; ``dims``/``dtype`` for vectors."""

    kind: str
    array: bool = False
    dims: int = 0
    dtype: str = ""

    @staticmethod
    def parse(text: Any, *, where: str = "type", stored: bool = False) -> AttrType:
        """The type a type name denotes. ``stored``: the name comes from persisted data, where
        any positive vector dimension is read (write limits are checked when data is written)."""
        if not isinstance(text, str):
            raise InvalidRequest(f"{where}: expected a type name string, got {text!r:.60}")
        if text == SPARSE_TYPE:
            return AttrType("sparse", dtype="f16")
        for kind, pattern in (("vector", _VECTOR_RE), (MULTIVECTOR, _MULTIVECTOR_RE)):
            if m := pattern.match(text):
                return AttrType(kind, dims=_dims(m.group(1), where=where, stored=stored), dtype=m.group(2))
        if text.startswith("[]") and text[2:] in SCALARS:
            return AttrType(text[2:], array=True)
        if text in SCALARS:
            return AttrType(text)
        raise InvalidRequest(
            f"{where}: unknown type {text!r}; expected one of {', '.join(SCALARS)}, "
            "their arrays ([]string, ...), [N]f32, [N]f16, [N]i8, [][N]f32 (multi-vector) or {}f16 (sparse)"
        )

    @property
    def is_vector(self) -> bool:
        return self.kind == "vector"

    @property
    def is_multivector(self) -> bool:
        """A list of vectors per document (``[][N]f32``), ranked by late interaction."""
        return self.kind == MULTIVECTOR

    @property
    def is_sparse(self) -> bool:
        """A sparse vector (``{}f16``): dimension ids (u32) with f16 weights."""
        return self.kind == "sparse"

    def __str__(self) -> str:
        if self.is_sparse:
            return SPARSE_TYPE
        if self.is_vector:
            return f"[{self.dims}]{self.dtype}"
        if self.is_multivector:
            return f"[][{self.dims}]{self.dtype}"
        return f"[]{self.kind}" if self.array else self.kind

    def arrow_type(self) -> pa.DataType:
        if self.is_sparse:
            return pa.map_(pa.uint32(), pa.float16())
        if self.is_vector:
            return pa.list_(_VECTOR_ARROW[self.dtype], self.dims)
        if self.is_multivector:
            return pa.list_(pa.list_(_VECTOR_ARROW[self.dtype], self.dims))
        scalar = _ARROW_SCALARS[self.kind]
        return pa.list_(scalar) if self.array else scalar


_VECTOR_ARROW: dict[str, pa.DataType] = {"f32": pa.float32(), "f16": pa.float16(), "i8": pa.int8()}
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


def id_type_of_arrow(arrow: pa.DataType) -> str | None:
    """The id type whose column has this Arrow type (``id_arrow_type`` backwards)."""
    return next((t for t in ("uint", "uuid", "string") if id_arrow_type(t) == arrow), None)


def type_of_arrow(arrow: pa.DataType) -> AttrType | None:
    """The attribute type whose column has this Arrow type (``AttrType.arrow_type`` backwards;
    None: no attribute type is stored so). Reads what a column of a stored table declares when
    the schema that named it is lost."""
    scalar = {v: k for k, v in _ARROW_SCALARS.items()}
    vector = {v: k for k, v in _VECTOR_ARROW.items()}
    if arrow in scalar:
        return AttrType(scalar[arrow])
    if pa.types.is_map(arrow):
        return AttrType("sparse", dtype="f16") if arrow == pa.map_(pa.uint32(), pa.float16()) else None
    if pa.types.is_fixed_size_list(arrow) and arrow.value_type in vector:
        return AttrType("vector", dims=arrow.list_size, dtype=vector[arrow.value_type])
    if pa.types.is_list(arrow):
        inner = arrow.value_type
        if inner in scalar:
            return AttrType(scalar[inner], array=True)
        if pa.types.is_fixed_size_list(inner) and inner.value_type == pa.float32():
            return AttrType(MULTIVECTOR, dims=inner.list_size, dtype="f32")
    return None


@dataclass(frozen=True, slots=True)
class AttributeSchema:
    type: AttrType
    filterable: bool = True
    full_text_search: dict[str, Any] | None = None  # normalised FTS options, or None when off
    ann: dict[str, Any] | None = None  # {"distance_metric": ...} for vector columns
    regex: bool = False
    glob: bool = False
    fuzzy: bool = False  # the Fuzzy filter (approximate substring match) is allowed
    sparse_knn: dict[str, Any] | None = None  # {"distance_metric": "dot_product"} for indexed {}f16
    embed: dict[str, Any] | None = None  # {"model", "attribute", "dims"}: text embedded on upsert
    store: bool = True  # False: indexed for full-text search only, the raw value is not kept (RFC 0008)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": str(self.type)}
        if self.type.is_sparse:
            out["sparse_knn"] = dict(self.sparse_knn) if self.sparse_knn is not None else False
        elif self.type.is_vector or self.type.is_multivector:
            out["ann"] = dict(self.ann) if self.ann is not None else False
        else:
            out["filterable"] = self.filterable
        if self.full_text_search is not None:
            out["full_text_search"] = dict(self.full_text_search)
        if self.regex:
            out["regex"] = True
        if self.glob:
            out["glob"] = True
        if self.fuzzy:
            out["fuzzy"] = True
        if self.embed is not None:
            out["embed"] = dict(self.embed)
        if not self.store:
            out["store"] = False
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

    def sparse_columns(self) -> list[str]:
        return [n for n, a in self.attributes.items() if a.type.is_sparse]

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
        """The schema persisted in a WAL entry or manifest. What a write could have stored is
        read (also values beyond today's write limits, e.g. an older build's vector dimensions);
        anything else raises ``DataCorruption``, never a client error."""
        try:
            if not isinstance(data, dict):
                raise InvalidRequest(f"expected an object, got {type(data).__name__}")
            raw_attrs = data.get("attributes") or {}
            if not isinstance(raw_attrs, dict):
                raise InvalidRequest("attributes: expected an object")
            attrs = {n: _attr_from_json(n, j, existing=None, stored=True) for n, j in raw_attrs.items()}
            id_type, metric = data.get("id_type"), data.get("distance_metric")
            if id_type is not None and id_type not in ID_TYPES:
                raise InvalidRequest(f"id_type: unknown id type {id_type!r:.40}")
            if metric is not None and metric not in DISTANCE_METRICS:
                raise InvalidRequest(f"distance_metric: unknown metric {metric!r:.40}")
        except InvalidRequest as e:
            raise DataCorruption(f"stored schema is unreadable: {e.message}") from None
        return Schema(id_type, attrs, metric)


def check_writable(schema: Schema) -> None:
    """``InvalidRequest`` unless a write may store ``schema``: every attribute within the write
    limits (names, types, dimensions, count) and the schema read back from its stored form equal
    to itself. The last step of validating any write or schema change: what is stored is then
    exactly what readers will see."""
    if len(schema.attributes) > MAX_ATTRIBUTES:
        raise InvalidRequest(f"schema: more than {MAX_ATTRIBUTES} attributes")
    computed = embed_targets(schema)
    for name, attr in schema.attributes.items():
        if name not in computed or not name.startswith("$embed_"):
            check_attr_name(name)
        AttrType.parse(str(attr.type), where=f"schema.{name}.type")
    try:
        again = Schema.from_storage(schema.to_storage())
    except DataCorruption as e:
        raise InvalidRequest(f"schema: {e.message}") from None
    if again != schema:
        raise InvalidRequest("schema: this combination of options cannot be stored")


def check_attr_name(name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"attribute names must be non-empty strings, got {name!r}")
    if name.startswith("$"):
        raise InvalidRequest(f"attribute name {name!r} may not start with '$'")
    if len(name.encode()) > MAX_ATTR_NAME_BYTES:
        raise InvalidRequest(f"attribute name {name[:40]!r}... is longer than {MAX_ATTR_NAME_BYTES} bytes")
    return name


def _attr_from_json(
    name: str, spec: Any, existing: AttributeSchema | None, *, stored: bool = False
) -> AttributeSchema:
    """Parse one attribute's schema spec (a type string or a config object); ``stored``: read
    from persisted data (see ``AttrType.parse``)."""
    where = f"schema.{name}"
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, dict):
        raise InvalidRequest(f"{where}: expected a type string or an object, got {spec!r}")
    unknown = set(spec) - {
        "type", "filterable", "full_text_search", "ann", "regex", "glob", "fuzzy", "sparse_knn", "embed",
        "store",
    }  # fmt: skip
    if unknown:
        raise InvalidRequest(f"{where}: unknown option(s) {', '.join(sorted(unknown))}")
    if "type" in spec:
        atype = AttrType.parse(spec["type"], where=f"{where}.type", stored=stored)
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
    filterable_default = fts is None and not spec.get("regex", False) and not spec.get("fuzzy", False)
    filterable = spec.get("filterable", base.filterable if existing else filterable_default)
    if not isinstance(filterable, bool):
        raise InvalidRequest(f"{where}.filterable: expected true or false")
    ann = _ann_option(where, spec, atype, base.ann, new=existing is None)
    flags = {}
    for flag in ("regex", "glob", "fuzzy"):
        fv = spec.get(flag, getattr(base, flag))
        if not isinstance(fv, bool):
            raise InvalidRequest(f"{where}.{flag}: expected true or false")
        flags[flag] = fv
    if flags["fuzzy"] and (atype.kind != "string" or atype.is_vector):
        raise InvalidRequest(f"{where}.fuzzy: only string and []string attributes; {name!r} is {atype}")
    sparse_knn = _sparse_knn(where, spec, atype, base.sparse_knn, new=existing is None)
    embed = _embed_option(name, spec["embed"], atype) if "embed" in spec else base.embed
    if atype.is_vector or atype.is_sparse or atype.is_multivector:
        filterable = False
    store = _store_option(where, spec, existing, fts, filterable=filterable, flags=flags, embed=embed)
    return AttributeSchema(
        atype,
        filterable and store,
        fts,
        ann,
        flags["regex"],
        flags["glob"],
        flags["fuzzy"],
        sparse_knn,
        embed,
        store,
    )


def _ann_option(
    where: str, spec: dict[str, Any], atype: AttrType, base: dict[str, Any] | None, *, new: bool
) -> Any:
    """``ann``: true / false / ``{distance_metric?, late_interaction?}``. A vector column is
    indexed unless it says false; a ``[][N]f32`` column is ranked only with
    ``{"late_interaction": true}`` (turbopuffer requires it for ANN on such columns), which no
    other type takes."""
    if "ann" not in spec:
        return {} if new and atype.is_vector else base
    v = spec["ann"]
    if v in (False, None):
        return None
    if not (atype.is_vector or atype.is_multivector):
        raise InvalidRequest(
            f"{where}.ann: only vector attributes ([N]f32, [N]f16, [N]i8, [][N]f32) can be indexed"
        )
    if v is True:
        if atype.is_multivector:
            raise InvalidRequest(
                f'{where}.ann: a {atype} attribute is indexed with {{"late_interaction": true}}'
            )
        return {}
    if not isinstance(v, dict):
        raise InvalidRequest(f"{where}.ann: expected true, false or an object")
    unknown = set(v) - {"distance_metric", "late_interaction"}
    if unknown:
        raise InvalidRequest(f"{where}.ann: unknown option(s) {', '.join(sorted(unknown))}")
    if "distance_metric" in v and v["distance_metric"] not in DISTANCE_METRICS:
        raise InvalidRequest(f"{where}.ann.distance_metric: expected one of {', '.join(DISTANCE_METRICS)}")
    late = v.get("late_interaction", False)
    if not isinstance(late, bool):
        raise InvalidRequest(f"{where}.ann.late_interaction: expected true or false")
    if late != atype.is_multivector:
        raise InvalidRequest(
            f"{where}.ann.late_interaction: only valid (and required) on [][N]f32 multi-vector attributes, "
            f"not {atype}"
        )
    out = {k: v[k] for k in ("distance_metric",) if k in v}
    return {**out, "late_interaction": True} if late else out


def _store_option(
    where: str,
    spec: dict[str, Any],
    existing: AttributeSchema | None,
    fts: dict[str, Any] | None,
    *,
    filterable: bool,
    flags: dict[str, bool],
    embed: dict[str, Any] | None,
) -> bool:
    """``store`` (RFC 0008): false keeps only the full-text index of the attribute, so it is
    fixed at creation, needs ``full_text_search``, excludes every option that reads the value, and
    the analysis cannot change later (re-tokenising needs the raw values)."""
    store = spec.get("store", existing.store if existing is not None else True)
    if not isinstance(store, bool):
        raise InvalidRequest(f"{where}.store: expected true or false")
    if existing is not None and store != existing.store:
        raise InvalidRequest(
            f"{where}.store: fixed when the attribute is created (it is {str(existing.store).lower()}); "
            "drop the attribute or write to a new namespace to change it"
        )
    if store:
        return True
    if fts is None:
        raise InvalidRequest(
            f"{where}.store: false needs full_text_search (only a full-text index can stand in for the value)"
        )
    used = [k for k in ("filterable", "regex", "glob", "fuzzy") if spec.get(k) is True]
    if embed is not None:
        used.append("embed")
    if used:
        raise InvalidRequest(
            f"{where}: {', '.join(used)} need(s) the stored value; not allowed with store: false"
        )
    old = existing.full_text_search if existing is not None else None
    if old is not None:
        before = FtsConfig.from_json(old, attribute=where)
        after = FtsConfig.from_json(fts, attribute=where)
        if before is not None and after is not None and before.analysis_key() != after.analysis_key():
            raise InvalidRequest(
                f"{where}.full_text_search: the analysis of an attribute with store: false cannot "
                "change (its raw values are not kept to re-index them); only k1, b and k3 can"
            )
    return False


def unstored_message(name: str) -> str:
    """Why a request cannot read the value of an attribute with ``store: false``."""
    return (
        f"attribute {name!r} has store: false: its raw value is not kept, only its full-text index "
        "(rank by BM25, or filter with ContainsAllTokens, ContainsAnyToken or ContainsTokenSequence)"
    )


def unstored(schema: Schema) -> list[str]:
    """The attributes with ``store: false`` (RFC 0008), sorted."""
    return sorted(n for n, a in schema.attributes.items() if not a.store)


def embed_target(name: str) -> str:
    """The vector attribute an embedded string attribute writes to when it names none."""
    return f"$embed_{name}"


def _embed_option(name: str, v: Any, atype: AttrType) -> dict[str, Any] | None:
    """``embed``: a model name or ``{"model", "attribute"?, "dims"?}``; ``null`` removes it."""
    where = f"schema.{name}.embed"
    if v is None:
        return None
    if atype != AttrType("string"):
        raise InvalidRequest(f"{where}: only string attributes can be embedded; {name!r} is {atype}")
    if isinstance(v, str):
        v = {"model": v}
    if not isinstance(v, dict) or "model" not in v or set(v) - {"model", "attribute", "dims"}:
        raise InvalidRequest(
            f'{where}: expected a model name or {{"model": ..., "attribute"?: ..., "dims"?: ...}}'
        )
    if v["model"] not in EMBED_MODEL_ALIASES:
        raise InvalidRequest(
            f"{where}.model: unknown embedding model {v['model']!r:.60}; this server has {EMBED_MODEL!r}"
        )
    dims = v.get("dims", EMBED_DIMS)
    if dims != EMBED_DIMS or isinstance(dims, bool):
        raise InvalidRequest(
            f"{where}.dims: {EMBED_MODEL} embeds at {EMBED_DIMS} dimensions, got {dims!r:.20}"
        )
    target = v.get("attribute", embed_target(name))
    if not isinstance(target, str) or not target or target == name:
        raise InvalidRequest(
            f"{where}.attribute: expected the name of a vector attribute, got {target!r:.60}"
        )
    return {"model": EMBED_MODEL, "attribute": target, "dims": EMBED_DIMS}


def _sparse_knn(
    where: str, spec: dict[str, Any], atype: AttrType, current: dict[str, Any] | None, *, new: bool
) -> dict[str, Any] | None:
    """The ``sparse_knn`` option: only on ``{}f16``; on by default (dot product, the only metric)."""
    if "sparse_knn" not in spec:
        return {"distance_metric": "dot_product"} if new and atype.is_sparse else current
    v = spec["sparse_knn"]
    if not atype.is_sparse:
        if v in (False, None):
            return None
        raise InvalidRequest(f"{where}.sparse_knn: only sparse vector attributes ({SPARSE_TYPE}) have it")
    if v in (False, None):
        return None
    if v is True:
        return {"distance_metric": "dot_product"}
    if not isinstance(v, dict):
        raise InvalidRequest(f"{where}.sparse_knn: expected true, false or an object")
    unknown = set(v) - {"distance_metric"}
    if unknown:
        raise InvalidRequest(f"{where}.sparse_knn: unknown option(s) {', '.join(sorted(unknown))}")
    metric = v.get("distance_metric", "dot_product")
    if metric not in SPARSE_METRICS:
        raise InvalidRequest(
            f"{where}.sparse_knn.distance_metric: expected {', '.join(SPARSE_METRICS)}, got {metric!r:.40}"
        )
    return {"distance_metric": metric}


def _add_embed_targets(attrs: dict[str, AttributeSchema]) -> None:
    """Every embedded attribute's target: created as ``[384]f32`` (cosine) when missing, checked
    to be a vector of the model's dimensions otherwise."""
    embedded = [(n, a.embed) for n, a in attrs.items() if a.embed is not None]
    if len(embedded) > MAX_EMBEDDED_ATTRIBUTES:
        raise InvalidRequest(f"schema: at most {MAX_EMBEDDED_ATTRIBUTES} embedded attributes per namespace")
    for name, cfg in embedded:
        target = cfg["attribute"]
        have = attrs.get(target)
        if have is None:
            if not target.startswith("$embed_"):
                check_attr_name(target)
            attrs[target] = AttributeSchema(
                AttrType("vector", dims=EMBED_DIMS, dtype="f32"),
                filterable=False,
                ann={"distance_metric": "cosine_distance"},
            )
        elif have.type != AttrType("vector", dims=EMBED_DIMS, dtype="f32"):
            raise InvalidRequest(
                f"schema.{name}.embed.attribute: {target!r} is {have.type}; embeddings need [{EMBED_DIMS}]f32"
            )


def embed_targets(schema: Schema) -> set[str]:
    return {a.embed["attribute"] for a in schema.attributes.values() if a.embed is not None}


def apply_schema_update(schema: Schema, update: Any) -> Schema:
    """Merge a write's (or POST schema's) ``schema`` object into ``schema``. Validates everything."""
    if not isinstance(update, dict):
        raise InvalidRequest("schema: expected an object mapping attribute names to types")
    id_type = schema.id_type
    attrs = dict(schema.attributes)
    new = 0
    for name, spec in update.items():
        if name == "id":
            if isinstance(spec, dict) and "drop" in spec:
                raise InvalidRequest("schema.id: the id attribute cannot be dropped")
            t = spec.get("type") if isinstance(spec, dict) else spec
            if t not in ID_TYPES:
                raise InvalidRequest(f"schema.id: expected one of {', '.join(ID_TYPES)}, got {t!r}")
            if id_type is not None and id_type != t:
                raise InvalidRequest(f"schema.id: the namespace's id type is {id_type}, cannot change to {t}")
            id_type = t
            continue
        if name.startswith("$embed_") and name[len("$embed_") :] in (set(update) | set(attrs)):
            continue  # a computed embedding target (echoed back from GET schema): recreated below
        check_attr_name(name)
        if isinstance(spec, dict) and spec.get("drop") is True:
            if set(spec) != {"drop"}:
                raise InvalidRequest(f"schema.{name}: 'drop' cannot be combined with other options")
            attrs.pop(name, None)
            continue
        if name not in schema.attributes:
            new += 1
            if new > MAX_ATTRIBUTES:  # per request: stop before validating the rest of a huge schema
                raise InvalidRequest(
                    f"schema.{name}: a request may add at most {MAX_ATTRIBUTES} attributes to a namespace"
                )
        attrs[name] = _attr_from_json(name, spec, attrs.get(name))
    _add_embed_targets(attrs)
    if len(attrs) > MAX_ATTRIBUTES:
        raise InvalidRequest(
            f"schema: the namespace would have {len(attrs)} attributes; at most {MAX_ATTRIBUTES} are allowed"
        )
    return replace(schema, id_type=id_type, attributes=attrs)


# --- full-text analysis options ------------------------------------------------------------
# An attribute's ``full_text_search`` options; ``lagoon.index.text.analyze`` implements them.

WORD_TOKENIZERS: Final = ("word_v0", "word_v1", "word_v2", "word_v3", "word_v4")
PRE_TOKENIZED: Final = "pre_tokenized_array"
TOKENIZERS: Final = (*WORD_TOKENIZERS, PRE_TOKENIZED)

# turbopuffer language name -> (Snowball algorithm in PyStemmer, its ISO 639-1 code)
LANGUAGES: Final[Mapping[str, tuple[str, str]]] = {
    "arabic": ("arabic", "ar"),
    "danish": ("danish", "da"),
    "dutch": ("dutch", "nl"),
    "english": ("english", "en"),
    "finnish": ("finnish", "fi"),
    "french": ("french", "fr"),
    "german": ("german", "de"),
    "greek": ("greek", "el"),
    "hungarian": ("hungarian", "hu"),
    "italian": ("italian", "it"),
    "norwegian": ("norwegian", "no"),
    "portuguese": ("portuguese", "pt"),
    "romanian": ("romanian", "ro"),
    "russian": ("russian", "ru"),
    "spanish": ("spanish", "es"),
    "swedish": ("swedish", "sv"),
    "tamil": ("tamil", "ta"),
    "turkish": ("turkish", "tr"),
}

MAX_TOKEN_LENGTH_LIMIT: Final = 254


def _invalid(option: str, message: str, attribute: str | None) -> InvalidRequest:
    where = f" of attribute {attribute!r}" if attribute else ""
    return InvalidRequest(f"invalid full_text_search option {option!r}{where}: {message}")


@dataclass(frozen=True)
class FtsConfig:
    """The ``full_text_search`` options of one attribute. Construction validates every field."""

    tokenizer: str = "word_v3"
    language: str = "english"
    stemming: bool = False
    remove_stopwords: bool = False
    case_sensitive: bool = False
    ascii_folding: bool = False
    max_token_length: int = 39
    k1: float = 1.2
    b: float = 0.75
    k3: float = 8.0

    def __post_init__(self) -> None:
        self._validate(None)

    def _validate(self, attribute: str | None) -> None:
        if self.tokenizer not in TOKENIZERS:
            raise _invalid(
                "tokenizer", f"must be one of {', '.join(TOKENIZERS)}; got {self.tokenizer!r}", attribute
            )
        if self.language not in LANGUAGES:
            raise _invalid(
                "language", f"must be one of {', '.join(LANGUAGES)}; got {self.language!r}", attribute
            )
        for name in ("stemming", "remove_stopwords", "case_sensitive", "ascii_folding"):
            if not isinstance(getattr(self, name), bool):
                raise _invalid(name, f"must be a boolean; got {getattr(self, name)!r}", attribute)
        mtl = self.max_token_length
        if isinstance(mtl, bool) or not isinstance(mtl, int) or not 1 <= mtl <= MAX_TOKEN_LENGTH_LIMIT:
            raise _invalid(
                "max_token_length",
                f"must be an integer from 1 to {MAX_TOKEN_LENGTH_LIMIT}; got {mtl!r}",
                attribute,
            )
        for name, upper in (("k1", math.inf), ("b", 1.0), ("k3", math.inf)):
            v = getattr(self, name)
            if (
                isinstance(v, bool)
                or not isinstance(v, int | float)
                or not (0.0 <= v <= upper)
                or math.isinf(v)
            ):
                bound = "between 0 and 1" if upper == 1.0 else "a finite number >= 0"
                raise _invalid(name, f"must be {bound}; got {v!r}", attribute)
            object.__setattr__(self, name, float(v))

    @classmethod
    def from_json(cls, value: bool | Mapping[str, Any], *, attribute: str | None = None) -> FtsConfig | None:
        """Parse the wire form: ``true`` (defaults), ``false`` (FTS off: returns None) or an object.

        Unknown options, wrong types and out-of-range values raise ``InvalidRequest`` naming the
        option. A JSON ``null`` option means "use the default".
        """
        if isinstance(value, bool):
            return cls() if value else None
        if not isinstance(value, Mapping):
            raise InvalidRequest(
                f"full_text_search{f' of attribute {attribute!r}' if attribute else ''} must be a boolean "
                f"or an object; got {type(value).__name__}"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, v in value.items():
            if key not in known:
                raise _invalid(str(key), f"unknown option (known: {', '.join(sorted(known))})", attribute)
            if v is not None:
                kwargs[key] = v
        config = object.__new__(cls)
        defaults = cls()
        for f in dataclasses.fields(cls):
            object.__setattr__(config, f.name, kwargs.get(f.name, getattr(defaults, f.name)))
        config._validate(attribute)
        return config

    def to_json(self) -> dict[str, Any]:
        """Every option, explicitly (so a stored schema does not change meaning if defaults do)."""
        return dataclasses.asdict(self)

    def analysis_key(self) -> tuple[object, ...]:
        """The options that decide which tokens are produced. Equal keys mean equal tokens, so an
        index built under one config serves the other (``k1``, ``b``, ``k3`` only affect scores)."""
        family = self.tokenizer if self.tokenizer == PRE_TOKENIZED else tokenizer_family(self.tokenizer)
        uses_language = self.stemming or self.remove_stopwords
        return (
            family,
            self.language if uses_language else None,
            self.stemming,
            self.remove_stopwords,
            self.case_sensitive,
            self.ascii_folding,
            self.max_token_length,
        )


def tokenizer_family(tokenizer: str) -> str:
    """word_v0/word_v1 keep ideographs inside words; word_v2..v4 split every ideograph off."""
    return "word_ideograph_runs" if tokenizer in ("word_v0", "word_v1") else "word_ideograph_split"
