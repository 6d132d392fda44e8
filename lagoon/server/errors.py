"""The one place that turns exceptions into HTTP error responses.

Every error leaves the server as turbopuffer's body ``{"status": "error", "error": "<message>"}``
with the status of the ``lagoon.errors`` class that was raised. Rules:

- ``LagoonError`` subclasses keep their status and message. Retryable ones (409, 429, 503) carry
  ``Retry-After`` (whole seconds, at least 1) and ``retry-after-ms`` (the official SDK prefers it).
- Non-retryable 5xx (data corruption, a bug) and 409s (a damaged namespace) carry
  ``x-should-retry: false``: the SDK would otherwise retry every 5xx and 409, which cannot help
  and, for a write, only repeats it.
- Anything a client can send must map to 4xx: ``RecursionError`` (input nested deeper than Python
  can walk) becomes 400; Starlette's routing errors (unknown path 404, wrong method 405) keep their
  status with our body.
- Anything else is a bug: 500 with the request id and nothing more in the body; the traceback goes
  to the log (the caller logs it; this module never logs).
- A client never sees where or how the data is stored: a 5xx message passes through ``Redactor``,
  which replaces URLs, filesystem paths, object keys (anything shaped ``a/b/c``) and the configured
  bucket, endpoint and local paths with ``<redacted>``. The full text and the error's ``detail``
  go to the request's log line (``internal_text``), under its request id.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

import orjson
from starlette.exceptions import HTTPException
from starlette.responses import Response

from lagoon.errors import DataCorruption, LagoonError

JSON = "application/json"
SDK_RETRIES = frozenset({408, 409, 429, *range(500, 600)})
"""The statuses the official SDK retries unless told ``x-should-retry: false``."""


def error_body(message: str) -> bytes:
    """turbopuffer's error body."""
    return orjson.dumps({"status": "error", "error": message})


_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
_PATH = re.compile(r"(?<![\w.~-])/(?:[^\s/'\"<>]+/)+[^\s'\"<>,;)]*")
_OBJECT_KEY = re.compile(r"(?<![\w/.-])[\w.=-]+(?:/[\w.=-]*){2,}")
REDACTED = "<redacted>"


class Redactor:
    """Takes storage locations out of a client-facing message (see the module docstring).

    ``names`` are this deployment's own: bucket, endpoint, local folders, file paths."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        words = sorted({n for n in names if len(n) >= 3}, key=len, reverse=True)
        self._names = (
            re.compile("|".join(rf"(?<![\w-]){re.escape(w)}(?![\w-])" for w in words)) if words else None
        )

    def __call__(self, message: str) -> str:
        out = _URL.sub(REDACTED, message)
        if self._names is not None:
            out = self._names.sub(REDACTED, out)
        out = _PATH.sub(REDACTED, out)
        return _OBJECT_KEY.sub(REDACTED, out)


def internal_text(exc: BaseException) -> str:
    """The whole story of ``exc`` for the log: its message and, for a LagoonError, its detail."""
    text = f"{type(exc).__name__}: {exc}"
    detail = getattr(exc, "detail", "")
    return f"{text} [{detail}]" if detail else text


def retry_headers(seconds: float) -> dict[str, str]:
    """``Retry-After`` (integer seconds, >= 1) and ``retry-after-ms`` for a retryable error."""
    seconds = max(seconds, 0.0)
    return {
        "retry-after": str(max(1, math.ceil(seconds))),
        "retry-after-ms": str(max(1, round(seconds * 1000))),
    }


def classify(exc: BaseException, request_id: str) -> tuple[int, str, dict[str, str], bool]:
    """``(status, message, headers, is_bug)`` for ``exc``; ``is_bug`` means: log the traceback."""
    if isinstance(exc, LagoonError):
        headers: dict[str, str] = {}
        if exc.retryable or exc.retry_after is not None:
            headers.update(retry_headers(exc.retry_after if exc.retry_after is not None else 1.0))
        failed = exc.status == 500  # a bug or corrupt data: retrying cannot help, the logs can
        if not exc.retryable and exc.status in SDK_RETRIES:
            headers["x-should-retry"] = "false"
        if exc.status == 401:
            headers["www-authenticate"] = 'Bearer realm="lagoon"'
        logged = failed or isinstance(exc, DataCorruption)  # the log line names the damaged object
        message = f"{exc.message} (request id {request_id})" if logged else exc.message
        return exc.status, message, headers, failed
    if isinstance(exc, HTTPException):
        extra = dict(exc.headers or {})
        if exc.status_code == 404:
            return 404, "no such route; see /openapi.json", extra, False
        if exc.status_code == 405:
            return 405, "method not allowed for this route; see /openapi.json", extra, False
        return exc.status_code, str(exc.detail), extra, exc.status_code >= 500
    if isinstance(exc, RecursionError):
        return 400, "request is nested too deeply", {}, False
    return 500, f"internal error (request id {request_id})", {"x-should-retry": "false"}, True


def error_response(
    status: int, message: str, headers: Mapping[str, str] | None = None, *, request_id: str = ""
) -> Response:
    """A JSON error response with ``status``, ``message`` and ``headers``."""
    all_headers = dict(headers or {})
    if request_id:
        all_headers["x-request-id"] = request_id
    return Response(error_body(message), status_code=status, media_type=JSON, headers=all_headers)


def response_for(exc: BaseException, request_id: str) -> Response:
    """The error response for ``exc`` (see the module docstring for the mapping)."""
    status, message, headers, _ = classify(exc, request_id)
    return error_response(status, message, headers)


__all__ = [
    "JSON",
    "REDACTED",
    "Redactor",
    "classify",
    "error_body",
    "error_response",
    "internal_text",
    "response_for",
    "retry_headers",
]
