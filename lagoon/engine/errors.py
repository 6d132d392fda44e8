"""The one translation of storage errors into Lagoon's public error tree, at the engine boundary.

``lagoon.storage`` raises its own small set (``StorageError`` and subclasses); nothing above the
engine sees them. Inside the engine, code catches the storage errors it expects (a missing key is
often an answer, not a failure) and lets the rest reach a boundary: ``storage_errors(doing)``
around an operation, ``translate`` where an exception is re-raised by hand, and ``at_boundary`` on every public
``Database`` method, so that the shells (server, CLI, embedded API) only ever see ``LagoonError``. The mapping:

- transient errors (timeouts, throttling, short reads, races the store reports) -> ``Unavailable``
  (503, retryable), "object store unavailable <doing>";
- any other storage error (access denied, a refused key, a 404 for an object the engine expected)
  -> ``Unavailable`` as well, worded "object store error <doing>": the request did nothing and may
  work once the store is repaired; a reader never answers from an object it could not read
  (docs/design.md §9.3).

The storage error's own text (object keys, the store's URL, bucket, file paths) goes to the
error's ``detail``, which the shells log and never show a client; ``doing`` names what was being
done in the client's terms (a namespace, never a key).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

from lagoon.errors import DataCorruption, LagoonError, Unavailable
from lagoon.storage.base import StorageError

REPAIR_HINT = "run `lagoon repair --dry-run` to see the plan, then `lagoon repair`"
P = ParamSpec("P")
R = TypeVar("R")


def translate(e: StorageError, doing: str) -> LagoonError:
    """The public error for ``e``, raised while ``doing`` (e.g. "while reading org/ns/")."""
    where = f" {doing}" if doing else ""
    detail = f"{type(e).__name__}: {e}"
    if e.transient:
        return Unavailable(f"object store unavailable{where}; retry", detail=detail)
    return Unavailable(f"object store error{where}", detail=detail)


@contextmanager
def storage_errors(doing: str = "") -> Iterator[None]:
    """Re-raise any storage error escaping the block as its public error (``translate``)."""
    try:
        yield
    except StorageError as e:
        raise translate(e, doing) from e


def at_boundary(fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Decorate an engine entry point (a ``Database`` method): no storage error escapes it."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except StorageError as e:
            raise translate(e, "") from e
        except DataCorruption as e:
            if "lagoon repair" not in e.message:
                e.message = f"{e.message}; {REPAIR_HINT}"
                e.args = (e.message,)
            raise

    return wrapper


__all__ = ["at_boundary", "storage_errors", "translate"]
