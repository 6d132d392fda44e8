"""The audit log: one JSON line per namespace change, write, and auth denial.

Every committed change is recorded, whatever its client was answered: ``MutationAudit`` around a
mutation records its answer (status 200 and the counts) when it succeeds; when it does not (the
deadline passed, the client went away, a step after the commit failed), each commit that landed
for it — also one that lands later — is recorded with ``"acknowledged": false`` and the status the
client got (``engine/writer.py: COMMIT_WATCH`` reports the commits).

``observability.audit_log`` names an append-only JSONL file; empty turns auditing off. A line is
``{"ts", "request_id", "key_id", "org", "action", "namespace", "status", ...counts}``: who (key id,
never the key), what, when, where, and how many documents. Lines are appended with one ``write``
call each on a file opened in append mode, so concurrent servers appending to one file on a local
disk do not interleave within a line. The file is opened when the app starts: a path the server
cannot write is a startup error, not a silent gap in the audit trail; a later append failure (disk
full) is logged as an error and never fails the request whose change is already committed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import threading
from collections.abc import Callable
from types import TracebackType
from typing import IO, Any

import orjson

from lagoon.engine.writer import COMMIT_WATCH
from lagoon.errors import InvalidRequest, LagoonError

log = logging.getLogger("lagoon.server.audit")

AUDITED_COUNTS = ("rows_affected", "rows_upserted", "rows_patched", "rows_deleted")


class AuditLog:
    """Appends audit records to a JSONL file; every method is a no-op when the path is empty."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._file: IO[bytes] | None = None
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self.path)

    def open(self) -> None:
        if not self.path or self._file is not None:
            return
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            self._file = os.fdopen(fd, "ab", buffering=0)
        except OSError as e:
            raise InvalidRequest(f"cannot open the audit log {self.path}: {e.strerror or e}") from None

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def record(self, action: str, **fields: Any) -> None:
        """Append one record; ``fields`` are JSON values (None values are left out)."""
        if self._file is None:
            return
        now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        line: dict[str, Any] = {"ts": now, "action": action}
        line.update({k: v for k, v in fields.items() if v is not None})
        data = orjson.dumps(line, default=str) + b"\n"
        with self._lock:
            if self._file is None:
                return
            try:
                self._file.write(data)
            except OSError as e:  # never turn a committed change into an error response
                log.error(
                    "cannot append to the audit log",
                    extra={"path": self.path, "error": str(e), "action": action},
                )


def counts(result: Any) -> dict[str, Any]:
    """The audited document counts of an engine result."""
    return {k: result.get(k) for k in AUDITED_COUNTS} if isinstance(result, dict) else {}


class MutationAudit:
    """Audits one mutation request (see the module docstring). ``record(status, result, **extra)``
    writes one line; use as a context manager around the engine call, then call ``answered``."""

    def __init__(self, record: Callable[..., None]) -> None:
        self._record = record
        self._landed: list[dict[str, Any]] = []
        self._failed_status = 0
        self._token: Any = None

    def __enter__(self) -> MutationAudit:
        self._token = COMMIT_WATCH.set(self._committed)
        return self

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        COMMIT_WATCH.reset(self._token)
        if exc is None:
            return
        if isinstance(exc, LagoonError):
            self._failed_status = exc.status
        else:
            self._failed_status = 499 if isinstance(exc, asyncio.CancelledError) else 500
        for result in self._landed:
            self._record(self._failed_status, result, acknowledged=False)
        self._landed.clear()

    def _committed(self, result: dict[str, Any]) -> None:
        if self._failed_status:  # landed after the client was answered
            self._record(self._failed_status, result, acknowledged=False)
        else:
            self._landed.append(result)

    def answered(self, result: Any, **extra: Any) -> None:
        self._landed.clear()
        self._record(200, result, **extra)


__all__ = ["AUDITED_COUNTS", "AuditLog", "MutationAudit", "counts"]
