"""Asynchronous operation records, version 1 (normative spec: docs/formats/operations.md).

One object per operation, ``_lagoon/operations/{org}/{namespace}/{token}.json`` (keys.py), where
``namespace`` is the operation's destination. Today the only kind is ``copy_from_namespace``
(``start_copy_from``). The record is the operation's whole state: any node answers a poll by
reading it, the node running the operation rewrites it (compare-and-swap on its etag) with its
progress and a heartbeat, and the first writer to set ``status: finished`` decides the outcome.

The object is one JSON document ``{"magic", "format_version", "min_reader_version", "crc32c",
"operation": {...}}`` with ``crc32c`` over the canonical body (keys sorted, no whitespace): the
compact layout of format/envelope.py, like the catalog's objects. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from lagoon.errors import DataCorruption
from lagoon.format.envelope import EnvelopeKind, decode_envelope, encode_envelope

MAGIC = "lagoon-operation"  # DO NOT CHANGE: persisted
FORMAT_VERSION = 1
READER_VERSION = 1
RUNNING = "running"
FINISHED = "finished"
COPY = "copy_from_namespace"
ENVELOPE = EnvelopeKind(MAGIC, "operation", "operation record", READER_VERSION)


@dataclass
class Operation:
    """One asynchronous operation. ``result`` is set once ``status`` is ``finished``: either
    ``{"success": <write result>}`` or ``{"error": {"status_code": N, "detail": {...}}}``."""

    token: str
    kind: str
    org: str
    namespace: str
    source_namespace: str
    start_ms: int
    node: str
    heartbeat_ms: int
    status: str = RUNNING
    finish_ms: int | None = None
    documents_copied: int = 0
    documents_total: int | None = None
    result: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Fields of a newer writer this reader does not know; written back unchanged."""

    @property
    def finished(self) -> bool:
        return self.status == FINISHED

    @property
    def succeeded(self) -> bool:
        return self.finished and isinstance(self.result, dict) and "success" in self.result


_KNOWN = frozenset(f.name for f in fields(Operation)) - {"extra"}


def encode_operation(op: Operation) -> bytes:
    body = asdict(op)
    body.update(body.pop("extra"))
    return encode_envelope(ENVELOPE, body, format_version=FORMAT_VERSION, min_reader_version=1)


def decode_operation(data: bytes, what: str) -> Operation:
    body = decode_envelope(ENVELOPE, data, what).body
    known = {k: v for k, v in body.items() if k in _KNOWN}
    try:
        op = Operation(**known, extra={k: v for k, v in body.items() if k not in _KNOWN})
    except TypeError as e:
        raise DataCorruption(f"{what}: {e}") from None
    if op.status not in (RUNNING, FINISHED) or not isinstance(op.start_ms, int):
        raise DataCorruption(f"{what}: bad status or start time")
    return op


__all__ = [
    "COPY",
    "FINISHED",
    "RUNNING",
    "Operation",
    "decode_operation",
    "encode_operation",
]
