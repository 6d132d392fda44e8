"""Lagoon: vector, full-text (BM25) and hybrid search whose durable state lives in object storage.

Embedded use::

    import lagoon
    db = lagoon.open("./data")
    ns = db.namespace("docs")
    ns.write(upsert_rows=[{"id": 1, "vector": [0.1, 0.2], "title": "hello"}],
             distance_metric="cosine_distance")
    ns.query(rank_by=("vector", "ANN", [0.1, 0.2]), top_k=10)
"""

from typing import TYPE_CHECKING, Any

from lagoon.config import Settings, load_settings

if TYPE_CHECKING:
    from lagoon.embedded import Database, Namespace, open
from lagoon.errors import (
    Conflict,
    DataCorruption,
    Forbidden,
    IncompatibleFormat,
    InternalError,
    InvalidRequest,
    LagoonError,
    NamespaceDamaged,
    NotFound,
    PayloadTooLarge,
    TooManyRequests,
    Unauthorized,
    Unavailable,
    Unprocessable,
)

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # The embedded API pulls in the whole engine; import it on first use so that light users
    # (the CLI, format tools) start fast.
    if name in ("Database", "Namespace", "open"):
        from lagoon import embedded

        return getattr(embedded, name)
    raise AttributeError(f"module 'lagoon' has no attribute {name!r}")


__all__ = [
    "Conflict",
    "DataCorruption",
    "Database",
    "Forbidden",
    "IncompatibleFormat",
    "InternalError",
    "InvalidRequest",
    "LagoonError",
    "Namespace",
    "NamespaceDamaged",
    "NotFound",
    "PayloadTooLarge",
    "Settings",
    "TooManyRequests",
    "Unauthorized",
    "Unavailable",
    "Unprocessable",
    "load_settings",
    "open",
]
