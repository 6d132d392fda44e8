"""Builds the store stack from settings or a URL: ``Retrying(Instrumented(backend))``.

Retries sit outside the instrumentation, so ``lagoon_objstore_requests_total`` counts every
attempt actually sent to the store. Backends:

- ``fs``: ``FsStore(root[/prefix])`` (the prefix becomes a sub-folder);
- ``s3``: ``S3Store(bucket, prefix, region, endpoint, sse, sse_kms_key_id)``; credentials from
  the standard AWS chain, never from settings;
- ``memory``: a fresh ``MemoryStore`` (ephemeral; the prefix is ignored).

Stores must be built after any fork (obstore's fork hazard, see ``lagoon.storage.s3``).
"""

from __future__ import annotations

import os
import urllib.parse
from typing import Any

from prometheus_client import CollectorRegistry

from lagoon.config import StorageSettings
from lagoon.storage.base import ObjectStore
from lagoon.storage.fs import FsStore
from lagoon.storage.instrumented import InstrumentedStore
from lagoon.storage.memory import MemoryStore
from lagoon.storage.retrying import RetryingStore
from lagoon.storage.s3 import S3Store


def open_backend(settings: StorageSettings) -> ObjectStore:
    """The bare backend named by ``settings.backend``, without wrappers."""
    if settings.backend == "memory":
        return MemoryStore()
    if settings.backend == "fs":
        root = os.path.join(settings.root, settings.prefix) if settings.prefix else settings.root
        return FsStore(root)
    if settings.backend == "s3":
        return S3Store(
            settings.bucket,
            prefix=settings.prefix,
            region=settings.region,
            endpoint=settings.endpoint,
            sse=settings.sse,
            sse_kms_key_id=settings.sse_kms_key_id,
        )
    raise ValueError(f"unknown storage backend {settings.backend!r}")


def open_store(
    settings: StorageSettings,
    *,
    metrics_registry: CollectorRegistry | None = None,
    retry: bool = True,
) -> ObjectStore:
    """The full stack for ``settings``; metrics go to ``metrics_registry`` (default: global)."""
    store: ObjectStore = InstrumentedStore(open_backend(settings), metrics_registry)
    return RetryingStore(store) if retry else store


def settings_from_url(url: str) -> StorageSettings:
    """Parse ``s3://bucket/prefix?region=..&endpoint=..&sse=..&sse_kms_key_id=..``,
    ``file:///path``, a plain path, or ``memory://``."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "memory":
        return StorageSettings(backend="memory")
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"{url!r}: s3 URLs look like s3://bucket/prefix")
        prefix = parsed.path.strip("/")
        options: dict[str, Any] = {
            k: v for k, v in urllib.parse.parse_qsl(parsed.query, keep_blank_values=True)
        }
        unknown = set(options) - {"region", "endpoint", "sse", "sse_kms_key_id"}
        if unknown:
            raise ValueError(f"{url!r}: unknown options {sorted(unknown)}")
        return StorageSettings(
            backend="s3", bucket=parsed.netloc, prefix=prefix + "/" if prefix else "", **options
        )
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"{url!r}: file URLs look like file:///absolute/path")
        return StorageSettings(backend="fs", root=urllib.parse.unquote(parsed.path))
    if parsed.scheme and len(parsed.scheme) > 1:  # "C:" would be a drive letter, not a scheme
        raise ValueError(f"{url!r}: unsupported scheme {parsed.scheme!r} (s3://, file://, memory://)")
    return StorageSettings(backend="fs", root=url)


def store_from_url(
    url: str, *, metrics_registry: CollectorRegistry | None = None, retry: bool = True
) -> ObjectStore:
    """``open_store`` for a URL (see ``settings_from_url``)."""
    return open_store(settings_from_url(url), metrics_registry=metrics_registry, retry=retry)
