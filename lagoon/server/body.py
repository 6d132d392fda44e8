"""Request bodies: size-capped reading, ``Content-Encoding`` decoding, JSON parsing.

The wire size of a body is capped by the middleware as it streams in (``max_body_bytes``, 413 before
anything past the cap is buffered). A compressed body is decoded as it arrives (``BodyDecoder``),
chunk by chunk, and capped again on its decoded size, so a small gzip bomb never expands past the
cap in memory and stops as soon as it crosses it.
JSON is parsed with orjson; anything that is not a JSON object where one is expected is a 400.
"""

from __future__ import annotations

import zlib
from typing import Any

import orjson

from lagoon.errors import InvalidRequest, PayloadTooLarge

_CHUNK = 1 << 20


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body is larger than the limit of {limit} bytes (server.max_body_bytes)")


class BodyDecoder:
    """Incremental ``Content-Encoding`` decoding with the decoded size capped at ``limit``.

    ``feed`` each wire chunk as it arrives (413 as soon as the decoded bytes cross the limit, 400
    for bytes that are not valid for the encoding), then ``finish``. Identity bodies are only
    collected. CPU-heavy for compressed input (a 64 KB chunk may inflate to megabytes): callers on
    an event loop run ``feed`` in a thread when ``encoded`` (zlib releases the GIL)."""

    def __init__(self, encoding: str, limit: int) -> None:
        enc = encoding.strip().lower()
        if enc in ("", "identity"):
            self.wbits: int | None = None
        elif enc in ("gzip", "x-gzip"):
            self.wbits = 16 + zlib.MAX_WBITS
        elif enc == "deflate":
            self.wbits = 32 + zlib.MAX_WBITS  # zlib or gzip header, auto-detected
        else:
            raise InvalidRequest(f"unsupported Content-Encoding {encoding[:40]!r}: use gzip or identity")
        self.enc = enc
        self.limit = limit
        self.out = bytearray()
        self._wbits = self.wbits or 0
        self._d = zlib.decompressobj(self._wbits) if self.wbits is not None else None
        self._fed = False

    @property
    def encoded(self) -> bool:
        return self._d is not None

    def feed(self, data: bytes) -> None:
        if not data:
            return
        self._fed = True
        if self._d is None:
            self.out += data
            return
        try:
            pending = data
            while pending:
                if self._d.eof:  # a further gzip member
                    rest = self._d.unused_data + pending
                    self._d = zlib.decompressobj(self._wbits)
                    pending = rest
                chunk = self._d.decompress(pending, _CHUNK)
                self.out += chunk
                if len(self.out) > self.limit:
                    raise too_large(self.limit)
                pending = self._d.unconsumed_tail
                if self._d.eof:
                    pending = self._d.unused_data + pending
                    if pending:
                        self._d = zlib.decompressobj(self._wbits)
                elif not pending and not chunk:
                    break
            while not self._d.eof:  # drain what the decompressor still holds
                chunk = self._d.decompress(b"", _CHUNK)
                if not chunk:
                    break
                self.out += chunk
                if len(self.out) > self.limit:
                    raise too_large(self.limit)
        except zlib.error as e:
            raise InvalidRequest(f"request body is not valid {self.enc}: {e}") from None

    def finish(self) -> bytes:
        if self._d is not None and self._fed and not self._d.eof:
            raise InvalidRequest(f"truncated {self.enc} request body")
        return bytes(self.out)


def decode_content(raw: bytes, encoding: str, limit: int) -> bytes:
    """``raw`` decoded per ``Content-Encoding`` (identity, gzip, x-gzip, deflate), at most ``limit`` bytes."""
    enc = encoding.strip().lower()
    if enc in ("", "identity"):
        return raw
    if enc in ("gzip", "x-gzip"):
        wbits = 16 + zlib.MAX_WBITS
    elif enc == "deflate":
        wbits = 32 + zlib.MAX_WBITS  # zlib or gzip header, auto-detected
    else:
        raise InvalidRequest(f"unsupported Content-Encoding {encoding[:40]!r}: use gzip or identity")
    out = bytearray()
    data = raw
    try:
        while data:  # one iteration per gzip member
            d = zlib.decompressobj(wbits)
            pending = data
            while True:
                chunk = d.decompress(pending, _CHUNK)
                out += chunk
                if len(out) > limit:
                    raise too_large(limit)
                pending = d.unconsumed_tail
                if d.eof or (not pending and not chunk):
                    break
            if not d.eof:
                raise InvalidRequest(f"truncated {enc} request body")
            data = d.unused_data
    except zlib.error as e:
        raise InvalidRequest(f"request body is not valid {enc}: {e}") from None
    return bytes(out)


def parse_json(data: bytes, *, empty: Any = None) -> Any:
    """The JSON value in ``data``; an empty body is ``empty`` (400 if ``empty`` is None)."""
    if not data.strip():
        if empty is None:
            raise InvalidRequest("request body is empty; expected a JSON object")
        return empty
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise InvalidRequest(f"request body is not valid JSON: {e}") from None


def parse_json_object(data: bytes, *, what: str = "request body") -> dict[str, Any]:
    """A JSON object (an empty body is ``{}``); anything else is a 400."""
    value = parse_json(data, empty={})
    if not isinstance(value, dict):
        raise InvalidRequest(f"{what} must be a JSON object, got {_json_type(value)}")
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


__all__ = ["BodyDecoder", "decode_content", "parse_json", "parse_json_object", "too_large"]
