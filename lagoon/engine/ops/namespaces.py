"""``lagoon namespaces``: every existing namespace of an org, following the listing's pages."""

from __future__ import annotations

from collections.abc import AsyncIterator

from lagoon.engine.database import Database
from lagoon.format.keys import DEFAULT_ORG

PAGE_SIZE = 1000


async def iter_namespaces(
    db: Database, *, org: str = DEFAULT_ORG, prefix: str = "", page_size: int = PAGE_SIZE
) -> AsyncIterator[str]:
    """Names of the existing namespaces of ``org`` starting with ``prefix``, in key order."""
    cursor: str | None = None
    while True:
        page = await db.list_namespaces(org=org, prefix=prefix, cursor=cursor, page_size=page_size)
        for item in page["namespaces"]:
            yield str(item["id"])
        cursor = page.get("next_cursor")
        if not cursor:
            return
