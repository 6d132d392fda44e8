"""The audit log: one JSON line per namespace change, write, and auth denial.

``observability.audit_log`` names an append-only JSONL file; empty turns auditing off. A line is
``{"ts", "request_id", "key_id", "org", "action", "namespace", "status", ...counts}``: who (key id,
never the key), what, when, where, and how many documents. Lines are appended with one ``write``
call each on a file opened in append mode, so concurrent servers appending to one file on a local
disk do not interleave within a line. The file is opened when the app starts: a path the server
cannot write is a startup error, not a silent gap in the audit trail; a later append failure (disk
full) is logged as an error and never fails the request whose change is already committed.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from typing import IO, Any

import orjson

from lagoon.errors import InvalidRequest

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


__all__ = ["AUDITED_COUNTS", "AuditLog"]
