"""The HTTP/1.1 protocol of a serving process: uvicorn's httptools protocol with head limits.

uvicorn's httptools protocol buffers a request's head (request line and headers) without bound
in size and in time, and accepts connections without bound; a client could send megabytes of
headers to any route, authenticated or not, or hold thousands of connections open by sending
nothing (or one header byte now and then) until the process runs out of file descriptors,
which its store's files need too. This subclass:

- counts the bytes of the head as they arrive and the number of header lines, and answers
  ``431 Request Header Fields Too Large`` (turbopuffer's error body, ``connection: close``) as
  soon as either limit is crossed, before the head is complete and before any route runs:
  ``server.max_header_bytes`` (request line + headers: the parsed target and header lines are
  counted as the parser hands them over, so a head that arrives in one socket read is measured
  too, and the bytes of a head not parsed yet after each received chunk, so at most one socket
  read past the limit is ever buffered) and ``server.max_headers`` (lines);
- gives each request's head ``server.header_timeout_secs`` to arrive, counted from when the
  connection opens (first request) or from the first byte of the next request on a kept-alive
  connection (uvicorn's keep-alive timeout bounds the idle time between requests): past it a
  started head gets ``408 Request Timeout`` and the connection is closed; a connection that sent
  nothing is closed without a word. The body has its own deadline (``server.request_timeout_secs``,
  the routes' 408);
- closes a connection as soon as it is accepted when the process already holds
  ``server.max_connections`` (logged at most once a second).

Everything else is uvicorn's protocol unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from lagoon.logs import log_event
from lagoon.server.errors import error_body

log = logging.getLogger("lagoon.server.access")


class _HeadTooLarge(Exception):
    pass


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """See the module docstring; limits are class attributes (``limited_protocol`` binds them)."""

    max_header_bytes = 64 * 1024
    max_headers = 100
    header_timeout = 10.0
    max_connections = 4096
    # when a connection over max_connections was last logged (one line a second under a flood)
    _over_logged: ClassVar[float] = 0.0
    _over_count: ClassVar[int] = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0  # bytes received while the head was incomplete
        self._parsed_bytes = 0  # bytes of the head the parser has handed over (target, headers)
        self._head_lines = 0
        self._in_head = True
        self._refused = False
        self._head_started = False  # a request's first byte has arrived, its head has not ended
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self._refused = True
            self._log_over_limit()
            transport.close()
            return
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._parsed_bytes = 0
        self._head_lines = 0
        self._in_head = True
        self._head_started = True
        if self._head_timer is None:  # the first request's runs from connection_made
            self._start_head_timer()

    def on_url(self, url: bytes) -> None:
        self._count_parsed(len(url))  # (the parser may hand the target over in pieces)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_lines += 1
        if self._head_lines > self.max_headers:
            raise _HeadTooLarge(f"more than {self.max_headers} header lines (server.max_headers)")
        self._count_parsed(len(name) + len(value) + 4)  # (+ ": " and line end)
        super().on_header(name, value)

    def _count_parsed(self, size: int) -> None:
        self._parsed_bytes += size
        if self._parsed_bytes > self.max_header_bytes:
            raise _HeadTooLarge(self._too_large())

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_started = False
        self._stop_head_timer()
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        # a request is arriving: the keep-alive timer of the previous response must not close the
        # connection under it (uvicorn's own data_received does this first)
        self._unset_keepalive_if_required()
        counting = self._in_head
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as e:
            cause = e.__cause__ or e.__context__
            if isinstance(cause, _HeadTooLarge):
                self._refuse(str(cause))
                return
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
            return
        if counting:
            self._head_bytes += len(data)
        if self._in_head and self._head_bytes > self.max_header_bytes:
            self._refuse(self._too_large())

    def _too_large(self) -> str:
        return f"request line and headers are larger than {self.max_header_bytes} bytes (server.max_header_bytes)"

    def _start_head_timer(self) -> None:
        self._stop_head_timer()
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._refused or self.transport.is_closing():
            return
        if not self._head_started:  # opened and sent nothing: nothing to answer
            self._refused = True
            self.transport.close()
            return
        self._refuse(
            f"the request head did not arrive within {self.header_timeout:g} s (server.header_timeout_secs)",
            status=b"408 Request Timeout",
            what="request head timed out",
        )

    def _log_over_limit(self) -> None:
        cls = type(self)
        cls._over_count += 1
        now = time.monotonic()
        if now - cls._over_logged < 1.0:
            return
        client = f"{self.client[0]}:{self.client[1]}" if self.client else None
        log_event(
            log,
            "connection refused: too many open connections",
            level=logging.WARNING,
            limit=self.max_connections,
            refused_since_last_line=cls._over_count,
            client=client,
        )
        cls._over_logged, cls._over_count = now, 0

    def _refuse(
        self,
        why: str,
        status: bytes = b"431 Request Header Fields Too Large",
        what: str = "request header fields too large",
    ) -> None:
        self._refused = True
        self._stop_head_timer()
        body = error_body(f"{what}: {why}")
        head = (
            b"HTTP/1.1 " + status + b"\r\n"
            b"content-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n"
            b"connection: close\r\n\r\n"
        )
        client = f"{self.client[0]}:{self.client[1]}" if self.client else None
        log_event(
            log,
            f"request refused: {what}",
            level=logging.WARNING,
            status=int(status.split()[0]),
            client=client,
            reason=why,
        )
        self.transport.write(head + body)
        self.transport.close()


def limited_protocol(
    max_header_bytes: int, max_headers: int, header_timeout: float = 10.0, max_connections: int = 4096
) -> type[LimitedHttpToolsProtocol]:
    """A protocol class with these limits (uvicorn instantiates it per connection)."""
    return type(
        "LagoonHttpProtocol",
        (LimitedHttpToolsProtocol,),
        {
            "max_header_bytes": max_header_bytes,
            "max_headers": max_headers,
            "header_timeout": header_timeout,
            "max_connections": max_connections,
            "_over_logged": 0.0,
            "_over_count": 0,
        },
    )


__all__ = ["LimitedHttpToolsProtocol", "limited_protocol"]
