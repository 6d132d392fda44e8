"""The checksummed JSON envelope (lagoon/format/envelope.py) on its own: both layouts, the order
of its checks, and that no changed byte of a body gets through; plus the v1 golden operation
record, the one enveloped object the other format tests do not open."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lagoon.errors import DataCorruption, IncompatibleFormat
from lagoon.format import operation
from lagoon.format.envelope import EnvelopeKind, canonical, decode_envelope, encode_envelope
from lagoon.format.framing import crc32c
from tests.format import golden_data

GOLDEN = Path(__file__).parent / "golden" / "v1"
COMPACT = EnvelopeKind("lagoon-test", "thing", "test thing", reader_version=2)
INDENTED = EnvelopeKind("lagoon-test", "thing", "test thing", reader_version=2, indented=True)
BODY = {"b": [1, 2], "a": {"z": None, "y": "text"}}


def _doc(kind: EnvelopeKind = COMPACT, **header: object) -> dict[str, object]:
    doc: dict[str, object] = orjson.loads(encode_envelope(kind, BODY, format_version=1, min_reader_version=1))
    doc.update(header)
    return doc


def test_compact_layout_sorts_every_key_and_checksums_the_canonical_body() -> None:
    raw = encode_envelope(COMPACT, BODY, format_version=2, min_reader_version=1)
    crc = crc32c(b'{"a":{"y":"text","z":null},"b":[1,2]}')
    assert raw == (
        b'{"crc32c":%d,"format_version":2,"magic":"lagoon-test","min_reader_version":1,'
        b'"thing":{"a":{"y":"text","z":null},"b":[1,2]}}' % crc
    )
    got = decode_envelope(COMPACT, raw, "t")
    assert (got.format_version, got.min_reader_version, got.body) == (2, 1, BODY)


def test_indented_layout_keeps_the_written_order_and_the_writer_version() -> None:
    raw = encode_envelope(INDENTED, BODY, format_version=1, min_reader_version=1, min_writer_version=1)
    assert list(orjson.loads(raw)) == [
        "magic",
        "format_version",
        "min_reader_version",
        "min_writer_version",
        "crc32c",
        "thing",
    ]
    assert raw.startswith(b'{\n  "magic": "lagoon-test",\n') and b'"b": [\n      1,' in raw
    assert orjson.loads(raw)["crc32c"] == crc32c(canonical(BODY))
    assert decode_envelope(INDENTED, raw, "t").body == BODY
    assert "min_writer_version" not in orjson.loads(
        encode_envelope(INDENTED, BODY, format_version=1, min_reader_version=1)
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{not json", "t: not valid JSON"),
        (b"[1, 2]", "t: not a Lagoon test thing"),
        (orjson.dumps(_doc(magic="lagoon-other")), "t: not a Lagoon test thing \\(bad magic\\)"),
        (orjson.dumps(_doc(format_version="1")), "t: missing format version"),
        (orjson.dumps({k: v for k, v in _doc().items() if k != "min_reader_version"}), "missing format"),
        (orjson.dumps(_doc(crc32c=1)), "t: checksum mismatch"),
        (orjson.dumps(_doc(thing=[1])), "t: checksum mismatch"),
        (orjson.dumps({**_doc(), "thing": {**BODY, "b": [1, 3]}}), "t: checksum mismatch"),
    ],
)
def test_damage_is_data_corruption_naming_the_object(data: bytes, message: str) -> None:
    with pytest.raises(DataCorruption, match=message) as info:
        decode_envelope(COMPACT, data, "t")
    assert not isinstance(info.value, IncompatibleFormat)


def test_a_newer_min_reader_version_is_refused_with_an_upgrade_hint() -> None:
    decode_envelope(COMPACT, orjson.dumps(_doc(min_reader_version=2)), "t")  # what this reader reads
    expected = (
        "t: written in format version 3, which needs a reader of version 4 or newer; "
        "this Lagoon reads version 2. Upgrade Lagoon."
    )
    with pytest.raises(IncompatibleFormat, match=re.escape(expected)):
        decode_envelope(COMPACT, orjson.dumps(_doc(format_version=3, min_reader_version=4)), "t")


def test_the_checksum_is_checked_before_the_reader_version() -> None:
    with pytest.raises(DataCorruption, match="checksum") as info:
        decode_envelope(COMPACT, orjson.dumps(_doc(min_reader_version=9, crc32c=0)), "t")
    assert not isinstance(info.value, IncompatibleFormat)


@given(st.data())
def test_any_changed_byte_of_an_indented_envelope_is_caught_or_harmless(data: st.DataObject) -> None:
    raw = bytearray(encode_envelope(INDENTED, BODY, format_version=1, min_reader_version=1))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= data.draw(st.integers(1, 255))
    try:
        got = decode_envelope(INDENTED, bytes(raw), "t")
    except DataCorruption:
        return
    assert got.body == BODY  # only whitespace or a header value that still checks out


def test_golden_operation_v1_opens_and_reencodes() -> None:
    raw = (GOLDEN / "operation.json").read_bytes()
    op = operation.decode_operation(raw, "golden")
    assert op == golden_data.operation() and op.succeeded and op.extra == {"future": [1, 2]}
    assert operation.encode_operation(op) == raw
