"""Parse and validate a write request body completely, before anything is written.

``parse_write(body, schema)`` checks every field against the namespace schema (inferring the
types of new attributes from all values in the request), converts values to canonical form and
returns a ``WriteRequest``, or raises InvalidRequest naming the offending field. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

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
from lagoon.values import Id, coerce_id, coerce_value, infer_type

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
class WriteRequest:
    """A validated write. Documents are canonical (see lagoon.values); ids are canonical ids."""

    schema: Schema  # the schema after this request's schema changes and inferred types
    schema_changed: bool
    upserts: list[tuple[Id, Doc]] = field(default_factory=list)
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


def _rows_from_columns(cols: Any, where: str) -> list[Any]:
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


def _infer_new_attributes(schema: Schema, docs: list[tuple[str, Any]], is_patch: list[bool]) -> Schema:
    """Add types for attributes the schema lacks, inferred from every value in the request."""
    seen: dict[str, AttrType] = {}
    room = MAX_ATTRIBUTES - len(schema.attributes)
    for (where, doc), _ in zip(docs, is_patch, strict=True):
        for name, value in doc.items():
            if name == "id" or name in schema.attributes:
                continue
            check_attr_name(name)
            t = infer_type(name, value)
            if t is None:
                continue
            prev = seen.get(name)
            if prev is None and len(seen) >= room:
                # Checked as each new name appears: a request with many more costs no more to refuse.
                raise InvalidRequest(
                    f"{where}.{name}: this write would give the namespace more than {MAX_ATTRIBUTES} "
                    f"attributes ({len(schema.attributes)} in its schema, {len(seen) + 1} new ones "
                    f"inferred from this request's documents so far); at most {MAX_ATTRIBUTES} are "
                    "allowed per namespace (docs/limits.md)"
                )
            if prev is None or prev == t:
                seen[name] = t
            elif {prev.kind, t.kind} == {"int", "float"} and prev.array == t.array:
                seen[name] = AttrType("float", array=t.array)
            else:
                raise InvalidRequest(
                    f"{where}.{name}: value of type {t} conflicts with type {prev} inferred from an "
                    "earlier document in this request; declare the type in schema"
                )
    if not seen:
        return schema
    attrs = dict(schema.attributes)
    for name, t in seen.items():
        attrs[name] = AttributeSchema(type=t, filterable=not t.is_vector, ann={} if t.is_vector else None)
    return replace(schema, attributes=attrs)


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


def _embed_upserts(upserts: list[tuple[Id, Doc]], patches: list[tuple[Id, Doc]], schema: Schema) -> None:
    """Set each embedded attribute's target vector from its text (lagoon/index/embed.py): the
    embedding of a non-null text, null for a null or absent one. Patches cannot change an
    embedded text (re-upsert the document), and nobody writes a target directly."""
    embedded = [(n, a.embed) for n, a in sorted(schema.attributes.items()) if a.embed is not None]
    if not embedded:
        return
    embed.check_model(embedded[0][1]["model"], where=f"schema.{embedded[0][0]}.embed")
    for name, cfg in embedded:
        target = cfg["attribute"]
        for _, doc in patches:
            if name in doc or target in doc:
                raise InvalidRequest(
                    f"patch: {name!r} is embedded into {target!r}; upsert the whole document to change it"
                )
        texts = [(doc, doc.get(name)) for _, doc in upserts]
        wanted = [(doc, t) for doc, t in texts if t is not None]
        if len(wanted) > MAX_EMBEDDED_ROWS:
            raise InvalidRequest(
                f"upsert: at most {MAX_EMBEDDED_ROWS} documents per write carry embedded attribute {name!r}"
            )
        for doc, _ in texts:
            doc[target] = None
        if wanted:
            vectors = embed.embed(cfg["model"], [str(t) for _, t in wanted], where=f"schema.{name}.embed")
            for (doc, _), v in zip(wanted, vectors, strict=True):
                doc[target] = v


def _doc_bytes(doc: Doc) -> int:
    n = 8
    for k, v in doc.items():
        n += len(k)
        if isinstance(v, str):
            n += len(v.encode())
        elif hasattr(v, "nbytes"):
            n += int(v.nbytes)
        elif isinstance(v, list):
            n += 8 * len(v)
        else:
            n += 8
    return n


MAX_DENSE_FACTOR = 16  # columns may take this many times the request's values ...
MIN_DENSE_BYTES = 64 << 20  # ... or this much, whichever is larger


def _slot_bytes(t: AttrType) -> int:
    """Bytes an Arrow column of type ``t`` spends on one row, null or not."""
    if t.is_vector:
        return t.dims * {"f32": 4, "f16": 2, "i8": 1}.get(t.dtype, 4)
    return 8


def _check_density(docs: list[tuple[Id, Doc]], schema: Schema, logical: int) -> None:
    """Refuse documents so sparse that their columns (every row holds a slot for every attribute
    the request sets, null or not) would cost far more memory than the values they carry:
    100,000 rows each setting a different one of 1,024 attributes is 3 MB of JSON and 800 MB
    of columns. Bounded by max(16 x the values' bytes, 64 MiB) (docs/limits.md)."""
    names: set[str] = set()
    for _, d in docs:
        names.update(d)
    dense = len(docs) * sum(_slot_bytes(schema.attributes[n].type) for n in names if n in schema.attributes)
    limit = max(MAX_DENSE_FACTOR * logical, MIN_DENSE_BYTES)
    if dense > limit:
        raise InvalidRequest(
            f"documents too sparse: {len(docs)} rows setting {len(names)} different attributes would "
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


def parse_write(body: Any, schema: Schema) -> WriteRequest:
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

    upsert_docs = _rows(body, "upsert_rows", "upsert_columns")
    patch_docs = _rows(body, "patch_rows", "patch_columns")
    all_docs = upsert_docs + patch_docs

    id_type = new_schema.id_type
    for where, doc in all_docs:
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

    new_schema = _infer_new_attributes(new_schema, upsert_docs, [False] * len(upsert_docs))
    new_schema = _infer_new_attributes(new_schema, patch_docs, [True] * len(patch_docs))

    upserts = [_coerce_doc(d, new_schema, w, patch=False) for w, d in upsert_docs]
    patches = [_coerce_doc(d, new_schema, w, patch=True) for w, d in patch_docs]
    _embed_upserts(upserts, patches, new_schema)
    deletes = [
        coerce_id(d, new_schema.id_type, where=f"deletes[{i}]")[0] for i, d in enumerate(deletes_raw or [])
    ]
    for label, ids in (
        ("upsert", [i for i, _ in upserts]),
        ("patch", [i for i, _ in patches]),
        ("deletes", deletes),
    ):
        if len(set(ids)) != len(ids):
            seen: set[Id] = set()
            dup = next(i for i in ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
            raise InvalidRequest(f"{label}: id {dup!r} appears more than once in this request")

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
        missing = [k for k in bare if any(d.get(k) is not None for _, d in upserts)]
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
        new_schema = _infer_new_attributes(new_schema, [("patch_by_filter.patch", patch)], [True])
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

    check_writable(new_schema)
    logical = (
        sum(_doc_bytes(d) for _, d in upserts) + sum(_doc_bytes(d) for _, d in patches) + 8 * len(deletes)
    )
    _check_density(upserts + patches, new_schema, logical)
    return WriteRequest(
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


def canonical_upserts(upserts: list[tuple[Id, Doc]], schema: Schema) -> WriteRequest:
    """A write of documents already canonical under ``schema`` (read back from the columns of a
    namespace with this very schema, e.g. by a copy): nothing to validate, infer or embed."""
    return WriteRequest(
        schema=schema,
        schema_changed=False,
        upserts=upserts,
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
