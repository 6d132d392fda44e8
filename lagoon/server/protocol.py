"""The HTTP/1.1 protocol of a serving process: uvicorn's httptools protocol with header limits.

uvicorn's httptools protocol buffers a request's head (request line and headers) without bound;
a client could send megabytes of headers to any route, authenticated or not. This subclass
counts the bytes of the head as they arrive and the number of header lines, and answers
``431 Request Header Fields Too Large`` (turbopuffer's error body, ``connection: close``) as soon
as either limit is crossed — before the head is complete and before any route runs:

- ``server.max_header_bytes``: request line + headers, checked after each received chunk (so at
  most one socket read past the limit is ever buffered);
- ``server.max_headers``: header lines.

Everything else is uvicorn's protocol unchanged.
"""

from __future__ import annotations

import logging
from typing import Any

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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._head_lines = 0
        self._in_head = True
        self._refused = False

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._head_lines = 0
        self._in_head = True

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_lines += 1
        if self._head_lines > self.max_headers:
            raise _HeadTooLarge(f"more than {self.max_headers} header lines (server.max_headers)")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
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
            self._refuse(
                f"request line and headers are larger than {self.max_header_bytes} bytes (server.max_header_bytes)"
            )

    def _refuse(self, why: str) -> None:
        self._refused = True
        body = error_body(f"request header fields too large: {why}")
        head = (
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n"
            b"connection: close\r\n\r\n"
        )
        client = f"{self.client[0]}:{self.client[1]}" if self.client else None
        log_event(
            log,
            "request refused: header fields too large",
            level=logging.WARNING,
            status=431,
            client=client,
            reason=why,
        )
        self.transport.write(head + body)
        self.transport.close()


def limited_protocol(max_header_bytes: int, max_headers: int) -> type[LimitedHttpToolsProtocol]:
    """A protocol class with these limits (uvicorn instantiates it per connection)."""
    return type(
        "LagoonHttpProtocol",
        (LimitedHttpToolsProtocol,),
        {"max_header_bytes": max_header_bytes, "max_headers": max_headers},
    )


__all__ = ["LimitedHttpToolsProtocol", "limited_protocol"]
