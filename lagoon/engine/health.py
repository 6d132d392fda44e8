"""Readiness of the object store, for ``/readyz``: can this node commit and read right now?

``probe_store`` writes a tiny object (``_lagoon/readyz-probe``, overwritten by every node) and
reads it back, within a timeout. A write is the only cheap request that tells every failure
that matters apart from health: a missing bucket (S3 answers a HEAD of a missing key in a missing
bucket with a bodiless 404, indistinguishable from "object not found"), a bucket or folder that
is read-only, credentials the store refuses, and a store that does not answer. Each becomes
``Unavailable`` with a message naming the kind of cause (the store's own text, which names the
bucket, URL or path, is the error's ``detail``: for the log), so the shells never see storage
errors. Nothing is cached: a store that recovers is ready again at the next probe.

Cost: one PUT and one GET per probe (a kubelet probing every 10 s costs ~17,000 requests a day per
server process).
"""

from __future__ import annotations

import asyncio
import time

from lagoon.errors import Unavailable
from lagoon.storage.base import AccessDenied, ObjectNotFound, ObjectStore, PutMode, StorageError

PROBE_KEY = "_lagoon/readyz-probe"


def _cause(e: StorageError) -> Unavailable:
    text = str(e)
    detail = f"{type(e).__name__}: {text[:500]}"
    if "NoSuchBucket" in text:
        return Unavailable("the bucket does not exist", detail=detail)
    if isinstance(e, AccessDenied):
        return Unavailable("the store refused the credentials or the write", detail=detail)
    if e.transient:
        return Unavailable("object store unreachable", detail=detail)
    return Unavailable("object store error", detail=detail)


async def probe_store(store: ObjectStore, *, timeout_secs: float) -> None:
    """Return when a PUT and a GET of the probe object succeed within ``timeout_secs``; raise
    ``Unavailable`` naming the cause otherwise."""
    payload = f"ready {time.time_ns()}".encode()
    try:
        async with asyncio.timeout(timeout_secs):
            await store.put(PROBE_KEY, payload, PutMode.OVERWRITE)
            await store.get(PROBE_KEY)
    except TimeoutError:
        raise Unavailable(f"object store did not answer within {timeout_secs:g}s") from None
    except ObjectNotFound:
        # a PUT that succeeded and a GET that cannot see it: no read-after-write, or the bucket
        # vanished between the two requests
        raise Unavailable("object store lost the probe object it just stored (bucket deleted?)") from None
    except StorageError as e:
        raise _cause(e) from None
    except OSError as e:  # a local folder that vanished or became unwritable under the fs backend
        raise Unavailable("object store error", detail=f"{type(e).__name__}: {e}") from None


__all__ = ["PROBE_KEY", "probe_store"]
