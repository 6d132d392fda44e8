"""Request bodies: size-capped reading, ``Content-Encoding`` decoding, JSON parsing.

The wire size of a body is capped by the middleware as it streams in (``max_body_bytes``, 413 before
anything past the cap is buffered). A compressed body is decoded as it arrives (``BodyDecoder``),
chunk by chunk, and capped again on its decoded size, so a small gzip bomb never expands past the
cap in memory and stops as soon as it crosses it.
JSON is parsed with orjson; anything that is not a JSON object where one is expected is a 400.
A write body is first given to ``parse_write_body``, which decodes the ``vector`` number arrays of
its upserts straight into float64 (simdjson) instead of one Python float per element, and hands
every body it is not sure about to orjson, so what a write accepts and refuses does not change.
"""

from __future__ import annotations

import functools
import zlib
from typing import Any

import numpy as np
import orjson
import simdjson

from lagoon.errors import InvalidRequest, PayloadTooLarge
from lagoon.values import DecodedVector

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


def parse_write_body(data: bytes) -> dict[str, Any]:
    """A write body (``parse_json_object``), the ``vector`` number arrays of ``upsert_rows`` and
    ``upsert_columns`` decoded to float64 as ``DecodedVector`` (``lagoon.values``): 12,800 JSON
    numbers of a 100-row 128-d write are not built, checked, packed and freed one Python float
    at a time. Any body the decoder is not sure to read exactly as orjson does goes to
    ``parse_json_object`` as it is (the refusals, their messages, every value stay orjson's)."""
    decoded = _decode_vectors(data) if _number_vectors(data) else None
    return decoded if decoded is not None else parse_json_object(data)


_WHITESPACE = b" \t\r\n"
_NUMBER_START = b"-0123456789"


def _number_vectors(data: bytes) -> bool:
    """Whether the body's first ``"vector"`` holds JSON numbers (an array of numbers, or of
    arrays): only then is the decoder worth its walk over every row in Python; orjson builds a
    body of base64 vectors, or without vectors, faster. A guess: a wrong one costs time only."""
    at = data.find(b'"vector"')
    if at < 0:
        return False
    rest = data[at + 8 : at + 72].lstrip(_WHITESPACE)
    if not rest.startswith(b":"):
        return False
    rest = rest[1:].lstrip(_WHITESPACE)
    if not rest.startswith(b"["):
        return False
    rest = rest[1:].lstrip(_WHITESPACE)
    return rest[:1] == b"[" or (len(rest) > 0 and rest[0] in _NUMBER_START)


_BOM = b"\xef\xbb\xbf"
_OPEN_BRACKET = ord("[")


class _NotSure(Exception):
    """The fast decoder leaves this body to orjson."""


def _decode_vectors(data: bytes) -> dict[str, Any] | None:
    """The body as orjson reads it, with ``vector`` arrays as ``DecodedVector``; None when it
    may not be that (then orjson decides).

    simdjson validates JSON (UTF-8 included) as strictly as orjson, and both round numbers
    correctly to float64 and keep the last of duplicate keys in the objects they build. What
    differs is checked here: a UTF-8 byte order mark (simdjson skips it, orjson refuses it),
    duplicate keys in the objects this walks key by key (a lookup finds the first), and nesting
    inside a vector (``as_buffer`` flattens it): every ``[`` of the body must open an array this
    walk has seen, so a vector that held another array (or a ``[`` inside a string) sends the
    body to orjson. simdjson refuses what orjson rounds: integers beyond 64 bits, deeper
    nesting; those go to orjson too."""
    if not data or data.startswith(_BOM):
        return None
    try:
        doc = simdjson.Parser().parse(data)
        if not isinstance(doc, simdjson.Object):
            return None
        walk = _Walk(_Text(data))
        body = walk.top(doc)
    except (ValueError, TypeError, KeyError, RuntimeError, _NotSure):  # invalid or unusual: orjson decides
        return None
    if walk.arrays != int(np.count_nonzero(np.frombuffer(data, dtype=np.uint8) == _OPEN_BRACKET)):
        return None
    return body


_Value = simdjson.Object | simdjson.Array | str | int | float | bool | None
_OBJECT, _ARRAY = simdjson.Object, simdjson.Array


class _Text:
    """The body's text, for the rare ``DecodedVector.as_list``: orjson parses it then (once, for
    every vector of the body). A ``DecodedVector`` must not keep simdjson's array: that holds the
    parser's whole document (about 3.5 times the body: a 52 MB body of 128-d rows held 413 MB
    while its write was in flight, orjson's lists 187 MB), where the text is once the body."""

    __slots__ = ("_body", "data")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self._body: Any = None

    def at(self, path: tuple[str | int, ...]) -> list[Any]:
        if self._body is None:
            self._body = orjson.loads(self.data)
        value = self._body
        for step in path:
            value = value[step]
        return list(value)


class _Walk:
    """One decoding: the Python body, and how many arrays it held (``arrays``)."""

    def __init__(self, text: _Text) -> None:
        self.arrays = 0
        self.text = text

    def top(self, doc: simdjson.Object) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in doc:
            value = doc[key]
            if key == "upsert_rows" and isinstance(value, simdjson.Array):
                self.arrays += 1
                out[key] = self.rows(value)
            elif key == "upsert_columns" and isinstance(value, simdjson.Object):
                out[key] = self.columns(value)
            else:
                out[key] = self.plain(value)
        return _unique(out, doc)

    def rows(self, rows: simdjson.Array) -> list[Any]:
        """The ``upsert_rows`` array, each document's ``vector`` numbers as a ``DecodedVector``.
        One loop over the documents (no call per document or value: 100 rows of 4 attributes
        cost 0.25 ms in calls before), and the vectors' float64 buffers are joined into one
        matrix whose rows the ``DecodedVector`` values are (``coerce_vectors`` then converts the
        matrix as it is instead of stacking the rows again)."""
        out: list[Any] = []
        vectors: list[tuple[dict[str, Any], int, Any]] = []  # (document, its index, buffer)
        for at, row in enumerate(rows):
            if type(row) is not _OBJECT:
                out.append(self.plain(row))
                continue
            built: dict[str, Any] = {}
            for key in row:
                value: Any = row[key]  # a simdjson Array when kind is _ARRAY
                kind = type(value)
                if kind is _ARRAY and key == "vector":
                    buffer = _flat_numbers(value)
                    if buffer is None:
                        built[key] = self.plain(value)
                        continue
                    self.arrays += 1
                    vectors.append((built, at, buffer))
                    built[key] = None  # the DecodedVector, once every buffer is read
                elif kind is _OBJECT or kind is _ARRAY:
                    built[key] = self.plain(value)
                else:
                    built[key] = value
            out.append(_unique(built, row))
        self._set_vectors(vectors)
        return out

    def _set_vectors(self, vectors: list[tuple[dict[str, Any], int, Any]]) -> None:
        if not vectors:
            return
        sizes = {memoryview(buffer).nbytes for _, _, buffer in vectors}
        if len(sizes) == 1:
            matrix = np.frombuffer(b"".join(buffer for _, _, buffer in vectors), dtype=np.float64)
            matrix = matrix.reshape(len(vectors), -1)
            for j, (doc, at, _) in enumerate(vectors):
                path = ("upsert_rows", at, "vector")
                doc["vector"] = DecodedVector(matrix[j], functools.partial(self.text.at, path), matrix, j)
            return
        for doc, at, buffer in vectors:
            path = ("upsert_rows", at, "vector")
            doc["vector"] = DecodedVector(
                np.frombuffer(buffer, dtype=np.float64), functools.partial(self.text.at, path)
            )

    def columns(self, cols: simdjson.Object) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in cols:
            value = cols[key]
            if key == "vector" and isinstance(value, simdjson.Array):
                self.arrays += 1
                joined = self.vector_column(value)
                if joined is None:
                    joined = [self.vector(v, ("upsert_columns", key, i)) for i, v in enumerate(value)]
                out[key] = joined
            else:
                out[key] = self.plain(value)
        return _unique(out, cols)

    def vector_column(self, column: simdjson.Array) -> list[DecodedVector] | None:
        """The ``upsert_columns`` vector column as the rows of one n x dims float64 matrix read
        by one ``as_buffer``, when every entry is an array of one length and the column holds
        only numbers (else None: the caller decodes it entry by entry). ``as_buffer`` flattens
        nested arrays: an entry holding one adds a ``[`` this walk does not count, so the body
        then goes to orjson (``_decode_vectors``)."""
        n = len(column)
        if n == 0:
            return None
        try:
            buffer = column.as_buffer(of_type="d")  # TypeError on a bool, null, string or object
            sizes = {len(entry) for entry in column}  # type: ignore[arg-type]  # TypeError on a number: not an array
        except TypeError:
            return None
        dims = sizes.pop()
        if sizes or not dims or memoryview(buffer).nbytes != 8 * n * dims:
            return None
        self.arrays += n
        matrix = np.frombuffer(buffer, dtype=np.float64).reshape(n, dims)
        at = self.text.at
        return [
            DecodedVector(matrix[i], functools.partial(at, ("upsert_columns", "vector", i)), matrix, i)
            for i in range(n)
        ]

    def vector(self, value: _Value, path: tuple[str | int, ...]) -> Any:
        """A flat array of numbers as a ``DecodedVector``; anything else as orjson builds it."""
        if not isinstance(value, simdjson.Array):
            return self.plain(value)
        buffer = _flat_numbers(value)
        if buffer is None:
            return self.plain(value)
        self.arrays += 1
        return DecodedVector(np.frombuffer(buffer, dtype=np.float64), functools.partial(self.text.at, path))

    def plain(self, value: _Value) -> Any:
        """``value`` as orjson builds it (its arrays counted)."""
        if isinstance(value, simdjson.Object):
            built: Any = value.as_dict()
        elif isinstance(value, simdjson.Array):
            built = value.as_list()
        else:
            return value
        self.arrays += _arrays_in(built)
        return built


def _flat_numbers(value: simdjson.Array) -> Any | None:
    """The float64 buffer of ``value`` when it is a flat array of numbers, else None (a bool,
    null, string or object in it; or a nested array, which ``as_buffer`` flattens)."""
    try:
        buffer = value.as_buffer(of_type="d")  # TypeError on a bool, null, string or object
    except TypeError:
        return None
    return buffer if memoryview(buffer).nbytes == 8 * len(value) else None


def _unique(built: dict[str, Any], source: simdjson.Object) -> dict[str, Any]:
    if len(built) != len(source):  # a duplicate key: the lookup found its first value
        raise _NotSure
    return built


def _arrays_in(value: Any) -> int:
    if isinstance(value, list):
        return 1 + sum(_arrays_in(v) for v in value if isinstance(v, list | dict))
    if isinstance(value, dict):
        return sum(_arrays_in(v) for v in value.values() if isinstance(v, list | dict))
    return 0


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


__all__ = [
    "BodyDecoder",
    "decode_content",
    "parse_json",
    "parse_json_object",
    "parse_write_body",
    "too_large",
]
