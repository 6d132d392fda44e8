"""Schema changes in WAL entries as patches, not whole schemas (docs/rfcs/0009-wal-schema-patches.md).

A WAL entry used to carry the whole schema whenever it changed it, so a one-row write that adds
one attribute to a namespace of 1,023 others stored all 1,024 definitions: thousands of times the
request's bytes. An entry of a namespace that already has a schema now carries ``schema_patch``:

    {"id_type": ..., "distance_metric": ..., "attributes": {name: definition}, "drop": [name]}

- the top-level fields (everything but ``attributes``), always, in full: a few bytes;
- ``attributes``: the definition (storage form) of every attribute the entry adds or changes,
  and of every attribute its document table has a column of, so that an entry's columns are
  always described by the entry itself (a damaged earlier entry costs later entries nothing
  they use);
- ``drop``: the attributes the entry removes.

Readers fold entries in seq order from the manifest's schema, so the schema in effect before an
entry is always known where it is applied (``schema_after``). An entry that creates the schema
(the first of a namespace, or after a truncate) carries the whole ``schema`` as before, and so
does any entry whose patch would not be smaller. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from lagoon.errors import DataCorruption
from lagoon.schema import Schema

DROP = "drop"
ATTRIBUTES = "attributes"
TOP_LEVEL = tuple(k for k in Schema().to_storage() if k != ATTRIBUTES)
"""The schema's fields besides ``attributes`` (id type, distance metric): in every patch, in full."""


def make_patch(before: Schema, after: Schema, columns: Iterable[str]) -> dict[str, Any]:
    """The patch that turns ``before`` into ``after``, restating the attributes ``columns``."""
    old, new = before.to_storage(), after.to_storage()
    old_attrs, new_attrs = old[ATTRIBUTES], new[ATTRIBUTES]
    named = {c for c in columns if c in new_attrs}
    changed = {n for n, d in new_attrs.items() if old_attrs.get(n) != d}
    patch: dict[str, Any] = {k: v for k, v in new.items() if k != ATTRIBUTES}
    patch[ATTRIBUTES] = {n: new_attrs[n] for n in sorted(changed | named)}
    dropped = sorted(set(old_attrs) - set(new_attrs))
    if dropped:
        patch[DROP] = dropped
    return patch


def worth_patching(after: Schema, patch: dict[str, Any]) -> bool:
    """Is the patch smaller than the whole schema (else the entry carries the schema)?"""
    return len(patch[ATTRIBUTES]) + len(patch.get(DROP, ())) < len(after.attributes)


def entry_fields(
    before: Schema, after: Schema, columns: Iterable[str], *, changed: bool, fresh: bool
) -> dict[str, Any]:
    """The ``schema`` or ``schema_patch`` field of an entry that turns ``before`` into ``after``
    (none when ``changed`` is false). ``fresh``: the entry creates the schema (the namespace has
    none before it, or the entry truncates), so it carries the whole schema."""
    if not changed:
        return {}
    if not fresh:
        patch = make_patch(before, after, columns)
        if worth_patching(after, patch):
            return {"schema_patch": patch}
    return {"schema": after.to_storage()}


def apply_patch(before: Schema, patch: Any) -> Schema:
    """``before`` with ``patch`` applied; ``DataCorruption`` for a patch no writer makes."""
    if not isinstance(patch, dict):
        raise DataCorruption("schema patch: expected a map")
    attrs, dropped = patch.get(ATTRIBUTES, {}), patch.get(DROP, [])
    if not isinstance(attrs, dict) or not isinstance(dropped, list):
        raise DataCorruption("schema patch: attributes must be a map and drop a list")
    if not all(isinstance(name, str) for name in dropped):
        raise DataCorruption("schema patch: drop must list attribute names")
    missing = [k for k in TOP_LEVEL if k not in patch]
    if missing:  # read as absent, a missing id type would make the namespace vanish
        raise DataCorruption(f"schema patch: {', '.join(missing)} missing")
    merged = {n: d for n, d in before.to_storage()[ATTRIBUTES].items() if n not in set(dropped)}
    merged.update(attrs)
    whole = {k: v for k, v in patch.items() if k not in (ATTRIBUTES, DROP)}
    whole[ATTRIBUTES] = dict(sorted(merged.items()))
    return Schema.from_storage(whole)


def schema_after(
    schema: dict[str, Any] | None, patch: dict[str, Any] | None, before: Schema
) -> Schema | None:
    """The schema in effect after an entry with these ``schema``/``schema_patch`` fields, given
    the one in effect before it; None when the entry does not change it."""
    if schema is not None:
        return Schema.from_storage(schema)
    if patch is not None:
        return apply_patch(before, patch)
    return None


__all__ = ["apply_patch", "entry_fields", "make_patch", "schema_after", "worth_patching"]
