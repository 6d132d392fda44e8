"""S3Store specifics on a real S3 server (SeaweedFS): SSE, prefixes, signatures, the store clock;
and error mapping and aws:kms headers against small stub servers (no local S3 has a KMS)."""

from __future__ import annotations

import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

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
from tests.conftest import S3Server
from tests.storage.conftest import make_s3_store

pytestmark = pytest.mark.anyio


def sse_of(s3: S3Server, key: str) -> tuple[str | None, str | None]:
    head = s3.client.head_object(Bucket=s3.bucket, Key=key)
    return head.get("ServerSideEncryption"), head.get("SSEKMSKeyId")


async def put_every_way(store: S3Store) -> None:
    """A plain, an if-match, a create, a multipart put and the clock probe (also a PUT)."""
    v1 = await store.put("plain", b"1")
    await store.put("plain", b"2", IfMatch(v1.etag or ""))
    await store.put("created", b"1", PutMode.CREATE)
    await store.put("multipart", b"m" * (6 * 1024**2))  # above the threshold: multipart upload
    await store.now()


@pytest.mark.s3
@pytest.mark.parametrize(("sse", "expected"), [("AES256", ("AES256", None)), ("", (None, None))])
async def test_sse_on_every_put(
    s3_server: S3Server, s3_prefix: str, sse: str, expected: tuple[str | None, str | None]
) -> None:
    """SeaweedFS stores AES256 SSE and reports it on HEAD, like AWS."""
    store = make_s3_store(
        s3_server, s3_prefix, sse=sse, multipart_threshold=5 * 1024**2, multipart_chunk=5 * 1024**2
    )
    await put_every_way(store)
    for key in ["plain", "created", "multipart", store._clock_key]:
        assert sse_of(s3_server, s3_prefix + key) == expected, key
    head = s3_server.client.head_object(Bucket=s3_server.bucket, Key=s3_prefix + "multipart")
    assert head["ETag"].endswith('-2"')  # really went through multipart
    await store.close()


@pytest.mark.s3
async def test_aws_kms_without_a_kms_fails_and_writes_nothing(s3_server: S3Server, s3_prefix: str) -> None:
    """SeaweedFS has no KMS: aws:kms PUTs answer 500. Lagoon reports the store unavailable (so
    ``lagoon doctor`` fails) and nothing is stored."""
    store = make_s3_store(s3_server, s3_prefix, sse="aws:kms", sse_kms_key_id="some-key")
    with pytest.raises(StoreUnavailable):
        await store.put("k", b"x", PutMode.CREATE)
    assert s3_server.client.list_objects_v2(Bucket=s3_server.bucket, Prefix=s3_prefix).get("KeyCount") == 0


@pytest.mark.s3
async def test_large_conditional_puts_are_single_requests(s3_server: S3Server, s3_prefix: str) -> None:
    """Conditional multipart completion is not atomic on every store (SeaweedFS): conditional puts
    above the multipart threshold still go as one PUT, and a second create still loses."""
    store = make_s3_store(s3_server, s3_prefix, multipart_threshold=5 * 1024**2, multipart_chunk=5 * 1024**2)
    big = b"c" * (6 * 1024**2)
    meta = await store.put("big", big, PutMode.CREATE)
    with pytest.raises(AlreadyExists):
        await store.put("big", b"other", PutMode.CREATE)
    await store.put("big", big[::-1], IfMatch(meta.etag or ""))
    head = s3_server.client.head_object(Bucket=s3_server.bucket, Key=s3_prefix + "big")
    assert "-" not in head["ETag"] and head["ContentLength"] == len(big)
    assert await store.get("big") == big[::-1]
    await store.close()


@pytest.mark.s3
async def test_a_wrong_secret_is_refused(
    s3_server: S3Server, s3_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The test server checks signatures: a store with the wrong secret gets AccessDenied."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    store = make_s3_store(s3_server, s3_prefix)
    with pytest.raises(AccessDenied):
        await store.put("k", b"x")
    with pytest.raises(AccessDenied):
        await store.get("k")


class Recorder(BaseHTTPRequestHandler):
    """A minimal S3 that accepts PUTs (plain and multipart) and records every request's headers."""

    seen: ClassVar[list[tuple[str, str, dict[str, str]]]] = []

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _reply(self, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(200)
        for name, value in {"ETag": '"e1"', **(headers or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        Recorder.seen.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query, keep_blank_values=True)
        if self.command == "POST" and "uploads" in query:
            self._reply(
                b"<InitiateMultipartUploadResult><UploadId>u1</UploadId></InitiateMultipartUploadResult>"
            )
        elif self.command == "POST":
            self._reply(b'<CompleteMultipartUploadResult><ETag>"e2-2"</ETag></CompleteMultipartUploadResult>')
        elif self.command == "HEAD":
            self._reply(headers={"Last-Modified": "Wed, 02 Dec 2026 05:00:00 GMT", "Content-Length": "1"})
        else:
            self._reply()

    do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = _handle


async def test_aws_kms_headers_reach_the_store_on_every_put(monkeypatch: pytest.MonkeyPatch) -> None:
    """aws:kms with a key id (no local S3 server has a KMS): the headers go on every PUT and on
    the multipart upload's creation, checked on the wire."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Recorder.seen = []
    try:
        store = S3Store(
            "bucket",
            region="us-east-1",
            endpoint=f"http://127.0.0.1:{server.server_address[1]}",
            sse="aws:kms",
            sse_kms_key_id="c71a6a43-9ab8-4c3e-aed5-b0a724a326e8",
            multipart_threshold=5 * 1024**2,
            multipart_chunk=5 * 1024**2,
        )
        await put_every_way(store)
    finally:
        server.shutdown()
        server.server_close()
    uploads = [
        h
        for method, path, h in Recorder.seen
        if (method == "PUT" and "partNumber=" not in path) or (method == "POST" and "uploads" in path)
    ]
    assert len(uploads) == 5  # plain, if-match, create, clock probe, multipart creation
    for headers in uploads:
        assert headers["x-amz-server-side-encryption"] == "aws:kms"
        assert (
            headers["x-amz-server-side-encryption-aws-kms-key-id"] == "c71a6a43-9ab8-4c3e-aed5-b0a724a326e8"
        )


@pytest.mark.s3
async def test_keys_live_under_the_prefix(s3_server: S3Server, s3_prefix: str) -> None:
    store = make_s3_store(s3_server, s3_prefix)
    other = make_s3_store(s3_server, s3_prefix + "other/")
    await store.put("a/b", b"1")
    await other.put("x", b"2")
    listed = s3_server.client.list_objects_v2(Bucket=s3_server.bucket, Prefix=s3_prefix)
    assert sorted(o["Key"] for o in listed["Contents"]) == [s3_prefix + "a/b", s3_prefix + "other/x"]
    assert [m.key async for m in other.list("")] == ["x"]
    assert [m.key async for m in store.list("a/")] == ["a/b"]


@pytest.mark.s3
async def test_now_is_the_store_clock_and_probe_is_removed(s3_server: S3Server, s3_prefix: str) -> None:
    store = make_s3_store(s3_server, s3_prefix)
    now = await store.now()
    assert now.microsecond == 0  # Last-Modified has one-second resolution
    assert abs(now.timestamp() - time.time()) < 5
    await store.close()
    listed = s3_server.client.list_objects_v2(Bucket=s3_server.bucket, Prefix=s3_prefix + CLOCK_PREFIX)
    assert listed.get("KeyCount", 0) == 0


@pytest.mark.s3
async def test_missing_bucket_is_not_transient(s3_server: S3Server) -> None:
    store = S3Store("no-such-bucket-here", region=s3_server.region, endpoint=s3_server.endpoint)
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
