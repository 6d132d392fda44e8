"""Lagoon's only I/O layer: object stores (fs, s3, memory) and stackable wrappers.

Knows nothing of Lagoon's formats or keys; see ``base`` for the contract every store honours and
docs/storage.md for the semantics of each backend.
"""

from lagoon.storage.base import (
    AccessDenied,
    AlreadyExists,
    ConditionalConflict,
    CorruptRead,
    IfMatch,
    InvalidKey,
    ObjectMeta,
    ObjectNotFound,
    ObjectStore,
    PreconditionFailed,
    PutMode,
    PutModeT,
    StorageError,
    StoreUnavailable,
    check_range,
    validate_key,
    validate_prefix,
)
from lagoon.storage.factory import open_backend, open_store, settings_from_url, store_from_url
from lagoon.storage.faulty import FaultyStore
from lagoon.storage.fs import FsStore
from lagoon.storage.instrumented import InstrumentedStore, StoreMetrics
from lagoon.storage.memory import MemoryStore
from lagoon.storage.retrying import RetryingStore
from lagoon.storage.s3 import S3Store

__all__ = [
    "AccessDenied",
    "AlreadyExists",
    "ConditionalConflict",
    "CorruptRead",
    "FaultyStore",
    "FsStore",
    "IfMatch",
    "InstrumentedStore",
    "InvalidKey",
    "MemoryStore",
    "ObjectMeta",
    "ObjectNotFound",
    "ObjectStore",
    "PreconditionFailed",
    "PutMode",
    "PutModeT",
    "RetryingStore",
    "S3Store",
    "StorageError",
    "StoreMetrics",
    "StoreUnavailable",
    "check_range",
    "open_backend",
    "open_store",
    "settings_from_url",
    "store_from_url",
    "validate_key",
    "validate_prefix",
]
