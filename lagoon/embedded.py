"""The embedded Python API: the engine in-process, with the HTTP API's argument names and shapes.

    import lagoon
    db = lagoon.open("./data")                      # or "s3://bucket/prefix", "memory://", Settings
    ns = db.namespace("docs")
    ns.write(upsert_rows=[{"id": 1, "vector": [0.1, 0.2], "title": "hello"}],
             distance_metric="cosine_distance")
    res = ns.query(rank_by=("vector", "ANN", [0.1, 0.2]), top_k=10, include_attributes=["title"])
    res["rows"]                                     # [{"id": 1, "$dist": 0.0, "title": "hello"}]

Calls are synchronous; the engine runs on a private event loop thread owned by the ``Database``.
Errors are the classes of ``lagoon.errors`` (InvalidRequest, NotFound, ...), exactly as the
server maps them to HTTP statuses. Close the database (or use it as a context manager) to
release the loop and the store.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

import numpy as np

from lagoon.config import Settings, load_settings
from lagoon.engine.database import Database as _AsyncDatabase
from lagoon.format.keys import DEFAULT_ORG, check_namespace
from lagoon.tracing import setup_tracing

T = TypeVar("T")


def _plain(value: Any) -> Any:
    """Tuples -> lists, numpy arrays/scalars -> Python values, recursively (the JSON data model)."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _settings_for(target: str | os.PathLike[str] | Settings | None) -> Settings:
    if isinstance(target, Settings):
        return target
    if target is None:
        return load_settings()
    text = os.fspath(target)
    if text.startswith("s3://"):
        bucket, _, prefix = text[5:].partition("/")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        return load_settings(overrides={"storage": {"backend": "s3", "bucket": bucket, "prefix": prefix}})
    if text.startswith("memory://"):
        return load_settings(overrides={"storage": {"backend": "memory"}}, environ=False)
    if text.startswith("file://"):
        text = text[7:]
    return load_settings(overrides={"storage": {"backend": "fs", "root": text}})


class Database:
    """A Lagoon database opened in-process. Thread-safe: calls are serialised onto one loop."""

    def __init__(self, settings: Settings, *, org: str = DEFAULT_ORG, indexer: bool = True) -> None:
        from lagoon.storage.factory import open_store

        self.settings = settings
        self.org = org
        self._indexer: Any = None
        self._with_indexer = indexer
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="lagoon-embedded", daemon=True)
        self._thread.start()
        self._db: _AsyncDatabase = self._run(self._open(open_store))

    async def _open(self, open_store: Any) -> _AsyncDatabase:
        setup_tracing(self.settings, "lagoon")
        store = open_store(self.settings.storage)
        from lagoon.engine.ops.repair import repair_for_delete

        db = _AsyncDatabase(store, self.settings, repair=repair_for_delete(self.settings))
        if self._with_indexer:
            from lagoon.engine.scheduler import IndexerLoop

            # (through the database's memory cache: one cache.memory_bytes for both)
            self._indexer = IndexerLoop(store, self.settings, segment_io=db.segment_io)
            self._indexer.start()
        return db

    async def _close(self) -> None:
        if self._indexer is not None:
            await self._indexer.stop()
        await self._db.close()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop.is_closed():
            raise RuntimeError("this lagoon Database is closed")
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return fut.result()

    def namespace(self, name: str) -> Namespace:
        return Namespace(self, check_namespace(name))

    def namespaces(self, prefix: str = "", page_size: int = 100) -> Iterator[str]:
        """Names of the existing namespaces starting with ``prefix``, following every page."""
        cursor: str | None = None
        while True:
            page = self._run(
                self._db.list_namespaces(org=self.org, prefix=prefix, cursor=cursor, page_size=page_size)
            )
            for item in page["namespaces"]:
                yield item["id"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Namespace:
    """One namespace. Methods mirror the HTTP routes and take the same argument names."""

    def __init__(self, db: Database, name: str) -> None:
        self._db = db
        self.name = name

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._db._run(coro)

    def write(self, **body: Any) -> dict[str, Any]:
        """upsert_rows, upsert_columns, patch_rows, patch_columns, deletes, delete_by_filter,
        patch_by_filter, *_condition, distance_metric, schema, return_affected_ids, ..."""
        return self._call(self._db._db.write(self.name, _plain(body), org=self._db.org))

    def query(self, **body: Any) -> dict[str, Any]:
        """rank_by, top_k / limit, offset, filters, include_attributes, exclude_attributes,
        aggregate_by, group_by, consistency, vector_encoding. Returns {"rows": [...], ...}."""
        return self._call(self._db._db.query(self.name, _plain(body), org=self._db.org))

    def multi_query(self, **body: Any) -> dict[str, Any]:
        """queries=[...] (up to 16, one snapshot), optional rerank_by=("RRF", {...}), limit."""
        return self._call(self._db._db.query(self.name, _plain(body), org=self._db.org))

    def explain_query(self, **body: Any) -> dict[str, Any]:
        return self._call(self._db._db.explain(self.name, _plain(body), org=self._db.org))

    def metadata(self) -> dict[str, Any]:
        return self._call(self._db._db.metadata(self.name, org=self._db.org))

    def update_metadata(self, **body: Any) -> dict[str, Any]:
        return self._call(self._db._db.update_metadata(self.name, _plain(body), org=self._db.org))

    def schema(self) -> dict[str, Any]:
        return self._call(self._db._db.get_schema(self.name, org=self._db.org))

    def update_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        return self._call(self._db._db.update_schema(self.name, _plain(schema), org=self._db.org))

    def delete_all(self) -> dict[str, Any]:
        return self._call(self._db._db.delete_namespace(self.name, org=self._db.org))

    def hint_cache_warm(self) -> dict[str, Any]:
        return self._call(self._db._db.hint_cache_warm(self.name, org=self._db.org))

    def exists(self) -> bool:
        from lagoon.errors import NotFound

        try:
            self.schema()
        except NotFound:
            return False
        return True


def open(
    target: str | os.PathLike[str] | Settings | None = None, *, org: str = DEFAULT_ORG, indexer: bool = True
) -> Database:
    """Open a database: a folder path, ``file://``, ``s3://bucket/prefix``, ``memory://`` or a
    ``Settings`` (None = the configuration from ``LAGOON_CONFIG`` / ``LAGOON_*`` variables).

    ``indexer`` runs the indexer, compactor and garbage collector in the background of this
    process (as ``lagoon-server --embedded-indexer`` does); turn it off when ``lagoon-worker``
    processes index the same store."""
    return Database(_settings_for(target), org=org, indexer=indexer)
