"""Parse and validate a write request body completely, before anything is written.

``parse_write(body, schema)`` checks every field against the namespace schema (inferring the
types of new attributes from all values in the request), converts values to canonical form and
returns a ``ValidatedWrite``, or raises InvalidRequest naming the offending field. Pure: no I/O.

Upserted documents are validated as columns, not as rows: ``upsert_rows`` is turned into one
list of values per attribute, ``upsert_columns`` is taken as it is, and each column is coerced in
one step into an Arrow array of its attribute's exact type (a vector column into one float32
matrix: ``values.coerce_vectors``). The result, a ``DocBatch``, is what the write path turns into
the WAL entry's document table without building Python rows. Patches stay rows: they are merged
into current documents one by one anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from operator import itemgetter
from typing import Any

import numpy as np
import pyarrow as pa

from lagoon.errors import InvalidRequest
from lagoon.index import embed
from lagoon.index.filters.parse import parse_filter
from lagoon.index.filters.tree import Filter
from lagoon.schema import (
    DISTANCE_METRICS,
    MAX_ATTRIBUTES,
    AttributeSchema,
    AttrType,
    Schema,
    apply_schema_update,
    check_attr_name,
    check_writable,
    unstored,
)
from lagoon.values import (
    U64_MAX,
    DecodedVector,
    Id,
    canonical_from_arrow,
    coerce_column,
    coerce_id,
    coerce_value,
    coerce_vectors,
    column_to_arrow,
    id_to_json,
    infer_type,
    vectors_to_arrow,
)

Doc = dict[str, Any]

WRITE_KEYS = {
    "upsert_rows",
    "upsert_columns",
    "patch_rows",
    "patch_columns",
    "deletes",
    "delete_by_filter",
    "delete_by_filter_allow_partial",
    "patch_by_filter",
    "patch_by_filter_allow_partial",
    "upsert_condition",
    "patch_condition",
    "delete_condition",
    "return_affected_ids",
    "distance_metric",
    "schema",
    "create_namespace",
    "copy_from_namespace",
    "branch_from_namespace",
    "encryption",
    "disable_backpressure",
}
MAX_DELETE_BY_FILTER_ROWS = 5_000_000
MAX_PATCH_BY_FILTER_ROWS = 50_000


@dataclass(frozen=True)
class DocBatch:
    """Upserted documents as columns: their canonical ids, in request order, and one Arrow
    array per attribute that some of them set (null where a document does not), each of the
    attribute's exact Arrow type (``AttrType.arrow_type``)."""

    ids: list[Id] = field(default_factory=list)
    columns: dict[str, pa.Array] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def __bool__(self) -> bool:
        return bool(self.ids)

    def row(self, i: int, schema: Schema) -> Doc:
        """Document ``i``'s canonical values (attributes it does not set left out)."""
        out: Doc = {}
        for name, col in self.columns.items():
            value = col[i].as_py()
            if value is not None:
                out[name] = canonical_from_arrow(value, schema.attributes[name].type)
        return out

    def rows(self, schema: Schema) -> Iterator[tuple[Id, Doc]]:
        for i, ident in enumerate(self.ids):
            yield ident, self.row(i, schema)


@dataclass(frozen=True)
class ValidatedWrite:
    """A write that passed every check of ``parse_write`` against ``schema``: documents are
    canonical (see lagoon.values), ids are canonical ids, filters are parsed. The write path
    accepts nothing else (engine/writer.py)."""

    schema: Schema  # the schema after this request's schema changes and inferred types
    schema_changed: bool
    upserts: DocBatch = field(default_factory=DocBatch)
    patches: list[tuple[Id, Doc]] = field(default_factory=list)
    deletes: list[Id] = field(default_factory=list)
    delete_by_filter: Filter | None = None
    delete_by_filter_allow_partial: bool = False
    patch_by_filter: tuple[Filter, Doc] | None = None
    patch_by_filter_allow_partial: bool = False
    upsert_condition: Filter | None = None
    patch_condition: Filter | None = None
    delete_condition: Filter | None = None
    return_affected_ids: bool = False
    create_namespace: bool | None = None
    logical_bytes: int = 0
    # {"mode": "default"} or {"mode": "customer-managed", "key_name": K}; None: not in the request
    encryption: dict[str, str] | None = None

    @property
    def writes_documents(self) -> bool:
        return bool(
            self.upserts or self.patches or self.deletes or self.delete_by_filter or self.patch_by_filter
        )


@dataclass
class _RawColumns:
    """Upserted documents as they arrived, gathered into columns: ``ids[i]`` and
    ``values[name][i]`` (None: absent or null) of document i; ``present[name]``: how many
    documents name the attribute (null included); ``where(i)``: how errors name document i."""

    ids: list[Any]
    values: dict[str, list[Any]]
    present: dict[str, int]
    where: Callable[[int], str]


def _raw_from_rows(rows: Any, key: str) -> _RawColumns:
    if not isinstance(rows, list):
        raise InvalidRequest(f"{key}: expected an array of documents")
    return _uniform_rows(rows, key) or _mixed_rows(rows, key)


def _uniform_rows(rows: list[Any], key: str) -> _RawColumns | None:
    """Documents that all name the same attributes (the usual batch), gathered a column at a
    time; None when they do not (``_mixed_rows`` then goes document by document)."""
    first = rows[0] if rows else None
    if type(first) is not dict or "id" not in first:
        return None
    names = first.keys()
    if set(map(type, rows)) != {dict} or not all(map(names.__eq__, map(dict.keys, rows))):
        return None
    values = {name: list(map(itemgetter(name), rows)) for name in names if name != "id"}
    ids = list(map(itemgetter("id"), rows))
    return _RawColumns(ids, values, dict.fromkeys(values, len(rows)), lambda i: f"{key}[{i}]")


def _mixed_rows(rows: list[Any], key: str) -> _RawColumns:
    n = len(rows)
    ids: list[Any] = []
    values: dict[str, list[Any]] = {}
    present: dict[str, int] = {}
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise InvalidRequest(f"{key}[{i}]: expected a document object")
        if "id" not in r:
            raise InvalidRequest(f"{key}[{i}]: 'id' is required")
        for name, value in r.items():
            if name == "id":
                ids.append(value)
                continue
            col = values.get(name)
            if col is None:
                col = values[name] = [None] * n
                present[name] = 0
            col[i] = value
            present[name] += 1
    return _RawColumns(ids, values, present, lambda i: f"{key}[{i}]")


def _raw_from_columns(cols: Any, key: str) -> _RawColumns:
    n = _column_length(cols, key)
    values = {k: v for k, v in cols.items() if k != "id"}
    return _RawColumns(list(cols["id"]), values, dict.fromkeys(values, n), lambda i: f"{key}[{i}]")


def _concat_raw(a: _RawColumns, b: _RawColumns) -> _RawColumns:
    """``a``'s documents then ``b``'s (a request may carry both upsert_rows and upsert_columns)."""
    na, nb = len(a.ids), len(b.ids)
    names = list(dict.fromkeys([*a.values, *b.values]))
    values = {k: a.values.get(k, [None] * na) + b.values.get(k, [None] * nb) for k in names}
    present = {k: a.present.get(k, 0) + b.present.get(k, 0) for k in names}
    return _RawColumns(a.ids + b.ids, values, present, lambda i: a.where(i) if i < na else b.where(i - na))


def _upsert_columns(body: dict[str, Any]) -> _RawColumns:
    raws = []
    if body.get("upsert_rows") is not None:
        raws.append(_raw_from_rows(body["upsert_rows"], "upsert_rows"))
    if body.get("upsert_columns") is not None:
        raws.append(_raw_from_columns(body["upsert_columns"], "upsert_columns"))
    if not raws:
        return _RawColumns([], {}, {}, str)
    return raws[0] if len(raws) == 1 else _concat_raw(raws[0], raws[1])


def _lists_unless_vector(raw: _RawColumns, schema: Schema) -> None:
    """The request decoder hands ``vector`` number arrays over as ``DecodedVector`` (float64, no
    Python float per element). They stay so for a dense vector attribute, and for a ``vector``
    not typed yet (inference reads a vector from them as from the list); an attribute of any
    other type gets the lists back, exactly as the body held them."""
    values = raw.values.get("vector")
    attr = schema.attributes.get("vector")
    if values is None or attr is None or attr.type.is_vector:
        return
    raw.values["vector"] = [v.as_list() if isinstance(v, DecodedVector) else v for v in values]


def _column_length(cols: Any, where: str) -> int:
    """The common length of a ``*_columns`` object's columns (400 unless they are equal arrays
    with an ``id`` column)."""
    if not isinstance(cols, dict):
        raise InvalidRequest(f"{where}: expected an object of equal-length columns")
    if "id" not in cols:
        raise InvalidRequest(f"{where}: the 'id' column is required")
    lengths = {k: len(v) for k, v in cols.items() if isinstance(v, list)}
    bad = [k for k, v in cols.items() if not isinstance(v, list)]
    if bad:
        raise InvalidRequest(f"{where}.{bad[0]}: expected an array")
    n = lengths["id"]
    for k, ln in lengths.items():
        if ln != n:
            raise InvalidRequest(f"{where}.{k}: has {ln} values, 'id' has {n}; columns must be equally long")
    return n


def _rows_from_columns(cols: Any, where: str) -> list[Any]:
    n = _column_length(cols, where)
    names = list(cols)
    return [{k: cols[k][i] for k in names} for i in range(n)]


def _rows(body: dict[str, Any], rows_key: str, cols_key: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    if rows_key in body and body[rows_key] is not None:
        rows = body[rows_key]
        if not isinstance(rows, list):
            raise InvalidRequest(f"{rows_key}: expected an array of documents")
        out += [(f"{rows_key}[{i}]", r) for i, r in enumerate(rows)]
    if cols_key in body and body[cols_key] is not None:
        out += [(f"{cols_key}[{i}]", r) for i, r in enumerate(_rows_from_columns(body[cols_key], cols_key))]
    for where, r in out:
        if not isinstance(r, dict):
            raise InvalidRequest(f"{where}: expected a document object")
        if "id" not in r:
            raise InvalidRequest(f"{where}: 'id' is required")
    return out


def _bool(body: dict[str, Any], key: str, default: bool = False) -> bool:
    v = body.get(key, default)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise InvalidRequest(f"{key}: expected true or false")
    return v


class _Inferred:
    """Types for attributes the schema lacks, inferred from every value in the request as the
    values are seen; the attribute limit is checked as each new name appears, so a request with
    many more costs no more to refuse."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.seen: dict[str, AttrType] = {}
        self.room = MAX_ATTRIBUTES - len(schema.attributes)

    def new(self, name: str) -> bool:
        """Whether ``name`` is an attribute the schema lacks (its name is checked then)."""
        if name == "id" or name in self.schema.attributes:
            return False
        check_attr_name(name)
        return True

    def see(self, name: str, value: Any, where: str) -> None:
        t = infer_type(name, value)
        if t is None:
            return
        prev = self.seen.get(name)
        if prev is None and len(self.seen) >= self.room:
            raise InvalidRequest(
                f"{where}.{name}: this write would give the namespace more than {MAX_ATTRIBUTES} "
                f"attributes ({len(self.schema.attributes)} in its schema, {len(self.seen) + 1} new ones "
                f"inferred from this request's documents so far); at most {MAX_ATTRIBUTES} are "
                "allowed per namespace (docs/limits.md)"
            )
        if prev is None or prev == t:
            self.seen[name] = t
        elif {prev.kind, t.kind} == {"int", "float"} and prev.array == t.array:
            self.seen[name] = AttrType("float", array=t.array)
        else:
            raise InvalidRequest(
                f"{where}.{name}: value of type {t} conflicts with type {prev} inferred from an "
                "earlier document in this request; declare the type in schema"
            )

    def result(self) -> Schema:
        if not self.seen:
            return self.schema
        attrs = dict(self.schema.attributes)
        for name, t in self.seen.items():
            attrs[name] = AttributeSchema(type=t, filterable=not t.is_vector, ann={} if t.is_vector else None)
        return replace(self.schema, attributes=attrs)


def _infer_new_attributes(schema: Schema, docs: list[tuple[str, Any]]) -> Schema:
    """Add types for attributes the schema lacks, inferred from every value of ``docs``."""
    inferred = _Inferred(schema)
    for where, doc in docs:
        for name, value in doc.items():
            if inferred.new(name):
                inferred.see(name, value, where)
    return inferred.result()


def _infer_from_columns(schema: Schema, raw: _RawColumns) -> Schema:
    """``_infer_new_attributes`` for upserted documents gathered into columns."""
    inferred = _Inferred(schema)
    for name, values in raw.values.items():
        if inferred.new(name):
            for i, value in enumerate(values):
                if value is not None:
                    inferred.see(name, value, raw.where(i))
    return inferred.result()


def _coerce_column(values: list[Any], atype: AttrType, where: Callable[[int], str]) -> pa.Array:
    """A column of values (None = null) -> an Arrow array of ``atype``, every value checked."""
    if atype.is_vector:
        matrix, valid = coerce_vectors(values, atype, where=where)
        return vectors_to_arrow(matrix, valid, atype)
    return column_to_arrow(coerce_column(values, atype, where=where), atype)


def _plain_uint_ids(ids: list[Any]) -> bool:
    """Whether every id is an int in 0..2^64-1 (then it is its own canonical id)."""
    return set(map(type, ids)) == {int} and min(ids) >= 0 and max(ids) <= U64_MAX


def _canonical_ids(raw: _RawColumns, id_type: str | None) -> list[Id]:
    """The documents' canonical ids: plain integer ids of a uint namespace are checked in one
    pass by type; any other column goes id by id (``coerce_id``)."""
    if id_type == "uint" and _plain_uint_ids(raw.ids):
        return raw.ids
    return [coerce_id(v, id_type, where=f"{raw.where(i)}.id")[0] for i, v in enumerate(raw.ids)]


def _naming(raw: _RawColumns, name: str) -> Callable[[int], str]:
    return lambda i: f"{raw.where(i)}.{name}"


def _coerce_batch(raw: _RawColumns, schema: Schema) -> DocBatch:
    """The upserted documents, checked and canonical, as a ``DocBatch`` (columns no document
    sets a value of are left out)."""
    ids = _canonical_ids(raw, schema.id_type)
    columns: dict[str, pa.Array] = {}
    for name, values in raw.values.items():
        attr = schema.attributes.get(name)
        if attr is None:
            first = next((i for i, v in enumerate(values) if v is not None), None)
            if first is None:
                continue  # a null for an attribute nobody has typed yet carries no information
            raise InvalidRequest(f"{raw.where(first)}.{name}: unknown attribute")
        column = _coerce_column(values, attr.type, _naming(raw, name))
        if column.null_count < len(column):
            columns[name] = column
    return DocBatch(ids, columns)


def batch_from_rows(rows: list[tuple[Id, Doc]], schema: Schema) -> DocBatch:
    """Canonical documents (rows) as a ``DocBatch``."""
    names = list(dict.fromkeys(n for _, d in rows for n, v in d.items() if v is not None))
    columns = {
        n: column_to_arrow([d.get(n) for _, d in rows], schema.attributes[n].type)
        for n in names
        if n in schema.attributes
    }
    return DocBatch([i for i, _ in rows], columns)


def _coerce_doc(doc: dict[str, Any], schema: Schema, where: str, *, patch: bool) -> tuple[Id, Doc]:
    ident, _ = coerce_id(doc["id"], schema.id_type, where=f"{where}.id")
    out: Doc = {}
    for name, value in doc.items():
        if name == "id":
            continue
        attr = schema.attributes.get(name)
        if attr is None:
            if value is None:
                continue  # a null for an attribute nobody has typed yet carries no information
            raise InvalidRequest(f"{where}.{name}: unknown attribute")
        if patch and attr.type.is_vector:
            raise InvalidRequest(f"{where}.{name}: vector attributes cannot be patched; upsert the document")
        out[name] = coerce_value(value, attr.type, where=f"{where}.{name}")
    return ident, out


MAX_EMBEDDED_ROWS = 128
"""Most documents one write may carry for embedded attributes (each is embedded in the request)."""


def embeds(body: Any, schema: Schema) -> bool:
    """Whether validating ``body`` may run the embedding model (callers then validate off the
    event loop): the schema, or the body's schema change, has an embedded attribute."""
    if any(a.embed is not None for a in schema.attributes.values()):
        return True
    spec = body.get("schema") if isinstance(body, dict) else None
    return isinstance(spec, dict) and any(isinstance(v, dict) and v.get("embed") for v in spec.values())


def _embed_upserts(
    upserts: DocBatch, present: dict[str, int], patches: list[tuple[Id, Doc]], schema: Schema
) -> DocBatch:
    """Set each embedded attribute's target vector from its text (lagoon/index/embed.py): the
    embedding of a non-null text, null for a null or absent one. Patches cannot change an
    embedded text (re-upsert the document), and nobody writes a target directly. Every upserted
    document then names the target (``present``)."""
    embedded = [(n, a.embed) for n, a in sorted(schema.attributes.items()) if a.embed is not None]
    if not embedded:
        return upserts
    embed.check_model(embedded[0][1]["model"], where=f"schema.{embedded[0][0]}.embed")
    columns = dict(upserts.columns)
    n = len(upserts)
    for name, cfg in embedded:
        target = cfg["attribute"]
        for _, doc in patches:
            if name in doc or target in doc:
                raise InvalidRequest(
                    f"patch: {name!r} is embedded into {target!r}; upsert the whole document to change it"
                )
        texts = columns[name].to_pylist() if name in columns else [None] * n
        wanted = [(i, t) for i, t in enumerate(texts) if t is not None]
        if len(wanted) > MAX_EMBEDDED_ROWS:
            raise InvalidRequest(
                f"upsert: at most {MAX_EMBEDDED_ROWS} documents per write carry embedded attribute {name!r}"
            )
        vectors: list[Any] = [None] * n
        if wanted:
            embedded_texts = embed.embed(
                cfg["model"], [str(t) for _, t in wanted], where=f"schema.{name}.embed"
            )
            for (i, _), v in zip(wanted, embedded_texts, strict=True):
                vectors[i] = v
        columns.pop(target, None)
        if wanted:
            columns[target] = column_to_arrow(vectors, schema.attributes[target].type)
        if n:
            present[target] = n
    return DocBatch(upserts.ids, columns)


def _value_bytes(v: Any) -> int:
    if isinstance(v, str):
        return len(v.encode())
    if hasattr(v, "nbytes"):
        return int(v.nbytes)
    if isinstance(v, list):
        return 8 * len(v)
    return 8


def _doc_bytes(doc: Doc) -> int:
    return 8 + sum(len(k) + _value_bytes(v) for k, v in doc.items())


def _batch_bytes(batch: DocBatch, present: dict[str, int], schema: Schema) -> int:
    """``_doc_bytes`` summed over the batch's documents, from its columns: each document 8, each
    attribute a document names its name's length plus its value's bytes (8 for a null)."""
    total = 8 * len(batch)
    for name, count in present.items():
        attr = schema.attributes.get(name)
        if attr is None or not count:
            continue
        col = batch.columns.get(name)
        values = 0 if col is None else len(col) - col.null_count
        total += count * len(name) + 8 * (count - values)
        if col is not None:
            total += _column_value_bytes(col, attr.type, values)
    return total


def _offsets_span(col: Any) -> int:
    """Elements (list, map) or bytes (string) held by a variable-length Arrow array with 32-bit
    offsets (a null holds none)."""
    if len(col) == 0:
        return 0
    if isinstance(col, pa.StringArray):
        offsets = np.frombuffer(col.buffers()[1], dtype=np.int32)[col.offset : col.offset + len(col) + 1]
    else:
        offsets = np.asarray(col.offsets)
    return int(offsets[-1] - offsets[0])


def _column_value_bytes(col: pa.Array, t: AttrType, values: int) -> int:
    """``_value_bytes`` of a column's ``values`` non-null canonical values, summed."""
    if t.is_vector:
        return values * 4 * t.dims  # canonical vectors are float32
    if t.array or t.is_sparse or t.is_multivector:
        return 8 * _offsets_span(col)  # a null holds no elements
    if t.kind == "string":
        return _offsets_span(col)
    return 8 * values


MAX_DENSE_FACTOR = 16  # columns may take this many times the request's values ...
MIN_DENSE_BYTES = 64 << 20  # ... or this much, whichever is larger


def _slot_bytes(t: AttrType) -> int:
    """Bytes an Arrow column of type ``t`` spends on one row, null or not."""
    if t.is_vector:
        return t.dims * {"f32": 4, "f16": 2, "i8": 1}.get(t.dtype, 4)
    return 8


def _check_density(rows: int, names: set[str], schema: Schema, logical: int) -> None:
    """Refuse documents so sparse that their columns (every row holds a slot for every attribute
    the request sets, null or not) would cost far more memory than the values they carry:
    100,000 rows each setting a different one of 1,024 attributes is 3 MB of JSON and 800 MB
    of columns. Bounded by max(16 x the values' bytes, 64 MiB) (docs/limits.md)."""
    dense = rows * sum(_slot_bytes(schema.attributes[n].type) for n in names if n in schema.attributes)
    limit = max(MAX_DENSE_FACTOR * logical, MIN_DENSE_BYTES)
    if dense > limit:
        raise InvalidRequest(
            f"documents too sparse: {rows} rows setting {len(names)} different attributes would "
            f"take {dense >> 20} MiB as columns for {logical >> 10} KiB of values (limit: "
            f"{MAX_DENSE_FACTOR}x the values or {MIN_DENSE_BYTES >> 20} MiB); write documents with "
            "different attributes in separate requests (docs/limits.md)"
        )


def check_vector_metrics(schema: Schema) -> None:
    """A vector attribute's own ``ann.distance_metric`` must agree with the namespace's top-level
    ``distance_metric`` when both are set (the top-level one applies to every vector attribute
    that declares none)."""
    top = schema.distance_metric
    if top is None:
        return
    for name, a in sorted(schema.attributes.items()):
        own = (a.ann or {}).get("distance_metric") if a.type.is_vector or a.type.is_multivector else None
        if own is not None and own != top:
            raise InvalidRequest(
                f"schema.{name}.ann.distance_metric: {name!r} declares {own} but the namespace's "
                f"distance_metric is {top}; a vector attribute's own metric must match the top-level "
                "one (omit one of them)"
            )


def parse_write(body: Any, schema: Schema) -> ValidatedWrite:
    """Validate a write body against ``schema``; InvalidRequest names the first problem found."""
    if not isinstance(body, dict):
        raise InvalidRequest("write body must be a JSON object")
    if "sharding" in body:
        raise InvalidRequest(
            "sharding: not supported; a Lagoon namespace is one set of segments on object storage that "
            "every node can serve, so it is never split into shards (docs/compatibility.md)"
        )
    unknown = set(body) - WRITE_KEYS
    if unknown:
        raise InvalidRequest(f"unknown write field(s): {', '.join(sorted(unknown))}")
    encryption = parse_encryption(body.get("encryption"))
    new_schema = schema
    if body.get("schema") is not None:
        new_schema = apply_schema_update(new_schema, body["schema"])

    metric = body.get("distance_metric")
    if metric is not None:
        if metric not in DISTANCE_METRICS:
            raise InvalidRequest(
                f"distance_metric: expected one of {', '.join(DISTANCE_METRICS)}, got {metric!r}"
            )
        if schema.distance_metric is not None and schema.distance_metric != metric:
            raise InvalidRequest(
                f"distance_metric: the namespace uses {schema.distance_metric}, got {metric}"
            )
        new_schema = replace(new_schema, distance_metric=metric)

    raw = _upsert_columns(body)
    _lists_unless_vector(raw, new_schema)
    patch_docs = _rows(body, "patch_rows", "patch_columns")

    id_type = new_schema.id_type
    if id_type != "uint" or not _plain_uint_ids(raw.ids):
        for i, ident in enumerate(raw.ids):
            _, t = coerce_id(ident, id_type, where=f"{raw.where(i)}.id")
            id_type = id_type or t
    for where, doc in patch_docs:
        _, t = coerce_id(doc["id"], id_type, where=f"{where}.id")
        id_type = id_type or t
    deletes_raw = body.get("deletes")
    if deletes_raw is not None and not isinstance(deletes_raw, list):
        raise InvalidRequest("deletes: expected an array of ids")
    for i, d in enumerate(deletes_raw or []):
        _, t = coerce_id(d, id_type, where=f"deletes[{i}]")
        id_type = id_type or t
    if id_type != new_schema.id_type:
        new_schema = replace(new_schema, id_type=id_type)

    new_schema = _infer_from_columns(new_schema, raw)
    new_schema = _infer_new_attributes(new_schema, patch_docs)

    upserts = _coerce_batch(raw, new_schema)
    patches = [_coerce_doc(d, new_schema, w, patch=True) for w, d in patch_docs]
    upserts = _embed_upserts(upserts, raw.present, patches, new_schema)
    deletes = [
        coerce_id(d, new_schema.id_type, where=f"deletes[{i}]")[0] for i, d in enumerate(deletes_raw or [])
    ]
    for label, ids in (
        ("upsert", upserts.ids),
        ("patch", [i for i, _ in patches]),
        ("deletes", deletes),
    ):
        if len(set(ids)) != len(ids):
            seen: set[Id] = set()
            dup = next(i for i in ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
            raise InvalidRequest(f"{label}: id {id_to_json(dup)!r} appears more than once in this request")

    if body.get("schema") is not None or metric is not None:
        check_vector_metrics(new_schema)
    if new_schema.distance_metric is None:
        # vector attributes with no metric of their own that this request writes a vector to
        bare = [
            n
            for n, a in sorted(new_schema.attributes.items())
            if (a.type.is_vector or (a.type.is_multivector and a.ann))
            and not (a.ann or {}).get("distance_metric")
        ]
        missing = [k for k in bare if k in upserts.columns]
        if missing:
            raise InvalidRequest(
                "distance_metric is required when writing vectors: vector attribute(s) "
                f"{', '.join(map(repr, missing))} have no metric of their own; set the top-level "
                "distance_metric (cosine_distance or euclidean_squared), which applies to every vector "
                'attribute, or give each one {"ann": {"distance_metric": ...}} in the schema'
            )

    dbf = None
    if body.get("delete_by_filter") is not None:
        dbf = parse_filter(body["delete_by_filter"], new_schema, where="delete_by_filter")
    pbf = None
    if body.get("patch_by_filter") is not None:
        spec = body["patch_by_filter"]
        if not isinstance(spec, dict) or set(spec) - {"filters", "patch"} or "filters" not in spec:
            raise InvalidRequest("patch_by_filter: expected {'filters': <filter>, 'patch': {attr: value}}")
        patch = spec.get("patch") or {}
        if not isinstance(patch, dict) or "id" in patch:
            raise InvalidRequest("patch_by_filter.patch: expected an object of attributes (without id)")
        new_schema = _infer_new_attributes(new_schema, [("patch_by_filter.patch", patch)])
        pdoc = _coerce_patch(patch, new_schema)
        pbf = (parse_filter(spec["filters"], new_schema, where="patch_by_filter.filters"), pdoc)
        _check_unstored_patches([("patch_by_filter.patch", patch)], new_schema)
    _check_unstored_patches(patch_docs, new_schema)

    conds: dict[str, Filter | None] = {}
    for key in ("upsert_condition", "patch_condition", "delete_condition"):
        conds[key] = (
            parse_filter(body[key], new_schema, where=key, allow_ref_new=True)
            if body.get(key) is not None
            else None
        )

    create = body.get("create_namespace")
    if create is not None and not isinstance(create, bool):
        raise InvalidRequest("create_namespace: expected true or false")
    if create is True and new_schema.id_type is None:
        new_schema = replace(new_schema, id_type="uint")

    _check_writable(new_schema)
    logical = (
        _batch_bytes(upserts, raw.present, new_schema)
        + sum(_doc_bytes(d) for _, d in patches)
        + 8 * len(deletes)
    )
    names = {n for n, count in raw.present.items() if count} | {n for _, d in patches for n in d}
    _check_density(len(upserts) + len(patches), names, new_schema, logical)
    return ValidatedWrite(
        schema=new_schema,
        schema_changed=new_schema != schema,
        upserts=upserts,
        patches=patches,
        deletes=deletes,
        delete_by_filter=dbf,
        delete_by_filter_allow_partial=_bool(body, "delete_by_filter_allow_partial"),
        patch_by_filter=pbf,
        patch_by_filter_allow_partial=_bool(body, "patch_by_filter_allow_partial"),
        upsert_condition=conds["upsert_condition"],
        patch_condition=conds["patch_condition"],
        delete_condition=conds["delete_condition"],
        return_affected_ids=_bool(body, "return_affected_ids"),
        create_namespace=create,
        logical_bytes=logical,
        encryption=encryption,
    )


_writable: list[Schema] = []  # the last schema check_writable passed (schemas are immutable)


def _check_writable(schema: Schema) -> None:
    """``check_writable``, once per schema object: a namespace's writes validate against the
    same schema object until it changes, and a schema's check always has the same outcome."""
    if _writable and _writable[0] is schema:
        return
    check_writable(schema)
    _writable[:] = [schema]


def canonical_upserts(upserts: list[tuple[Id, Doc]], schema: Schema) -> ValidatedWrite:
    """A write of documents already canonical under ``schema`` (read back from the columns of a
    namespace with this very schema, e.g. by a copy): nothing to validate, infer or embed."""
    return ValidatedWrite(
        schema=schema,
        schema_changed=False,
        upserts=batch_from_rows(upserts, schema),
        logical_bytes=sum(_doc_bytes(d) for _, d in upserts),
    )


def parse_encryption(v: Any) -> dict[str, str] | None:
    """A write's ``encryption``: ``{"mode": "default"}``, ``{"mode": "customer-managed",
    "key_name": K}`` or the older ``{"cmek": {"key_name": K}}`` / ``{"sse": true}``. Whether this
    server can honour a customer-managed key is the engine's decision (it knows the store)."""
    if v is None:
        return None
    if not isinstance(v, dict):
        raise InvalidRequest(
            'encryption: expected {"mode": "default"} or {"mode": "customer-managed", "key_name": ...}'
        )
    if v in ({"mode": "default"}, {"sse": True}):
        return {"mode": "default"}
    if set(v) == {"cmek"} and isinstance(v["cmek"], dict):
        v = {"mode": "customer-managed", **v["cmek"]}
    if v.get("mode") != "customer-managed" or set(v) - {"mode", "key_name", "encryption_context"}:
        raise InvalidRequest(
            'encryption: expected {"mode": "default"} or {"mode": "customer-managed", "key_name": ...}, '
            f"got {str(v)[:80]}"
        )
    key = v.get("key_name")
    if not isinstance(key, str) or not key:
        raise InvalidRequest("encryption.key_name: expected the KMS key's id, ARN or alias")
    if v.get("encryption_context"):
        raise InvalidRequest(
            "encryption.encryption_context: not supported; the server's KMS requests carry no "
            "per-namespace context (docs/compatibility.md)"
        )
    return {"mode": "customer-managed", "key_name": key}


def _check_unstored_patches(docs: list[tuple[str, Any]], schema: Schema) -> None:
    """A patch is resolved into a whole document from the current one, whose attributes with
    ``store: false`` (RFC 0008) are not kept once indexed: a patch must set them all, or it would
    drop the document's tokens."""
    names = unstored(schema)
    for where, doc in docs if names else ():
        missing = [n for n in names if n not in doc]
        if missing:
            raise InvalidRequest(
                f"{where}: {', '.join(map(repr, missing))} has store: false, so a patch cannot keep "
                "its current value; set it in the patch or upsert the whole document"
            )


def _coerce_patch(patch: dict[str, Any], schema: Schema) -> Doc:
    out: Doc = {}
    for name, value in patch.items():
        attr = schema.attributes.get(name)
        if attr is None:
            if value is None:
                continue
            raise InvalidRequest(f"patch_by_filter.patch.{name}: unknown attribute")
        if attr.type.is_vector:
            raise InvalidRequest(f"patch_by_filter.patch.{name}: vector attributes cannot be patched")
        out[name] = coerce_value(value, attr.type, where=f"patch_by_filter.patch.{name}")
    return out
