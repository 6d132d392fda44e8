"""Namespace catalog objects (docs/formats/catalog.md): golden files open, damage is detected,
unknown fields of the org record survive a rewrite."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lagoon.errors import DataCorruption, IncompatibleFormat
from lagoon.format import catalog
from lagoon.format.envelope import canonical
from lagoon.format.framing import crc32c
from tests.format import golden_data

GOLDEN = Path(__file__).parent / "golden" / "v1"


def test_golden_catalog_v1_opens_and_reencodes() -> None:
    marker_bytes = (GOLDEN / "catalog-marker.json").read_bytes()
    org_bytes = (GOLDEN / "catalog-org.json").read_bytes()
    assert catalog.decode_marker(marker_bytes) == golden_data.catalog_marker()
    assert catalog.decode_org(org_bytes) == golden_data.catalog_org()
    assert catalog.encode_marker(golden_data.catalog_marker()) == marker_bytes
    assert catalog.encode_org(golden_data.catalog_org()) == org_bytes


def test_unknown_org_fields_survive() -> None:
    doc = orjson.loads(catalog.encode_org(catalog.OrgCatalog(count=1, complete=False)))
    doc["catalog"]["future"] = {"x": 1}
    doc["crc32c"] = crc32c(canonical(doc["catalog"]))
    org = catalog.decode_org(orjson.dumps(doc))
    assert dict(org.extra) == {"future": {"x": 1}}
    again = orjson.loads(catalog.encode_org(org))
    assert again["catalog"]["future"] == {"x": 1}


def test_newer_reader_version_is_refused() -> None:
    doc = orjson.loads(catalog.encode_org(catalog.OrgCatalog(count=1, complete=True)))
    doc["min_reader_version"] = 9
    with pytest.raises(IncompatibleFormat, match="Upgrade Lagoon"):
        catalog.decode_org(orjson.dumps(doc))


@given(st.data())
def test_any_changed_byte_is_detected(data: st.DataObject) -> None:
    raw = bytearray(catalog.encode_org(golden_data.catalog_org()))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= data.draw(st.integers(1, 255))
    try:
        decoded = catalog.decode_org(bytes(raw))
    except DataCorruption:
        return
    assert decoded == golden_data.catalog_org()  # only bytes outside the checked body (whitespace)
