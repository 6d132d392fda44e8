"""The OpenAPI 3.1 document of every route, served at ``/openapi.json``.

Hand-written, so it says what Lagoon promises rather than what a framework infers: request shapes
as loose as the turbopuffer wire protocol (filters and rank expressions are JSON arrays the engine
validates), response shapes as tight as the SDK relies on (required fields, the error body).
Every operation documents its success response and its error statuses; the schemathesis suite
(tests/server) checks that a live server never answers 5xx to anything generated from this document
and that every response matches it. Paths use ``{namespace}`` like turbopuffer's spec.
"""

from __future__ import annotations

import functools
from typing import Any

import orjson

NAMESPACE_PATTERN = r"^[A-Za-z0-9_.\-]{1,128}$"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _body(schema: dict[str, Any], *, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


_ERR = _ref("ErrorResponse")
_ERROR_TEXT = {
    "400": "Invalid request (bad JSON, wrong types, invalid names, schema violations).",
    "401": "Missing or invalid API key.",
    "403": "The API key's role does not allow this operation.",
    "404": "Namespace not found (or owned by another org).",
    "405": "Method not allowed.",
    "408": "The request body did not arrive before the request deadline.",
    "409": (
        "Commit contention outlived the retry budget (retry), or the namespace is damaged "
        "(x-should-retry: false; the message names lagoon repair)."
    ),
    "413": "Request body larger than server.max_body_bytes.",
    "422": "Well-formed but impossible request.",
    "429": "Rate, concurrency or backpressure limit; retry after Retry-After.",
    "500": "Internal error or data corruption; the body carries a request id.",
    "501": "Not implemented by this build.",
    "503": "Object store unavailable, deadline exceeded, or shutting down; retry after Retry-After.",
}


def _errors(*codes: str) -> dict[str, Any]:
    common = ("400", "401", "403", "408", "409", "413", "429", "500", "503")
    out: dict[str, Any] = {}
    for code in sorted({*common, *codes}):
        out[code] = _json(_ERR, _ERROR_TEXT[code])
    out["default"] = _json(_ERR, "An error.")
    return out


_NS_PARAM = {"$ref": "#/components/parameters/namespace"}


def _op(
    op_id: str,
    summary: str,
    ok_code: str,
    ok_schema: dict[str, Any],
    *,
    body: dict[str, Any] | None = None,
    ns: bool = True,
    errors: tuple[str, ...] = ("404",),
    params: list[dict[str, Any]] | None = None,
    security: bool = True,
    tags: tuple[str, ...] = ("namespaces",),
    links: dict[str, Any] | None = None,
) -> dict[str, Any]:
    ok = _json(ok_schema, "Success.")
    if links:
        ok["links"] = links
    op: dict[str, Any] = {
        "operationId": op_id,
        "summary": summary,
        "tags": list(tags),
        "parameters": ([_NS_PARAM] if ns else []) + (params or []),
        "responses": {ok_code: ok, **(_errors(*errors) if security else {})},
    }
    if body is not None:
        op["requestBody"] = body
    if not security:
        op["security"] = []
    return op


_ANY: dict[str, Any] = {}
_ID = {
    "description": "A document id: an unsigned 64-bit integer, a UUID, or a string of at most 64 bytes.",
    "anyOf": [
        {"type": "integer", "minimum": 0, "maximum": 18446744073709551615},
        {"type": "string", "format": "uuid"},
        {"type": "string", "maxLength": 64},
    ],
}
_VECTOR = {
    "description": "A dense vector: an array of numbers or a base64 string of little-endian float32.",
    "oneOf": [{"type": "array", "items": {"type": "number"}}, {"type": "string"}],
}
_FILTER = {
    "description": 'A filter expression: [attr, Op, value], ["And", [...]], ["Or", [...]], ["Not", f]. '
    'Any literal of a write condition may be {"$ref_new": attr}.',
    "type": "array",
}
_RANK_BY = {
    "description": '[attr, "ANN"|"kNN", vector], [attr, "BM25", text, opts?], ["Sum"|"Max", [...]], '
    '["Product", w, clause], [attr, "asc"|"desc"], or a list of [attr, dir] pairs.',
    "type": "array",
}
_ATTRIBUTE_PROPERTIES = {
    "type": {"type": "string"},
    "filterable": {"type": "boolean"},
    "full_text_search": {"anyOf": [{"type": "boolean"}, {"type": "object"}]},
    "ann": {"anyOf": [{"type": "boolean"}, {"type": "object"}]},
}
_ATTRIBUTE_SCHEMA = {
    "description": "A type name (string, int, uint, float, bool, datetime, uuid, their [] arrays, [N]f32, "
    '[N]f16) or a configuration object; {"drop": true} drops the attribute.',
    "anyOf": [
        {"type": "string"},
        {"type": "object", "properties": {**_ATTRIBUTE_PROPERTIES, "drop": {"type": "boolean"}}},
    ],
}
_ATTRIBUTE_SCHEMA_CONFIG = {"type": "object", "properties": _ATTRIBUTE_PROPERTIES, "required": ["type"]}
_SCHEMA_MAP = {"type": "object", "additionalProperties": _ref("AttributeSchema")}
_SCHEMA_CONFIG_MAP = {"type": "object", "additionalProperties": _ref("AttributeSchemaConfig")}
_NS_SOURCE = {
    "anyOf": [
        {"type": "string"},
        {
            "type": "object",
            "properties": {"source_namespace": {"type": "string"}},
            "required": ["source_namespace"],
        },
    ]
}
_COLUMNS = {
    "type": "object",
    "description": "Columnar documents: every key maps to an array of equal length; `id` is required.",
    "properties": {"id": {"type": "array", "items": _ID}},
    "required": ["id"],
    "additionalProperties": {"type": "array"},
}
_ROW = {
    "type": "object",
    "description": "One document: `id`, optional `vector`, attributes; query rows add `$dist`.",
    "properties": {"id": _ID, "vector": _VECTOR, "$dist": {"type": "number"}},
    "required": ["id"],
    "additionalProperties": True,
}
_WRITE = {
    "type": "object",
    "properties": {
        "upsert_rows": {"type": "array", "items": _ref("Row")},
        "upsert_columns": _ref("Columns"),
        "patch_rows": {"type": "array", "items": _ref("Row")},
        "patch_columns": _ref("Columns"),
        "deletes": {"type": "array", "items": _ID},
        "upsert_condition": _ref("Filter"),
        "patch_condition": _ref("Filter"),
        "delete_condition": _ref("Filter"),
        "delete_by_filter": _ref("Filter"),
        "delete_by_filter_allow_partial": {"type": "boolean"},
        "patch_by_filter": {
            "type": "object",
            "properties": {"filters": _ref("Filter"), "patch": {"type": "object"}},
            "required": ["filters", "patch"],
        },
        "patch_by_filter_allow_partial": {"type": "boolean"},
        "return_affected_ids": {"type": "boolean"},
        "distance_metric": {"enum": ["cosine_distance", "euclidean_squared"]},
        "schema": _SCHEMA_MAP,
        "create_namespace": {"type": "boolean"},
        "branch_from_namespace": _NS_SOURCE,
        "copy_from_namespace": _NS_SOURCE,
        "disable_backpressure": {"type": "boolean"},
    },
}
_WRITE_RESULT = {
    "type": "object",
    "properties": {
        "status": {"const": "OK"},
        "message": {"type": "string"},
        "rows_affected": {"type": "integer", "minimum": 0},
        "rows_upserted": {"type": "integer", "minimum": 0},
        "rows_patched": {"type": "integer", "minimum": 0},
        "rows_deleted": {"type": "integer", "minimum": 0},
        "rows_remaining": {"type": "boolean"},
        "version": {"type": "integer", "minimum": 0},
        "upserted_ids": {"type": "array", "items": _ID},
        "patched_ids": {"type": "array", "items": _ID},
        "deleted_ids": {"type": "array", "items": _ID},
        "billing": {
            "type": "object",
            "properties": {"billable_logical_bytes_written": {"type": "integer", "minimum": 0}},
            "required": ["billable_logical_bytes_written"],
        },
        "performance": {
            "type": "object",
            "properties": {"server_total_ms": {"type": "integer", "minimum": 0}},
            "required": ["server_total_ms"],
        },
    },
    "required": ["status", "message", "rows_affected", "billing"],
}
_QUERY_FIELDS: dict[str, Any] = {
    "rank_by": _ref("RankBy"),
    "top_k": {"type": "integer"},
    "limit": {"anyOf": [{"type": "integer"}, {"type": "object"}]},
    "offset": {"type": "integer"},
    "filters": _ref("Filter"),
    "include_attributes": {"anyOf": [{"type": "boolean"}, {"type": "array", "items": {"type": "string"}}]},
    "exclude_attributes": {"type": "array", "items": {"type": "string"}},
    "aggregate_by": {"type": "object"},
    "group_by": {"type": "array"},
    "distance_metric": {"enum": ["cosine_distance", "euclidean_squared"]},
}
_QUERY_CONFIG: dict[str, Any] = {
    "consistency": {"type": "object", "properties": {"level": {"enum": ["strong", "eventual"]}}},
    "vector_encoding": {"enum": ["float", "base64"]},
    "at_version": {
        "type": "integer",
        "minimum": 1,
        "description": "Lagoon: answer from the namespace as of this version (while retained).",
    },
}
_QUERY = {
    "type": "object",
    "description": "A single query, or a multi-query when `queries` is present (at most 16, one snapshot, "
    'optional `rerank_by: ["RRF", {...}]` fusion).',
    "properties": {
        **_QUERY_FIELDS,
        **_QUERY_CONFIG,
        "queries": {"type": "array", "items": {"type": "object", "properties": _QUERY_FIELDS}},
        "rerank_by": {"type": "array"},
    },
}
_QUERY_BILLING = {
    "type": "object",
    "properties": {
        "billable_logical_bytes_queried": {"type": "integer", "minimum": 0},
        "billable_logical_bytes_returned": {"type": "integer", "minimum": 0},
    },
    "required": ["billable_logical_bytes_queried", "billable_logical_bytes_returned"],
}
_QUERY_PERFORMANCE = {
    "type": "object",
    "properties": {
        "approx_namespace_size": {"type": "integer", "minimum": 0},
        "cache_hit_ratio": {"type": "number", "minimum": 0, "maximum": 1},
        "cache_temperature": {"enum": ["hot", "warm", "cold"]},
        "exhaustive_search_count": {"type": "integer", "minimum": 0},
        "query_execution_ms": {"type": "integer", "minimum": 0},
        "server_total_ms": {"type": "integer", "minimum": 0},
        "staleness_ms": {
            "type": "integer",
            "minimum": 0,
            "description": "eventual reads: age of the node's view (time since its last refresh)",
        },
        "store_unreachable": {
            "type": "boolean",
            "description": "eventual reads answered from the cached view while the store is down",
        },
        "damage": {
            "type": "array",
            "items": {"type": "string"},
            "description": "damaged WAL entries skipped (each names the entry and `lagoon repair`)",
        },
    },
    "required": [
        "approx_namespace_size",
        "cache_hit_ratio",
        "cache_temperature",
        "exhaustive_search_count",
        "query_execution_ms",
        "server_total_ms",
    ],
}
_SINGLE_RESULT_FIELDS = {
    "rows": {"type": "array", "items": _ref("Row")},
    "aggregations": {"type": "object"},
    "aggregation_groups": {"type": "array", "items": {"type": "object"}},
}
_QUERY_RESULT = {
    "type": "object",
    "properties": {
        **_SINGLE_RESULT_FIELDS,
        "results": {"type": "array", "items": {"type": "object", "properties": _SINGLE_RESULT_FIELDS}},
        "billing": _ref("QueryBilling"),
        "performance": _ref("QueryPerformance"),
    },
    "required": ["billing", "performance"],
}
_METADATA = {
    "type": "object",
    "properties": {
        "approx_logical_bytes": {"type": "integer", "minimum": 0},
        "approx_row_count": {"type": "integer", "minimum": 0},
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
        "encryption": {"type": "object", "properties": {"mode": {"type": "string"}}, "required": ["mode"]},
        "index": {
            "oneOf": [
                {"type": "object", "properties": {"status": {"const": "up-to-date"}}, "required": ["status"]},
                {
                    "type": "object",
                    "properties": {
                        "status": {"const": "updating"},
                        "unindexed_bytes": {"type": "integer", "minimum": 0},
                        "unindexed_rows": {"type": "integer", "minimum": 0},
                    },
                    "required": ["status", "unindexed_bytes", "unindexed_rows"],
                },
            ]
        },
        "schema": _SCHEMA_CONFIG_MAP,
        "pinning": {"type": "object"},
        "read_only": {"type": "boolean"},
        "version": {"type": "integer", "minimum": 0},
        "branching": {
            "type": "object",
            "properties": {"parent": {"type": "string"}, "at_version": {"type": "integer", "minimum": 0}},
            "required": ["parent", "at_version"],
        },
        "ann_recall": {
            "type": "object",
            "properties": {
                "target": {"type": "number"},
                "measured": {"type": ["number", "null"]},
                "samples": {"type": "integer", "minimum": 0},
            },
        },
    },
    "required": [
        "approx_logical_bytes",
        "approx_row_count",
        "created_at",
        "updated_at",
        "encryption",
        "index",
        "schema",
    ],
}
_METADATA_PATCH = {
    "type": "object",
    "properties": {
        "pinning": {
            "anyOf": [
                {"type": "null"},
                {"type": "boolean"},
                {"type": "object", "properties": {"replicas": {"type": "integer", "minimum": 1}}},
            ]
        },
        "read_only": {"type": "boolean"},
        "ann_recall_target": {
            "anyOf": [{"type": "null"}, {"type": "number", "minimum": 0.5, "maximum": 1.0}]
        },
    },
    "additionalProperties": False,
}
_RECALL_BODY = {
    "type": "object",
    "properties": {
        "num": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 25},
        "top_k": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 10},
        "filters": _ref("Filter"),
        "rank_by": _ref("RankBy"),
        "include_ground_truth": {"type": "boolean", "default": False},
    },
    "additionalProperties": False,
}
_RECALL_RESULT = {
    "type": "object",
    "properties": {
        "avg_recall": {"type": "number", "minimum": 0, "maximum": 1},
        "avg_ann_count": {"type": "number", "minimum": 0},
        "avg_exhaustive_count": {"type": "number", "minimum": 0},
        "ground_truth": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "query_vector": _VECTOR,
                    "nearest_neighbors": {"type": "array", "items": _ref("Row")},
                },
                "required": ["query_vector", "nearest_neighbors"],
            },
        },
    },
    "required": ["avg_recall", "avg_ann_count", "avg_exhaustive_count"],
}
_BRANCH_BODY = {
    "type": "object",
    "properties": {
        "source_namespace": {"type": "string", "pattern": NAMESPACE_PATTERN},
        "at_version": {"type": "integer", "minimum": 1},
    },
    "required": ["source_namespace"],
    "additionalProperties": False,
}
_LIST_RESULT = {
    "type": "object",
    "properties": {
        "namespaces": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"id": {"type": "string"}, "damaged": {"const": True}},
                "required": ["id"],
            },
        },
        "next_cursor": {"type": "string"},
    },
    "required": ["namespaces"],
}
_STATUS = {"type": "object", "properties": {"status": {"type": "string"}}, "required": ["status"]}


_SAME_NAMESPACE = {"namespace": "$request.path.namespace"}
_AFTER_WRITE = (
    "query",
    "explainQuery",
    "getMetadata",
    "getMetadataV1",
    "updateMetadata",
    "getSchema",
    "updateSchema",
    "hintCacheWarm",
    "recall",
    "deleteNamespace",
)
_WRITE_EXAMPLE = {
    "upsert_rows": [
        {"id": 1, "vector": [0.1, 0.2], "title": "hello world", "category": "a"},
        {"id": 2, "vector": [0.3, 0.1], "title": "goodbye world", "category": "b"},
    ],
    "distance_metric": "cosine_distance",
    "schema": {"title": {"type": "string", "full_text_search": True}},
}
_QUERY_EXAMPLE = {
    "rank_by": ["vector", "ANN", [0.1, 0.2]],
    "top_k": 10,
    "filters": ["category", "Eq", "a"],
    "include_attributes": ["title"],
}


def _with_example(body: dict[str, Any], example: Any) -> dict[str, Any]:
    body["content"]["application/json"]["example"] = example
    return body


def _document_paths() -> dict[str, Any]:
    """Writes, queries and branches of one namespace."""
    query_body = _with_example(_body(_ref("Query")), _QUERY_EXAMPLE)
    write_links = {
        f"then_{op_id}": {"operationId": op_id, "parameters": _SAME_NAMESPACE} for op_id in _AFTER_WRITE
    }
    return {
        "/v2/namespaces/{namespace}": {
            "post": _op(
                "write",
                "Write documents: upserts, patches, deletes, conditional and by-filter writes, schema, copy.",
                "200",
                _ref("WriteResult"),
                body=_with_example(_body(_ref("Write")), _WRITE_EXAMPLE),
                errors=("404", "409", "422"),
                links=write_links,
            ),
            "delete": _op(
                "deleteNamespace",
                "Delete a namespace and all its documents.",
                "200",
                {"type": "object", "properties": {"status": {"const": "OK"}}, "required": ["status"]},
            ),
        },
        "/v2/namespaces/{namespace}/query": {
            "post": _op(
                "query",
                "Query (vector, BM25, expressions, order-by, aggregations) or multi-query (hybrid).",
                "200",
                _ref("QueryResult"),
                body=query_body,
                errors=("404", "422"),
            )
        },
        "/v2/namespaces/{namespace}/explain_query": {
            "post": _op(
                "explainQuery",
                "The plan of a query, as text.",
                "200",
                {"type": "object", "properties": {"plan_text": {"type": "string"}}},
                body=query_body,
                errors=("404", "422"),
            )
        },
        "/v2/namespaces/{namespace}/branch": {
            "post": _op(
                "branchNamespace",
                "Lagoon: create this namespace as a copy-on-write branch of source_namespace at "
                "at_version (default: its current version); nothing of the source is copied.",
                "200",
                _ref("WriteResult"),
                body=_body(_BRANCH_BODY),
                errors=("400", "404"),
            )
        },
    }


_COPY_SPEC = {
    "type": "object",
    "properties": {
        "source_namespace": {"type": "string"},
        "dest_encryption": {"type": "object"},
        "source_api_key": {"type": "string", "description": "Not supported (400)."},
        "source_region": {"type": "string", "description": "Not supported (400)."},
    },
    "required": ["source_namespace"],
}
_START_COPY_BODY = {
    "description": "The SDKs send the parameters nested under copy_from_namespace; a top-level "
    "source_namespace is accepted too.",
    "anyOf": [
        {
            "type": "object",
            "properties": {"copy_from_namespace": _COPY_SPEC},
            "required": ["copy_from_namespace"],
        },
        _COPY_SPEC,
    ],
}
_TOKEN_PARAM = {
    "name": "token",
    "in": "path",
    "required": True,
    "description": "The token start_copy_from answered (32 lowercase hex digits).",
    "schema": {"type": "string"},
}
_TIME = {"type": "string", "format": "date-time"}
_COPY_OPERATION = {
    "type": "object",
    "properties": {
        "status": {"enum": ["running", "finished"]},
        "start_time": _TIME,
        "finish_time": _TIME,
        "progress": {"type": "string"},
        "result": {
            "description": '{"success": WriteResult} or {"error": {"status_code", "detail": ErrorResponse}}',
            "type": "object",
        },
    },
    "required": ["status", "start_time"],
}


def _namespace_paths() -> dict[str, Any]:
    """Metadata, schema, listing, cache warming and the recall probe."""
    return {
        "/v2/namespaces/{namespace}/metadata": {
            "get": _op("getMetadata", "Namespace metadata.", "200", _ref("NamespaceMetadata"))
        },
        "/v1/namespaces/{namespace}/metadata": {
            "get": _op("getMetadataV1", "Namespace metadata (v1 path).", "200", _ref("NamespaceMetadata")),
            "patch": _op(
                "updateMetadata",
                "Update pinning or read_only.",
                "200",
                _ref("NamespaceMetadata"),
                body=_body(_METADATA_PATCH),
            ),
        },
        "/v1/namespaces/{namespace}/schema": {
            "get": _op("getSchema", "The namespace's schema.", "200", _SCHEMA_CONFIG_MAP),
            "post": _op(
                "updateSchema",
                "Update the schema (bare map of attribute -> type or configuration).",
                "200",
                _SCHEMA_CONFIG_MAP,
                body=_body(_SCHEMA_MAP),
            ),
        },
        "/v1/namespaces": {
            "get": _op(
                "listNamespaces",
                "Namespaces of the caller's org, in name order; next_cursor is absent on the last page.",
                "200",
                _LIST_RESULT,
                ns=False,
                errors=(),
                params=[
                    {"name": "prefix", "in": "query", "schema": {"type": "string", "maxLength": 128}},
                    {
                        "name": "cursor",
                        "in": "query",
                        "description": "The previous page's next_cursor; empty or absent: the first page.",
                        "schema": {
                            "anyOf": [{"type": "string", "pattern": NAMESPACE_PATTERN}, {"const": ""}]
                        },
                    },
                    {
                        "name": "page_size",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                    },
                ],
            )
        },
        "/v1/namespaces/{namespace}/hint_cache_warm": {
            "get": _op(
                "hintCacheWarm",
                "Start warming the namespace's cache in the background.",
                "202",
                {
                    "type": "object",
                    "properties": {"status": {"const": "ACCEPTED"}, "message": {"type": "string"}},
                    "required": ["status"],
                },
            )
        },
        "/v2/namespaces/{namespace}/async": {
            "post": _op(
                "startCopyFrom",
                "Start copying source_namespace into this (new) namespace; answers the operation's "
                "token at once (poll it with pollCopyFrom).",
                "200",
                {"type": "object", "properties": {"token": {"type": "string"}}, "required": ["token"]},
                body=_body(_START_COPY_BODY),
                errors=("400", "404", "409"),
            )
        },
        "/v1/namespaces/{namespace}/operations/{token}": {
            "get": _op(
                "pollCopyFrom",
                "The status of a copy operation: running (with progress) or finished (with the "
                "copy's write result or its error). Any node answers.",
                "200",
                _COPY_OPERATION,
                params=[_TOKEN_PARAM],
            )
        },
        "/v1/namespaces/{namespace}/_debug/recall": {
            "post": _op(
                "recall",
                "Measure ANN recall against exhaustive search on sampled stored vectors.",
                "200",
                _RECALL_RESULT,
                body=_body(_RECALL_BODY, required=False),
            )
        },
    }


def _operations_paths() -> dict[str, Any]:
    """Health, readiness, metrics and this document (no namespace, no auth)."""
    return {
        "/healthz": {
            "get": _op("healthz", "Liveness.", "200", _STATUS, ns=False, security=False, tags=("operations",))
        },
        "/readyz": {
            "get": {
                **_op(
                    "readyz",
                    "Readiness: object store reachable.",
                    "200",
                    _STATUS,
                    ns=False,
                    security=False,
                    tags=("operations",),
                ),
                "responses": {
                    "200": _json(_STATUS, "Ready."),
                    "503": _json(_ERR, "Not ready (starting, shutting down, or object store unreachable)."),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics (text exposition format).",
                "tags": ["operations"],
                "security": [],
                "responses": {
                    "200": {
                        "description": "Metrics.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": _op(
                "openapi",
                "This document.",
                "200",
                {"type": "object"},
                ns=False,
                security=False,
                tags=("operations",),
            )
        },
    }


def _components() -> dict[str, Any]:
    """Security scheme, the namespace path parameter and the named schemas."""
    return {
        "securitySchemes": {
            "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "lgn_<id>_<secret>"}
        },
        "parameters": {
            "namespace": {
                "name": "namespace",
                "in": "path",
                "required": True,
                "description": "Namespace name: [A-Za-z0-9-_.]{1,128}, not '.' or '..'.",
                "schema": {"type": "string", "pattern": NAMESPACE_PATTERN},
                "example": "docs",
            }
        },
        "schemas": {
            "ErrorResponse": {
                "type": "object",
                "properties": {"status": {"const": "error"}, "error": {"type": "string"}},
                "required": ["status", "error"],
            },
            "Id": _ID,
            "Vector": _VECTOR,
            "Filter": _FILTER,
            "RankBy": _RANK_BY,
            "Row": _ROW,
            "Columns": _COLUMNS,
            "AttributeSchema": _ATTRIBUTE_SCHEMA,
            "AttributeSchemaConfig": _ATTRIBUTE_SCHEMA_CONFIG,
            "Write": _WRITE,
            "WriteResult": _WRITE_RESULT,
            "Query": _QUERY,
            "QueryResult": _QUERY_RESULT,
            "QueryBilling": _QUERY_BILLING,
            "QueryPerformance": _QUERY_PERFORMANCE,
            "NamespaceMetadata": _METADATA,
        },
    }


def build_openapi() -> dict[str, Any]:
    """The OpenAPI document as a dict."""
    paths: dict[str, Any] = {**_document_paths(), **_namespace_paths(), **_operations_paths()}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Lagoon HTTP API",
            "version": "2",
            "description": "turbopuffer v2 wire protocol plus Lagoon's own routes (branch, health, metrics). "
            'Errors are {"status": "error", "error": message}. See docs/http-api.md.',
        },
        "servers": [{"url": "http://127.0.0.1:8080"}],
        "security": [{"bearerAuth": []}],
        "tags": [{"name": "namespaces"}, {"name": "operations"}],
        "paths": paths,
        "components": _components(),
    }


@functools.cache
def openapi_json() -> bytes:
    """The document serialized once."""
    return orjson.dumps(build_openapi())


__all__ = ["NAMESPACE_PATTERN", "build_openapi", "openapi_json"]
