"""WAL and manifest formats: golden files of every released version still open; random,
truncated or flipped bytes raise DataCorruption and never crash or decode to garbage."""

from __future__ import annotations

import struct
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lagoon.errors import DataCorruption, IncompatibleFormat
from lagoon.format import framing, manifest, wal
from lagoon.format.schema_patch import schema_after
from lagoon.schema import Schema
from tests.format import golden_data

GOLDEN = Path(__file__).parent / "golden"


def test_golden_wal_v1_opens() -> None:
    entry = wal.decode_entry((GOLDEN / "v1" / "wal.bin").read_bytes())
    expected = golden_data.wal_entry()
    assert entry.seq == 7 and entry.nonce == bytes(range(16)) and entry.requests == 2
    assert entry.writer == "node-golden" and entry.created_at_ms == 1_764_000_000_000
    assert entry.schema == golden_data.SCHEMA
    assert entry.settings == {"read_only": False}
    assert entry.docs is not None and expected.docs is not None
    assert entry.docs.equals(expected.docs)
    assert entry.docs.column("vector").to_pylist()[0] == pytest.approx([0.1, 0.2, 0.3])


def test_golden_manifest_v1_opens() -> None:
    m = manifest.decode_manifest((GOLDEN / "v1" / "manifest.json").read_bytes())
    assert m == golden_data.manifest()


def test_wal_roundtrip_current_version() -> None:
    e = golden_data.wal_entry()
    d = wal.decode_entry(wal.encode_entry(wal.seal_entry(e)))
    assert d.docs is not None and e.docs is not None and d.docs.equals(e.docs)
    assert (d.seq, d.nonce, d.schema, d.settings, d.truncate) == (e.seq, e.nonce, e.schema, e.settings, False)


def test_manifest_roundtrip_current_version() -> None:
    m = golden_data.manifest()
    assert manifest.decode_manifest(manifest.encode_manifest(m)) == m


def test_newer_min_reader_version_is_refused_clearly() -> None:
    data = bytearray(wal.encode_entry(wal.seal_entry(golden_data.wal_entry())))
    struct.pack_into("<H", data, 6, 9)  # min_reader_version = 9
    body_end = len(data) - 4
    struct.pack_into("<I", data, body_end, framing.crc32c(bytes(data[:body_end])))
    with pytest.raises(IncompatibleFormat, match="Upgrade Lagoon"):
        wal.decode_entry(bytes(data))
    raw = manifest.encode_manifest(golden_data.manifest()).replace(
        b'"min_reader_version": 1', b'"min_reader_version": 5'
    )
    with pytest.raises(IncompatibleFormat):
        manifest.decode_manifest(raw)


def test_manifest_value_change_is_detected() -> None:
    raw = manifest.encode_manifest(golden_data.manifest())
    tampered = raw.replace(b'"indexed_through": 7', b'"indexed_through": 8')
    assert tampered != raw
    with pytest.raises(DataCorruption, match="checksum"):
        manifest.decode_manifest(tampered)


WAL_BYTES = wal.encode_entry(wal.seal_entry(golden_data.wal_entry()))
MANIFEST_BYTES = manifest.encode_manifest(golden_data.manifest())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_raise_data_corruption(data: bytes) -> None:
    with pytest.raises(DataCorruption):
        wal.decode_entry(data)
    with pytest.raises(DataCorruption):
        manifest.decode_manifest(data)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_truncated_objects_raise_data_corruption(data: st.DataObject) -> None:
    for raw, decode in ((WAL_BYTES, wal.decode_entry), (MANIFEST_BYTES, manifest.decode_manifest)):
        cut = data.draw(st.integers(0, len(raw) - 1))
        with pytest.raises(DataCorruption):
            decode(raw[:cut])


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_flipped_byte_in_wal_raises_data_corruption(data: st.DataObject) -> None:
    pos = data.draw(st.integers(0, len(WAL_BYTES) - 1))
    bit = data.draw(st.integers(0, 7))
    raw = bytearray(WAL_BYTES)
    raw[pos] ^= 1 << bit
    with pytest.raises(DataCorruption):
        wal.decode_entry(bytes(raw))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_flipped_byte_in_manifest_never_decodes_to_other_content(data: st.DataObject) -> None:
    pos = data.draw(st.integers(0, len(MANIFEST_BYTES) - 1))
    bit = data.draw(st.integers(0, 6))
    raw = bytearray(MANIFEST_BYTES)
    raw[pos] ^= 1 << bit
    try:
        m = manifest.decode_manifest(bytes(raw))
    except DataCorruption:
        return
    # Only whitespace or key-order-neutral changes may pass; the content must be identical.
    assert m == golden_data.manifest()


def test_golden_manifest_reencodes_byte_for_byte() -> None:
    """Typed records (pending deletions, the parent nonce) write back exactly what they read."""
    raw = (GOLDEN / "v1" / "manifest.json").read_bytes()
    assert manifest.encode_manifest(manifest.decode_manifest(raw)) == raw


def test_unknown_pending_fields_and_the_parent_nonce_survive_a_round_trip() -> None:
    m = golden_data.manifest()
    body = m.to_json()
    body["pending_delete"].append(
        {"prefix": "seg/x/", "removed_at_version": 2, "removed_at": 1, "future": [1]}
    )
    body["stats"]["parent_nonce"] = "ab" * 16
    back = manifest.Manifest.from_json(body)
    assert back.parent_nonce == "ab" * 16 and back.stats == {"rows": 2}
    assert back.pending_delete[-1].segment_id == "x" and back.pending_delete[-1].extra == (("future", [1]),)
    assert back.to_json() == body


def test_golden_branch_manifest_v2_opens_and_reencodes() -> None:
    raw = (GOLDEN / "v2" / "manifest.json").read_bytes()
    m = manifest.decode_manifest(raw)
    assert m == golden_data.branch_manifest()
    assert m.segments[0].owner == "docs" and m.branch is not None
    assert m.branch.wal_owner(8) == "docs" and m.branch.wal_owner(13) is None
    assert manifest.encode_manifest(m) == raw


def test_branch_references_raise_the_format_and_reader_version() -> None:
    plain = orjson.loads(manifest.encode_manifest(golden_data.manifest()))
    branch = orjson.loads(manifest.encode_manifest(golden_data.branch_manifest()))
    assert (plain["format_version"], plain["min_reader_version"]) == (1, 1)
    assert (branch["format_version"], branch["min_reader_version"]) == (2, 2)
    assert "branch" not in plain["manifest"] and "owner" not in plain["manifest"]["segments"][0]


def test_branch_wal_ranges_are_clipped_as_the_branch_indexes() -> None:
    b = manifest.Branch("p", 20, 0, (manifest.WalRange("p", 5, 12), manifest.WalRange("q", 13, 20)))
    assert b.clipped(4) == b
    assert b.clipped(9).wal == (manifest.WalRange("p", 10, 12), manifest.WalRange("q", 13, 20))
    assert b.clipped(12).wal == (manifest.WalRange("q", 13, 20),)
    assert b.clipped(20).wal == () and b.clipped(20).at_version == 20


def test_reference_marker_keys_name_owner_branch_and_stamp() -> None:
    from lagoon.format.keys import NamespaceKeys, parse_ref_marker, ref_marker, refs_prefix

    owner = NamespaceKeys.of("default", "docs")
    key = ref_marker(owner, "docs-b", 1_764_000_000_000, "ab12")
    assert key.startswith(refs_prefix(owner)) and key.startswith("_lagoon/refs/default/docs/")
    assert parse_ref_marker(owner, key) == ("docs-b", 1_764_000_000_000)
    assert parse_ref_marker(owner, "_lagoon/refs/default/docs2/x/1-a") is None
    assert owner.sibling("docs-b").segment_file("s1", "docs.arrow") == "default/docs-b/seg/s1/docs.arrow"
    assert owner.sibling(None) is owner


@pytest.mark.parametrize(
    "text",
    [
        "string",
        "int",
        "uint",
        "float",
        "bool",
        "datetime",
        "uuid",
        "[]string",
        "[]uint",
        "[8]f32",
        "[4]f16",
        "[3]i8",
        "[][2]f32",
        "{}f16",
    ],
)
def test_every_attribute_type_is_read_back_from_its_arrow_type(text: str) -> None:
    from lagoon.schema import AttrType, type_of_arrow

    t = AttrType.parse(text)
    assert type_of_arrow(t.arrow_type()) == t


def test_a_schema_lost_with_an_entry_is_recovered_from_a_later_entry_table() -> None:
    import pyarrow as pa

    from lagoon.schema import AttributeSchema, AttrType, Schema

    docs = pa.table(
        {
            "id": pa.array([1, 2], pa.uint64()),
            wal.OP_COLUMN: pa.array([0, 0], pa.uint8()),
            "t": pa.array(["a", None]),
            "v": pa.array([[1.0, 2.0], None], pa.list_(pa.float32(), 2)),
        }
    )
    entry = wal.WalEntry(seq=3, nonce=b"n", created_at_ms=0, writer="w", docs=docs)
    before = Schema(id_type=None)
    got = wal.recover_schema(before, entry)
    assert got is not None and got.id_type == "uint"
    assert got.attributes == {
        "t": AttributeSchema(AttrType("string")),
        "v": AttributeSchema(AttrType("vector", dims=2, dtype="f32"), filterable=False, ann={}),
    }
    wal.check_against_schema(entry, got)
    assert wal.recover_schema(got, entry) is None  # nothing left to recover
    odd = entry.docs.append_column("x", pa.array([1, 2], pa.int32()))  # no attribute type is int32
    assert (
        wal.recover_schema(before, wal.WalEntry(seq=3, nonce=b"n", created_at_ms=0, writer="w", docs=odd))
        is None
    )


def test_golden_wal_v2_with_a_schema_patch_opens_reencodes_and_applies() -> None:
    raw = (GOLDEN / "v2" / "wal.bin").read_bytes()
    entry = wal.decode_entry(raw)
    expected = golden_data.patched_wal_entry()
    assert entry.schema is None and entry.schema_patch == expected.schema_patch
    assert entry.docs is not None and expected.docs is not None and entry.docs.equals(expected.docs)
    before = Schema.from_storage(golden_data.SCHEMA)
    assert wal.encode_entry(wal.seal_entry(entry, before)) == raw
    after = schema_after(entry.schema, entry.schema_patch, before)
    assert after is not None and sorted(after.attributes) == ["rating", "title", "vector", "year"]
    assert after.attributes["title"] == before.attributes["title"] and after.id_type == "uint"
    wal.check_against_schema(entry, before)


def test_a_schema_patch_raises_the_format_and_reader_version_and_nothing_else_does() -> None:
    head = struct.Struct("<4sHHH")
    plain = head.unpack_from(wal.encode_entry(wal.seal_entry(golden_data.wal_entry())))
    patched = head.unpack_from(
        wal.encode_entry(
            wal.seal_entry(golden_data.patched_wal_entry(), Schema.from_storage(golden_data.SCHEMA))
        )
    )
    assert plain[1:] == (1, 1, 1) and patched[1:] == (2, 2, 1)
    assert (
        wal.encode_entry(wal.seal_entry(golden_data.wal_entry())) == (GOLDEN / "v1" / "wal.bin").read_bytes()
    )
