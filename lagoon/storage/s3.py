"""S3-compatible object store (AWS S3, MinIO, R2, GCS XML API, SeaweedFS) on obstore.

obstore (Rust ``object_store`` behind a thin Python layer) does the HTTP, signing, credential
chain and conditional PUTs; this module only adapts it to ``ObjectStore`` and maps errors:

    S3 answer                                  obstore raises            we raise
    412 on If-None-Match: *                    AlreadyExistsError        AlreadyExists
    412 on If-Match, or 404 on If-Match        PreconditionError         PreconditionFailed
    404 on GET/HEAD                            FileNotFoundError         ObjectNotFound
    409 (ConditionalRequestConflict)           AlreadyExistsError (!)    ConditionalConflict (transient)
    401 / 403                                  Unauthenticated/Perm...   AccessDenied
    other 4xx (not 408/429), NoSuchBucket      GenericError              StorageError (not transient)
    5xx, 408, 429, timeout, connection error   GenericError              StoreUnavailable (transient)

obstore reports 409 as AlreadyExistsError (arrow-rs maps 409 to "exists"), but a 409 means a
concurrent conditional write was in progress and nothing was written, so the status code in the
message decides first.

Choices:
- obstore's own retries are off by default (``max_retries=0``): ``RetryingStore`` retries above,
  with the ambiguity handling that a blind retry of a conditional PUT lacks.
- credentials come from obstore's default chain: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/
  ``AWS_SESSION_TOKEN``, web identity (``AWS_WEB_IDENTITY_TOKEN_FILE`` + ``AWS_ROLE_ARN``, EKS),
  ECS container credentials, then EC2 instance metadata. ``~/.aws`` profiles are not read.
- SSE (``sse``/``sse_kms_key_id``) is set on the obstore store and so sent on every PUT, including
  conditional and multipart ones (a test checks the headers reach the server).
- body integrity: requests are SigV4-signed with the payload's SHA-256, so the server rejects a
  corrupted upload; downloads are length-checked against the object's size (``CorruptRead``).
- ranges: ``get_ranges`` coalesces ranges less than ``coalesce`` bytes apart and fetches the spans
  in parallel with ``get_async(range=...)``. obstore's own ``get_ranges`` is not used because it
  panics when a range starts past the object's end and does not report the object size, which the
  truncation check needs.
- listing is in the server's key order: AWS S3, MinIO, R2 and GCS sort keys by UTF-8 bytes;
  SeaweedFS lists folder by folder, which sorts '/' before every other character ("a/1" before
  "a-x"). The two orders agree unless two sibling names are one a prefix of the other followed by
  a character below '/' (`` !"#$%&'()*+,-.``); Lagoon's own listings never meet that (every folder
  it lists holds fixed-width numeric or id names). obstore lists by path segment ("a/b" lists
  "a/b/..."), so a prefix that stops inside a segment lists its parent folder and filters, and
  stops at the first name past the prefix (a rule that holds in both orders). A ``start_after``
  that is a key becomes S3's ``start-after`` (exclusive, in the server's order: that is what makes
  a resumed listing exact); one ending in '/' is applied here, by bytes. SeaweedFS skips a folder's
  contents when start-after names the folder itself: pass keys that were listed (as the retrying
  wrapper's resume and every Lagoon caller do), not folder names.
  ``list_prefixes`` uses one delimiter listing of the parent folder (all its pages: one request
  per 1,000 children) and applies ``start_after``/``limit`` client-side.
- ``now()`` PUTs a probe object ``_lagoon/clock/<random>`` (one per store instance, deleted by
  ``close``) and HEADs it: two requests, nothing cached. S3's Last-Modified has one-second
  resolution, so ``now()`` and every ``last_modified`` are truncated to the second.
- ``put`` returns the etag from the PUT response; its ``last_modified`` is the local clock
  (S3 does not return it; a HEAD would cost a request). Use ``head`` for the store's timestamp.

Fork hazard: once a process has done I/O through obstore, a ``fork()``ed child hangs on its first
request. Build stores after forking (one per worker process) and use the ``spawn`` start method.
"""

from __future__ import annotations

import asyncio
import bisect
import builtins
import datetime as dt
import re
import secrets
from collections.abc import AsyncIterator, Sequence
from typing import Any

import obstore
import obstore.exceptions as oe
import obstore.store as obs

from lagoon.storage.base import (
    AccessDenied,
    AlreadyExists,
    ConditionalConflict,
    CorruptRead,
    IfMatch,
    InvalidKey,
    ObjectMeta,
    ObjectNotFound,
    PreconditionFailed,
    PutMode,
    PutModeT,
    StorageError,
    StoreUnavailable,
    check_range,
    validate_key,
    validate_prefix,
)

CLOCK_PREFIX = "_lagoon/clock/"
_STATUS = re.compile(r"status code: (\d{3})")
_OBSTORE_ERRORS = (oe.BaseError, OSError)


def _status(text: str) -> int | None:
    match = _STATUS.search(text)
    return int(match.group(1)) if match else None


def map_error(exc: BaseException, key: str, *, if_match: bool = False) -> StorageError:
    """Translate an obstore exception into the storage error tree (see the module table)."""
    text = str(exc).split("\n\nDebug source", 1)[0]
    short = f"{key}: {text[:300]}"
    status = _status(text)
    if status == 409:
        return ConditionalConflict(short)
    if "NoSuchBucket" in text:
        return StorageError(short)
    if isinstance(exc, FileNotFoundError) or status == 404:
        return PreconditionFailed(short) if if_match else ObjectNotFound(key)
    if isinstance(exc, oe.AlreadyExistsError):
        return AlreadyExists(key)
    if isinstance(exc, oe.PreconditionError):
        return PreconditionFailed(key)
    if isinstance(exc, oe.PermissionDeniedError | oe.UnauthenticatedError):
        return AccessDenied(short)
    if isinstance(exc, oe.InvalidPathError | oe.NotSupportedError | oe.UnknownConfigurationKeyError):
        return StorageError(short)
    if status is not None and 400 <= status < 500 and status not in (408, 429):
        return StorageError(short)
    return StoreUnavailable(short)


def _meta(key: str, m: Any) -> ObjectMeta:
    return ObjectMeta(key=key, size=int(m["size"]), etag=m["e_tag"], last_modified=m["last_modified"])


def _coalesce(ranges: Sequence[tuple[int, int]], gap: int) -> builtins.list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if spans and start <= spans[-1][1] + gap:
            spans[-1] = (spans[-1][0], max(spans[-1][1], end))
        else:
            spans.append((start, end))
    return spans


class S3Store:
    """``ObjectStore`` on an S3 bucket; every key is stored as ``prefix + key``."""

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        region: str = "",
        endpoint: str = "",
        sse: str = "",
        sse_kms_key_id: str = "",
        max_retries: int = 0,
        connect_timeout_secs: float = 5.0,
        request_timeout_secs: float = 60.0,
        multipart_threshold: int = 64 * 1024 * 1024,
        multipart_chunk: int = 8 * 1024 * 1024,
        coalesce: int = 1024 * 1024,
    ) -> None:
        if not bucket:
            raise ValueError("the s3 backend needs a bucket")
        if prefix and (prefix.startswith("/") or not prefix.endswith("/")):
            raise ValueError("prefix must be empty or end with '/' and not start with '/'")
        if sse_kms_key_id and sse != "aws:kms":
            raise ValueError("sse_kms_key_id needs sse = 'aws:kms'")
        config: dict[str, Any] = {}
        if region:
            config["region"] = region
        if endpoint:
            config["endpoint"] = endpoint
        if sse:
            config["server_side_encryption"] = sse
        if sse_kms_key_id:
            config["sse_kms_key_id"] = sse_kms_key_id
        self.bucket = bucket
        self.prefix = prefix
        self._multipart_threshold = multipart_threshold
        self._multipart_chunk = multipart_chunk
        self._coalesce = coalesce
        self._clock_key = CLOCK_PREFIX + secrets.token_hex(8)
        self._clock_used = False
        self._store = obs.S3Store(
            bucket,
            prefix=prefix.rstrip("/") or None,
            config=config,  # type: ignore[arg-type]
            client_options={
                "allow_http": endpoint.startswith("http://"),
                "connect_timeout": dt.timedelta(seconds=connect_timeout_secs),
                "timeout": dt.timedelta(seconds=request_timeout_secs),
            },
            retry_config={"max_retries": max_retries},
        )

    # -- reads --------------------------------------------------------------------------------

    async def get(self, key: str) -> bytes:
        validate_key(key)
        try:
            result = await obstore.get_async(self._store, key)
            data = await result.bytes_async()
        except _OBSTORE_ERRORS as exc:
            raise map_error(exc, key) from exc
        size = int(result.meta["size"])
        if len(data) != size:
            raise CorruptRead(f"{key}: got {len(data)} of {size} bytes")
        return bytes(data)

    async def _fetch_span(self, key: str, start: int, end: int) -> bytes:
        """Bytes [start, end) clamped to the object, length-checked against its size."""
        try:
            result = await obstore.get_async(self._store, key, options={"range": (start, end)})
            data = await result.bytes_async()
        except _OBSTORE_ERRORS as exc:
            if _status(str(exc)) == 416:  # starts at/after the end: b"" if the object exists
                await self.head(key)
                return b""
            raise map_error(exc, key) from exc
        want = max(0, min(end, int(result.meta["size"])) - start)
        if len(data) != want:
            raise CorruptRead(f"{key}: got {len(data)} of {want} bytes at {start}")
        return bytes(data)

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        return (await self.get_ranges(key, [(start, end)]))[0]

    async def get_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> builtins.list[bytes]:
        validate_key(key)
        for start, end in ranges:
            check_range(start, end)
        spans = _coalesce([(s, e) for s, e in ranges if e > s], self._coalesce)
        if not spans:
            await self.head(key)  # only empty ranges: still ObjectNotFound for a missing key
            return [b"" for _ in ranges]
        datas = await asyncio.gather(*(self._fetch_span(key, s, e) for s, e in spans))
        starts = [s for s, _ in spans]
        out: list[bytes] = []
        for start, end in ranges:
            if end <= start:
                out.append(b"")
                continue
            i = bisect.bisect_right(starts, start) - 1  # the span that contains [start, end)
            out.append(datas[i][start - starts[i] : end - starts[i]])
        return out

    async def head(self, key: str) -> ObjectMeta:
        validate_key(key)
        try:
            return _meta(key, await obstore.head_async(self._store, key))
        except _OBSTORE_ERRORS as exc:
            raise map_error(exc, key) from exc

    # -- writes -------------------------------------------------------------------------------

    async def put(self, key: str, data: bytes, mode: PutModeT = PutMode.OVERWRITE) -> ObjectMeta:
        validate_key(key)
        obstore_mode: Any
        if isinstance(mode, IfMatch):
            obstore_mode = {"e_tag": mode.etag}
        elif mode in (PutMode.OVERWRITE, PutMode.CREATE):
            obstore_mode = mode
        else:
            raise ValueError(f"unknown put mode {mode!r}")
        multipart = mode == PutMode.OVERWRITE and len(data) > self._multipart_threshold
        try:
            result = await obstore.put_async(
                self._store,
                key,
                data,
                mode=obstore_mode,
                use_multipart=multipart,
                chunk_size=self._multipart_chunk,
            )
        except _OBSTORE_ERRORS as exc:
            raise map_error(exc, key, if_match=isinstance(mode, IfMatch)) from exc
        return ObjectMeta(
            key=key, size=len(data), etag=result["e_tag"], last_modified=dt.datetime.now(dt.UTC)
        )

    async def delete(self, key: str) -> None:
        validate_key(key)
        try:
            await obstore.delete_async(self._store, key)
        except _OBSTORE_ERRORS as exc:
            err = map_error(exc, key)
            if not isinstance(err, ObjectNotFound):
                raise err from exc

    # -- listings -----------------------------------------------------------------------------

    async def list(self, prefix: str, start_after: str | None = None) -> AsyncIterator[ObjectMeta]:
        validate_prefix(prefix)
        cut = prefix.rfind("/") + 1
        folder = prefix[:cut].rstrip("/") or None
        partial = prefix[cut:]  # the part of the prefix inside its last path segment
        offset = None
        if start_after is not None and not start_after.endswith("/"):
            try:
                offset = validate_key(start_after)  # the server applies it, in its own order
            except InvalidKey:
                offset = None
        try:
            async for chunk in obstore.list(self._store, folder, offset=offset, chunk_size=1000):
                for m in chunk:
                    key = m["path"]
                    if not key.startswith(prefix):
                        name = key[cut:].split("/", 1)[0]
                        if name > partial and not name.startswith(partial):
                            return  # past every name that starts with the prefix, in either order
                        continue
                    if offset is None and start_after is not None and key <= start_after:
                        continue
                    yield _meta(key, m)
        except _OBSTORE_ERRORS as exc:
            raise map_error(exc, prefix) from exc

    async def list_prefixes(
        self, prefix: str, start_after: str | None = None, limit: int | None = None
    ) -> builtins.list[str]:
        validate_prefix(prefix)
        folder = prefix[: prefix.rfind("/") + 1].rstrip("/") or None
        try:
            result = await obstore.list_with_delimiter_async(self._store, folder)
        except _OBSTORE_ERRORS as exc:
            raise map_error(exc, prefix) from exc
        found = sorted(
            p + "/"
            for p in result["common_prefixes"]
            if (p + "/").startswith(prefix) and (start_after is None or p + "/" > start_after)
        )
        return found if limit is None else found[:limit]

    # -- misc ---------------------------------------------------------------------------------

    async def now(self) -> dt.datetime:
        """The store's clock: Last-Modified of a probe object PUT just now (1 s resolution)."""
        self._clock_used = True
        await self.put(self._clock_key, b"t")
        return (await self.head(self._clock_key)).last_modified

    async def close(self) -> None:
        if self._clock_used:
            self._clock_used = False
            try:
                await self.delete(self._clock_key)
            except StorageError:
                pass  # a leftover probe is harmless (a few bytes under _lagoon/clock/)
