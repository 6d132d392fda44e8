"""Readiness of the object store: one cheap request that must answer, for ``/readyz``.

``probe_store`` HEADs a key that never exists: a 404 is the healthy answer. Anything else within
the timeout (an error, no answer) is ``Unavailable``, so the shells never see storage errors.
"""

from __future__ import annotations

import asyncio

from lagoon.errors import Unavailable
from lagoon.storage.base import ObjectNotFound, ObjectStore, StorageError

PROBE_KEY = "_lagoon/readyz-probe"


async def probe_store(store: ObjectStore, *, timeout_secs: float) -> None:
    """Return when the store answers a HEAD within ``timeout_secs``; raise ``Unavailable`` otherwise."""
    try:
        async with asyncio.timeout(timeout_secs):
            await store.head(PROBE_KEY)
    except ObjectNotFound:
        return
    except TimeoutError:
        raise Unavailable(f"object store did not answer within {timeout_secs:g}s") from None
    except StorageError as e:
        raise Unavailable(f"object store unreachable: {type(e).__name__}: {e}") from None


__all__ = ["PROBE_KEY", "probe_store"]
