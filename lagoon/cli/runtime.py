"""Running one operator command against the engine: open the store and a ``Database``, close both.

Each command is one ``asyncio.run``; the store stack is the one servers use
(``open_store(settings.storage)``: retries and metrics included), so a command sees the bucket
exactly as a server does. Storage errors leave as ``LagoonError`` (``lagoon.engine.errors``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from lagoon.config import Settings
from lagoon.engine.database import Database
from lagoon.engine.errors import storage_errors
from lagoon.engine.ops.repair import repair_for_delete
from lagoon.storage.base import ObjectStore
from lagoon.storage.factory import open_store

T = TypeVar("T")


def run_with_database(settings: Settings, fn: Callable[[Database], Awaitable[T]]) -> T:
    """``fn(db)`` on a fresh event loop, with a ``Database`` over the configured store."""

    async def main() -> T:
        db = Database(open_store(settings.storage), settings, repair=repair_for_delete(settings))
        try:
            with storage_errors():
                return await fn(db)
        finally:
            await db.close()

    return asyncio.run(main())


def run_with_store(settings: Settings, fn: Callable[[ObjectStore], Awaitable[T]]) -> T:
    """``fn(store)`` on a fresh event loop, with the configured store stack (closed afterwards)."""

    async def main() -> T:
        store = open_store(settings.storage)
        try:
            with storage_errors():
                return await fn(store)
        finally:
            await store.close()

    return asyncio.run(main())
