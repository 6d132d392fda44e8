"""Schema patches (lagoon/format/schema_patch.py): applying the patch of a change gives the schema
after it, whatever changed; a patch no writer makes is damage."""

from __future__ import annotations

from typing import Any

import pytest

from lagoon.errors import DataCorruption
from lagoon.format.schema_patch import apply_patch, entry_fields, make_patch
from lagoon.schema import Schema

BEFORE = Schema.from_storage(
    {
        "id_type": "uint",
        "distance_metric": None,
        "attributes": {f"a{i}": {"type": "int", "filterable": True} for i in range(10)},
    }
)


def changed(**attrs: Any) -> Schema:
    body = BEFORE.to_storage()
    for name, definition in attrs.items():
        if definition is None:
            body["attributes"].pop(name)
        else:
            body["attributes"][name] = definition
    return Schema.from_storage(body)


@pytest.mark.parametrize(
    "after",
    [
        changed(z={"type": "string", "filterable": True}),
        changed(a3={"type": "int", "filterable": False}),
        changed(a4=None, a5=None),
        changed(a0=None, b={"type": "[]string", "filterable": True}, a9={"type": "int", "filterable": False}),
    ],
    ids=["add", "change", "drop", "all-three"],
)
def test_a_patch_applied_to_the_schema_before_gives_the_schema_after(after: Schema) -> None:
    patch = make_patch(BEFORE, after, columns=["a1"])
    assert apply_patch(BEFORE, patch) == after
    assert apply_patch(BEFORE, patch).to_storage() == after.to_storage()  # same order, same bytes
    assert "a1" in patch["attributes"]  # a column of the entry is restated
    assert not {"a2", "a6", "a7", "a8"} & set(patch["attributes"])  # untouched ones are not


def test_the_whole_schema_when_it_is_created_or_the_patch_is_not_smaller() -> None:
    after = changed(z={"type": "int", "filterable": True})
    assert set(entry_fields(BEFORE, after, (), changed=True, fresh=False)) == {"schema_patch"}
    assert entry_fields(BEFORE, after, (), changed=True, fresh=True) == {"schema": after.to_storage()}
    assert set(entry_fields(BEFORE, after, list(after.attributes), changed=True, fresh=False)) == {"schema"}
    assert entry_fields(BEFORE, BEFORE, (), changed=False, fresh=False) == {}


TOP = {"id_type": "uint", "distance_metric": None}


@pytest.mark.parametrize(
    "patch",
    [
        [],
        {**TOP, "attributes": []},
        {**TOP, "drop": "a1"},
        {**TOP, "attributes": {"x": {"type": "complex"}}},
        {**TOP, "attributes": {}, "drop": [1]},
        {"distance_metric": None, "attributes": {}},
        {"id_type": "uint", "attributes": {}},
    ],
    ids=[
        "not-a-map",
        "attributes-list",
        "drop-string",
        "bad-definition",
        "drop-number",
        "no-id-type",
        "no-metric",
    ],
)
def test_a_patch_no_writer_makes_is_data_corruption(patch: Any) -> None:
    with pytest.raises(DataCorruption):
        apply_patch(BEFORE, patch)
