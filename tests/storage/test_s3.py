"""S3Store specifics: SSE headers reach the server, prefixes, error mapping, the store clock."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lagoon.storage import (
    AccessDenied,
    AlreadyExists,
    ConditionalConflict,
    IfMatch,
    ObjectNotFound,
    PreconditionFailed,
    PutMode,
    S3Store,
    StorageError,
    StoreUnavailable,
)
from lagoon.storage.s3 import CLOCK_PREFIX, map_error
from tests.conftest import MotoS3
from tests.storage.conftest import make_s3_store

pytestmark = pytest.mark.anyio


def sse_of(moto: MotoS3, key: str) -> tuple[str | None, str | None]:
    head = moto.client.head_object(Bucket=moto.bucket, Key=key)
    return head.get("ServerSideEncryption"), head.get("SSEKMSKeyId")


@pytest.mark.s3
@pytest.mark.parametrize(
    ("sse", "kms_key", "expected"),
    [
        ("AES256", "", ("AES256", None)),
        (
            "aws:kms",
            "c71a6a43-9ab8-4c3e-aed5-b0a724a326e8",
            ("aws:kms", "c71a6a43-9ab8-4c3e-aed5-b0a724a326e8"),
        ),
        ("", "", (None, None)),
    ],
)
async def test_sse_header_on_every_put(
    moto_s3: MotoS3, s3_prefix: str, sse: str, kms_key: str, expected: tuple[str | None, str | None]
) -> None:
    store = make_s3_store(
        moto_s3,
        s3_prefix,
        sse=sse,
        sse_kms_key_id=kms_key,
        multipart_threshold=5 * 1024**2,
        multipart_chunk=5 * 1024**2,
    )
    v1 = await store.put("plain", b"1")
    await store.put("plain", b"2", IfMatch(v1.etag or ""))
    await store.put("created", b"1", PutMode.CREATE)
    await store.put("multipart", b"m" * (6 * 1024**2))  # above the threshold: multipart upload
    await store.now()  # the clock probe is a PUT too
    for key in ["plain", "created", "multipart", store._clock_key]:
        assert sse_of(moto_s3, s3_prefix + key) == expected, key
    head = moto_s3.client.head_object(Bucket=moto_s3.bucket, Key=s3_prefix + "multipart")
    assert head["ETag"].endswith('-2"')  # really went through multipart
    await store.close()


@pytest.mark.s3
async def test_keys_live_under_the_prefix(moto_s3: MotoS3, s3_prefix: str) -> None:
    store = make_s3_store(moto_s3, s3_prefix)
    other = make_s3_store(moto_s3, s3_prefix + "other/")
    await store.put("a/b", b"1")
    await other.put("x", b"2")
    listed = moto_s3.client.list_objects_v2(Bucket=moto_s3.bucket, Prefix=s3_prefix)
    assert sorted(o["Key"] for o in listed["Contents"]) == [s3_prefix + "a/b", s3_prefix + "other/x"]
    assert [m.key async for m in other.list("")] == ["x"]
    assert [m.key async for m in store.list("a/")] == ["a/b"]


@pytest.mark.s3
async def test_now_is_the_store_clock_and_probe_is_removed(moto_s3: MotoS3, s3_prefix: str) -> None:
    store = make_s3_store(moto_s3, s3_prefix)
    now = await store.now()
    assert now.microsecond == 0  # Last-Modified has one-second resolution
    assert abs(now.timestamp() - time.time()) < 5
    await store.close()
    listed = moto_s3.client.list_objects_v2(Bucket=moto_s3.bucket, Prefix=s3_prefix + CLOCK_PREFIX)
    assert listed.get("KeyCount", 0) == 0


@pytest.mark.s3
async def test_missing_bucket_is_not_transient(moto_s3: MotoS3) -> None:
    store = S3Store("no-such-bucket-here", region=moto_s3.region, endpoint=moto_s3.endpoint)
    with pytest.raises(StorageError) as info:
        await store.get("k")
    assert not info.value.transient and not isinstance(info.value, ObjectNotFound)


def test_constructor_validates() -> None:
    with pytest.raises(ValueError):
        S3Store("")
    with pytest.raises(ValueError):
        S3Store("bucket", prefix="no-slash")
    with pytest.raises(ValueError):
        S3Store("bucket", sse="AES256", sse_kms_key_id="k")


# -- error mapping against a stub S3 that answers what we tell it to ----------------------------


class Stub:
    status: int | str = 200
    body = b""


class StubHandler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if Stub.status == "hang":
            time.sleep(1.5)
            return
        assert isinstance(Stub.status, int)
        self.send_response(Stub.status)
        self.send_header("Content-Length", str(len(Stub.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(Stub.body)

    do_GET = do_PUT = do_HEAD = do_DELETE = _answer


@pytest.fixture(scope="module")
def stub_endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), StubHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def s3_error(code: str) -> bytes:
    return f"<Error><Code>{code}</Code><Message>m</Message></Error>".encode()


@pytest.fixture
def stub_store(stub_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> S3Store:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    return S3Store("bucket", region="us-east-1", endpoint=stub_endpoint, request_timeout_secs=0.5)


@pytest.mark.parametrize(
    ("status", "code", "create", "if_match", "get"),
    [
        (409, "ConditionalRequestConflict", ConditionalConflict, ConditionalConflict, ConditionalConflict),
        (412, "PreconditionFailed", AlreadyExists, PreconditionFailed, PreconditionFailed),
        (404, "NoSuchKey", ObjectNotFound, PreconditionFailed, ObjectNotFound),
        (500, "InternalError", StoreUnavailable, StoreUnavailable, StoreUnavailable),
        (503, "SlowDown", StoreUnavailable, StoreUnavailable, StoreUnavailable),
        (429, "TooManyRequests", StoreUnavailable, StoreUnavailable, StoreUnavailable),
        (400, "InvalidRequest", StorageError, StorageError, StorageError),
        (403, "AccessDenied", AccessDenied, AccessDenied, AccessDenied),
    ],
)
async def test_http_errors_map_to_storage_errors(
    stub_store: S3Store,
    status: int,
    code: str,
    create: type[Exception],
    if_match: type[Exception],
    get: type[Exception],
) -> None:
    Stub.status, Stub.body = status, s3_error(code)
    with pytest.raises(create) as c:
        await stub_store.put("k", b"x", PutMode.CREATE)
    with pytest.raises(if_match) as m:
        await stub_store.put("k", b"x", IfMatch('"etag"'))
    with pytest.raises(get) as g:
        await stub_store.get("k")
    for info, expected in ((c, create), (m, if_match), (g, get)):
        assert type(info.value) is expected  # exact class, not a subclass
        assert isinstance(info.value, StorageError)
        assert info.value.transient == (status in (409, 429) or status >= 500)


async def test_timeout_and_refused_connection_are_unavailable(stub_store: S3Store) -> None:
    Stub.status = "hang"
    with pytest.raises(StoreUnavailable):
        await stub_store.put("k", b"x", PutMode.CREATE)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    refused = S3Store("bucket", region="us-east-1", endpoint=f"http://127.0.0.1:{port}")
    with pytest.raises(StoreUnavailable):
        await refused.get("k")


def test_map_error_reads_the_status_before_the_class() -> None:
    import obstore.exceptions as oe

    text = (
        "Object at location k already exists: ... Server returned non-2xx status code: 409 Conflict: <Error>"
    )
    assert isinstance(map_error(oe.AlreadyExistsError(text), "k"), ConditionalConflict)
    text = "Object at location k already exists: ... status code: 412 Precondition Failed"
    assert isinstance(map_error(oe.AlreadyExistsError(text), "k"), AlreadyExists)
    assert isinstance(map_error(FileNotFoundError("k"), "k"), ObjectNotFound)
    assert isinstance(map_error(FileNotFoundError("k"), "k", if_match=True), PreconditionFailed)
    assert isinstance(map_error(oe.GenericError("HTTP error: error sending request"), "k"), StoreUnavailable)
