"""The public error tree. Every error Lagoon raises to a caller is one of these classes.

    LagoonError                       status  retryable
    ├── InvalidRequest                400     no     bad argument, schema, filter, dimension, ...
    │   ├── PayloadTooLarge           413     no     request body over the limit
    │   └── Unprocessable             422     no     well-formed but semantically impossible
    ├── Unauthorized                  401     no     missing or invalid API key
    ├── Forbidden                     403     no     the key's role does not allow the operation
    ├── NotFound                      404     no     namespace missing (or in another org)
    ├── Conflict                      409     yes    commit contention that outlived the retry budget
    ├── TooManyRequests               429     yes    rate limit, concurrency limit, write backpressure
    ├── Unavailable                   503     yes    object store unreachable, shutting down, deadline
    ├── DataCorruption                500     no     checksum mismatch, truncated or unreadable object
    │   ├── NamespaceDamaged          409     no     a namespace whose manifest or segment cannot be read
    │   └── IncompatibleFormat        500     no     data written by a newer Lagoon than this one
    └── InternalError                 500     no     a bug; please report it

The HTTP layer turns any of them into turbopuffer's error body ``{"status": "error", "error": msg}``
with ``status``; the embedded API raises them as they are. Never use ``assert`` for validation.
"""

from __future__ import annotations


class LagoonError(Exception):
    """Base class of every error Lagoon raises to its callers."""

    status: int = 500
    retryable: bool = False

    def __init__(self, message: str, *, retry_after: float | None = None, detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.detail = detail
        """For the operator's log only (store URLs, object keys, paths): never sent to a client."""

    def __str__(self) -> str:
        return self.message


class InvalidRequest(LagoonError):
    """The request is malformed or violates the schema; nothing was changed. Fix the request."""

    status = 400


class PayloadTooLarge(InvalidRequest):
    """The request body is larger than the configured limit; nothing was read past the limit."""

    status = 413


class Unprocessable(InvalidRequest):
    """The request is well formed but cannot be carried out as asked."""

    status = 422


class Unauthorized(LagoonError):
    """No API key, or an unknown, malformed or revoked one."""

    status = 401


class Forbidden(LagoonError):
    """The API key's role does not allow this operation."""

    status = 403


class NotFound(LagoonError):
    """The namespace does not exist (a namespace of another org answers the same)."""

    status = 404


class Conflict(LagoonError):
    """Concurrent commits kept winning the slot until the retry budget ran out. Retry later."""

    status = 409
    retryable = True


class TooManyRequests(LagoonError):
    """A rate, concurrency or backpressure limit was hit; retry after ``retry_after`` seconds."""

    status = 429
    retryable = True


class Unavailable(LagoonError):
    """The object store (or this node) cannot serve the request now; retry after a while."""

    status = 503
    retryable = True


class DataCorruption(LagoonError):
    """An object failed its magic, length or checksum check. Run ``lagoon repair --dry-run``."""

    status = 500


class NamespaceDamaged(DataCorruption):
    """The namespace's stored data (a manifest version, a segment file) cannot be read: the
    request did nothing, and repeating it cannot help until ``lagoon repair`` has run. A 409, not
    a 5xx: the node is healthy and so is every other namespace; it is this namespace's state that
    refuses the request (the message names the damaged object and the repair command)."""

    status = 409


class IncompatibleFormat(DataCorruption):
    """The data needs a newer Lagoon (its min_reader_version is above this build's)."""

    status = 500


class InternalError(LagoonError):
    """A bug in Lagoon. Please report it with the request id from the logs."""

    status = 500


__all__ = [
    "Conflict",
    "DataCorruption",
    "Forbidden",
    "IncompatibleFormat",
    "InternalError",
    "InvalidRequest",
    "LagoonError",
    "NamespaceDamaged",
    "NotFound",
    "PayloadTooLarge",
    "TooManyRequests",
    "Unauthorized",
    "Unavailable",
    "Unprocessable",
]
