"""The write path: group commit of requests into one WAL entry, acknowledged only once durable.

Protocol (docs/design.md §3), and why each step is safe:
1. Requests for a namespace queue on this node. One commit runs at a time; everything that queued
   meanwhile forms the next group, so an idle namespace adds no latency and a busy one batches.
2. The group is resolved against the node's snapshot at ``head``: conditions, patches and
   by-filter operations become concrete upserts and deletes (the entry holds their net effect).
3. The entry is created at ``wal/{head+1}`` with create-if-absent. Success is the commit point; only
   then are the requests acknowledged. Because the slot was free, nothing was committed between the
   snapshot and the entry, so the resolution in step 2 is exactly what the state at commit implies.
4. ``AlreadyExists`` means another node committed first: learn the new entries and go back to 2.
5. An ambiguous failure (the store may or may not have applied the PUT) is settled by reading the
   slot back: our nonce means committed; another entry means we lost; absent means we must make
   sure our PUT can never land later, so we fill the slot ourselves with an empty fence entry.
   If the fence wins, our entry is definitely not committed and we retry at the next slot.
Nothing else is on the write path; the manifest is advanced later by the indexer.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import numpy as np
import pyarrow as pa

from lagoon.engine.components import Components
from lagoon.engine.errors import translate
from lagoon.engine.nodelock import NodeCommitLocks, Turn
from lagoon.engine.segment_handle import in_use
from lagoon.engine.state import NamespaceState
from lagoon.engine.tail import Snapshot
from lagoon.errors import Conflict, Forbidden, InvalidRequest, LagoonError, NotFound, Unavailable
from lagoon.format import schema_patch
from lagoon.format.wal import OP_COLUMN, OP_DELETE, OP_UPSERT, WalEntry, encode_entry, seal_entry
from lagoon.index.filters.tree import Filter
from lagoon.index.sources.protocol import DocSource
from lagoon.index.sources.table import LiveDocs
from lagoon.query.cost import filter_work, refuse_above
from lagoon.schema import Schema
from lagoon.storage.base import AlreadyExists, ObjectNotFound, PutMode, StorageError
from lagoon.values import Id, column_to_arrow, id_to_json, ids_to_arrow
from lagoon.wire.write import (
    MAX_DELETE_BY_FILTER_ROWS,
    MAX_PATCH_BY_FILTER_ROWS,
    Doc,
    DocBatch,
    ValidatedWrite,
    parse_write,
)

MAX_GROUP_REQUESTS = 256
MAX_GROUP_BYTES = 32 << 20
"""A group stops taking requests once their logical bytes reach this (it takes at least one): a
burst of large writes becomes several entries of bounded size, each acknowledged when its own PUT
lands, instead of one huge entry whose resolve, encode and PUT every request of it waits for."""
MAX_COMMIT_ATTEMPTS = 50
MAX_LOST_BACKOFF_SECS = 0.05
HEAD_SEEN_SECS = 0.25
"""A commit builds on a head seen in the bucket this recently without checking it again (at most
``manifest.poll_interval_ms``): back-to-back commits cost one PUT each; a write after a pause
first HEADs the head (``Committer._confirm_head``)."""
TokenMatcherFactory = Callable[[pa.Table, Schema], Any]


def _token_matcher(table: pa.Table, schema: Schema) -> Any:
    """Token filters (ContainsAllTokens, ...) need text analysis: borrow the query engine's."""
    plain = table.select([c for c in table.column_names if not c.startswith("$ref_new.")])
    return LiveDocs(schema, plain)._match_tokens


class SchemaMoved(LagoonError):
    """A write validated by another serving process against a schema other than the one it
    would be applied under (``schema``, at WAL ``head``): it goes back to be validated again.
    Never reaches a client (engine/routing.py)."""

    status = 503

    def __init__(self, schema: Schema, head: int) -> None:
        super().__init__("the namespace's schema changed; validate the write again", retry_after=0.0)
        self.schema = schema
        self.head = head


@dataclass
class Op:
    """One queued write: a parsed request, or a namespace-level operation. ``body`` is None for a
    write validated in another serving process (it is never parsed again here)."""

    kind: str  # "write" | "truncate" | "settings"
    body: Any = None
    request: ValidatedWrite | None = None
    parsed_against: Schema | None = None
    settings: dict[str, Any] | None = None
    # A precondition checked at commit time against the namespace as the group sees it (its
    # settings, whether it exists); raises to refuse the op. Set by a copy's own writes, which
    # are the only ones a namespace under copy accepts (``copying``).
    expect: Callable[[dict[str, Any], bool], None] | None = None
    future: asyncio.Future[dict[str, Any]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


CommitWatch = Callable[[dict[str, Any]], None]
COMMIT_WATCH: contextvars.ContextVar[CommitWatch | None] = contextvars.ContextVar(
    "lagoon_commit_watch", default=None
)
"""Set by a shell around a mutation (the server's audit log): called with the acknowledgement of
each request the mutation submits once its commit landed — also when that happens after the
caller stopped waiting (deadline, disconnect), so every committed change can be accounted for."""


def _watch_done(watch: CommitWatch) -> Callable[[asyncio.Future[dict[str, Any]]], None]:
    def done(future: asyncio.Future[dict[str, Any]]) -> None:
        if not future.cancelled() and future.exception() is None:
            watch(future.result())

    return done


@dataclass
class _Outcome:
    upserted: list[Id] = field(default_factory=list)
    patched: list[Id] = field(default_factory=list)
    deleted: list[Id] = field(default_factory=list)
    rows_remaining: bool = False
    documents: int | None = None
    """A truncate: the documents the namespace held (None when its data could not be read)."""


def _text_bytes(value: Any) -> int:
    """The bytes a pattern condition scans in one stored value (a string, or a list of them)."""
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, list):
        return sum(_text_bytes(v) for v in value)
    return 0


def copying(settings: dict[str, Any]) -> bool:
    """True while a copy into the namespace is running: its settings hold the copy's marker
    ``{"copy": {"operation": token, "source": name, "running": true}}`` (engine/copy.py)."""
    mark = settings.get("copy")
    return isinstance(mark, dict) and mark.get("running") is True


_BatchRow = tuple[int, int]
"""An overlay document that is row ``[1]`` of the group's upsert batch ``[0]``: its values stay
in the batch's Arrow columns until the entry is built (no Python row is made)."""

_ABSENT = object()


class _Resolver:
    """Applies a group's requests, in order, to an overlay over one snapshot.

    The overlay maps an id to its document after the group so far: None (deleted), a row of one
    of the requests' upsert batches (``_BatchRow``), or a dict (a patched or filter-patched
    document). A request that fails is undone from a journal of the overlay entries it set, so
    a failing request costs what it changed, not a copy of the whole overlay."""

    def __init__(
        self, snap: Snapshot, token_matcher_factory: TokenMatcherFactory = _token_matcher, max_work: int = 0
    ) -> None:
        self.snap = snap
        self.max_work = max_work  # limits.max_query_work, for the patterns of filters and conditions
        self.schema = snap.schema
        self.settings = dict(snap.settings)
        self.overlay: dict[Id, Doc | _BatchRow | None] = {}
        self.batches: list[tuple[DocBatch, Schema]] = []  # each upsert batch and its request's schema
        self.truncate = False
        self.token_matcher_factory = token_matcher_factory
        self._journal: list[tuple[Id, Any]] = []
        self._loose: dict[Id, None] = {}  # ids ever set to a dict or None (in order; not batch rows)

    def _set(self, ident: Id, doc: Doc | None) -> None:
        self._journal.append((ident, self.overlay.get(ident, _ABSENT)))
        self.overlay[ident] = doc
        self._loose[ident] = None

    def _set_rows(self, number: int, rows: list[int] | range) -> None:
        """Set rows ``rows`` of upsert batch ``number`` (in bulk: no Python call per row)."""
        batch, _ = self.batches[number]
        ids = batch.ids if isinstance(rows, range) else [batch.ids[r] for r in rows]
        self._journal.extend(zip(ids, map(self.overlay.get, ids, repeat(_ABSENT)), strict=True))
        self.overlay.update(zip(ids, zip(repeat(number), rows), strict=False))

    def _undo(self, mark: int) -> None:
        """Restore the overlay as it was when the journal had ``mark`` entries."""
        while len(self._journal) > mark:
            ident, before = self._journal.pop()
            if before is _ABSENT:
                del self.overlay[ident]
            else:
                self.overlay[ident] = before

    def _doc(self, doc: Doc | _BatchRow | None) -> Doc | None:
        if isinstance(doc, tuple):
            batch, parsed = self.batches[doc[0]]
            return batch.row(doc[1], parsed)
        return doc

    def current(self, ids: list[Id], attributes: list[str] | None = None) -> dict[Id, Doc]:
        """The live documents of ``ids`` (with ``attributes``; None: all, ``[]``: existence only)."""
        out: dict[Id, Doc] = {}
        missing = []
        for i in ids:
            if i in self.overlay:
                d = self._doc(self.overlay[i])
                if d is not None:
                    out[i] = d
            else:
                missing.append(i)
        if missing and not self.truncate:
            if attributes is not None:
                # an attribute this request's group adds is unset in every stored document
                attributes = [a for a in attributes if a in self.snap.schema.attributes]
            out.update(self.snap.lookup(missing, attributes))
        return out

    def exists(self) -> bool:
        return self.schema.id_type is not None

    def _documents(self) -> int | None:
        """The documents of the snapshot (writes of the same group before this one not counted);
        None when its data cannot be read: a damaged namespace can still be deleted."""
        if not self.exists():
            return 0
        try:
            return int(self.snap.source().num_docs)
        except LagoonError:
            return None

    # -- evaluation helpers ----------------------------------------------------------------------

    def _table(
        self, docs: list[tuple[Id, Doc]], names: list[str], extra: dict[str, list[Any]] | None = None
    ) -> pa.Table:
        """The columns ``names`` (attributes a filter reads) of ``docs``, for evaluating it."""
        schema = self.schema
        cols: dict[str, pa.Array] = {"id": ids_to_arrow([i for i, _ in docs], schema.id_type or "uint")}
        for name in names:
            cols[name] = column_to_arrow([d.get(name) for _, d in docs], schema.attributes[name].type)
        for name, values in (extra or {}).items():
            attr_name = name.removeprefix("$ref_new.")
            ref_attr = schema.attributes.get(attr_name)
            if attr_name == "id":
                cols[name] = ids_to_arrow(values, schema.id_type or "uint")
            elif ref_attr is not None:
                cols[name] = column_to_arrow(values, ref_attr.type)
        return pa.table(cols)

    def _eval(self, flt: Filter, table: pa.Table) -> np.ndarray:
        return np.asarray(
            flt.evaluate(table, token_matcher=self.token_matcher_factory(table, self.schema)), dtype=bool
        )

    def read_attributes(self, flt: Filter) -> list[str]:
        """The stored attributes ``flt`` reads (what a condition needs of the current documents)."""
        return sorted(a for a in flt.attributes() if a in self.schema.attributes)

    def _priced(self, flt: Filter, what: str, docs: Sequence[Doc], src: DocSource | None = None) -> None:
        """Refuse (400, ``query/cost.py``) a filter whose patterns would cost more than
        ``max_work`` over ``docs`` and, for a by-filter write, the snapshot's documents ``src``."""

        def size(attr: str) -> int:
            stored = src.logical_bytes([attr]) if src is not None else 0
            return stored + sum(_text_bytes(d.get(attr)) for d in docs)

        refuse_above(filter_work(flt, size), self.max_work, what)

    def matching_ids(self, flt: Filter, limit: int, what: str) -> list[Id]:
        """Ids of the current documents (snapshot + overlay) that match ``flt``: all of them, or
        ``limit + 1`` when more match (the caller's cap). The snapshot's part reads the filter's
        columns (or indexes) and the ids of at most that many matches, whatever the namespace holds."""
        out: list[Id] = []
        live_overlay = [(i, d) for i, v in self.overlay.items() if (d := self._doc(v)) is not None]
        src = None if self.truncate else self.snap.source()
        self._priced(flt, what, [d for _, d in live_overlay], src)
        if src is not None and src.num_docs:
            # rows the overlay shadows are dropped below: take enough to still see limit + 1
            positions = np.flatnonzero(src.filter_mask(flt))[: limit + 1 + len(self.overlay)]
            if positions.shape[0]:
                ids = src.fetch_rows(positions, ["id"]).column("id").to_pylist()
                out += [i for i in ids if i not in self.overlay]
        if live_overlay:
            mask = self._eval(flt, self._table(live_overlay, self.read_attributes(flt)))
            out += [i for (i, _), m in zip(live_overlay, mask, strict=True) if m]
        return out[: limit + 1]

    def condition_holds(
        self, cond: Filter, targets: Sequence[tuple[Id, Doc, Doc | None]], what: str
    ) -> np.ndarray:
        """Evaluate a condition per target (id, existing doc, new doc or None for deletes)."""
        self._priced(cond, what, [old for _, old, _ in targets])
        refs = cond.ref_new_attributes()
        extra = {
            f"$ref_new.{a}": [
                (i if new is not None else None) if a == "id" else (new or {}).get(a) for i, _, new in targets
            ]
            for a in refs
        }
        table = self._table([(i, old) for i, old, _ in targets], self.read_attributes(cond), extra)
        return self._eval(cond, table)

    # -- applying requests ------------------------------------------------------------------------

    def apply(self, op: Op) -> _Outcome:
        if op.expect is not None:
            op.expect(self.settings, self.exists())
        elif op.kind != "truncate" and copying(self.settings):
            raise Conflict(
                f"a copy into this namespace is running (operation {self.settings['copy'].get('operation')}); "
                "the namespace accepts writes once it has finished (poll the operation, or delete the namespace "
                "to abandon the copy)"
            )
        if op.kind == "truncate":
            documents = self._documents()
            self.overlay.clear()
            self.truncate = True
            self.schema = Schema()
            self.settings = {}
            return _Outcome(documents=documents)
        if op.kind == "settings":
            if not self.exists():
                raise NotFound("namespace not found")
            self.settings.update(op.settings or {})
            return _Outcome()
        if self.settings.get("read_only"):
            raise Forbidden("namespace is read-only; PATCH its metadata with read_only: false to write")
        req = op.request
        if req is None or op.parsed_against != self.schema:
            if op.body is None:  # a write another serving process validated (engine/routing.py)
                raise SchemaMoved(self.schema, self.snap.head)
            req = parse_write(op.body, self.schema)
        if not self.exists() and (req.create_namespace is False or not (req.upserts or req.create_namespace)):
            # Only a write that carries documents (or create_namespace: true) creates a namespace.
            raise NotFound("namespace not found")
        mark, saved_schema, saved_batches = len(self._journal), self.schema, len(self.batches)
        try:
            out = self._apply_write(req)
        except LagoonError:
            self._undo(mark)
            self.schema = saved_schema
            del self.batches[saved_batches:]
            raise
        if op.settings:  # a copy's own writes carry its marker (``copying``)
            self.settings.update(op.settings)
        if req.encryption is not None:  # persisted with the namespace's settings (WAL entry)
            if req.encryption.get("mode") == "customer-managed":
                self.settings["encryption"] = dict(req.encryption)
            else:
                self.settings.pop("encryption", None)
        return out

    def _apply_write(self, req: ValidatedWrite) -> _Outcome:
        out = _Outcome()
        self.schema = req.schema
        if req.delete_by_filter is not None:
            ids = self.matching_ids(req.delete_by_filter, MAX_DELETE_BY_FILTER_ROWS, "delete_by_filter")
            if len(ids) > MAX_DELETE_BY_FILTER_ROWS:
                if not req.delete_by_filter_allow_partial:
                    raise InvalidRequest(
                        f"delete_by_filter matches {len(ids)} rows, more than {MAX_DELETE_BY_FILTER_ROWS}; "
                        "set delete_by_filter_allow_partial to delete in batches"
                    )
                ids, out.rows_remaining = ids[:MAX_DELETE_BY_FILTER_ROWS], True
            for i in ids:
                self._set(i, None)
            out.deleted += ids
        if req.patch_by_filter is not None:
            flt, patch = req.patch_by_filter
            ids = self.matching_ids(flt, MAX_PATCH_BY_FILTER_ROWS, "patch_by_filter")
            if len(ids) > MAX_PATCH_BY_FILTER_ROWS:
                if not req.patch_by_filter_allow_partial:
                    raise InvalidRequest(
                        f"patch_by_filter matches {len(ids)} rows, more than {MAX_PATCH_BY_FILTER_ROWS}; "
                        "set patch_by_filter_allow_partial to patch in batches"
                    )
                ids, out.rows_remaining = ids[:MAX_PATCH_BY_FILTER_ROWS], True
            current = self.current(ids)
            for i in ids:
                self._set(i, {**current[i], **patch})
            out.patched += ids
        if req.upserts:
            out.upserted += self._upsert(req)
        if req.patches:
            targets = self._patch_targets(req.patches, req.patch_condition)
            for i, old, d in targets:
                merged = {**old, **d}
                self._set(i, {k: v for k, v in merged.items() if v is not None})
            out.patched += [t[0] for t in targets]
        if req.deletes:
            # existence, and the columns a condition reads (no vector data on the event loop)
            cond = req.delete_condition
            existing = self.current(req.deletes, self.read_attributes(cond) if cond is not None else [])
            targets_d = [(i, existing[i], None) for i in req.deletes if i in existing]
            if req.delete_condition is not None and targets_d:
                ok = self.condition_holds(req.delete_condition, targets_d, "delete_condition")
                targets_d = [t for t, good in zip(targets_d, ok, strict=True) if good]
            for i, _, _ in targets_d:
                self._set(i, None)
            out.deleted += [t[0] for t in targets_d]
        return out

    def _patch_targets(self, patches: list[tuple[Id, Doc]], cond: Filter | None) -> list[tuple[Id, Doc, Doc]]:
        """(id, current document, patch) of the patches to apply: those whose document exists and,
        with a condition, passes it. The condition is evaluated on its own columns; only the
        documents that pass are read whole (the entry holds the patched documents whole)."""
        wanted = patches
        if cond is not None:
            existing = self.current([i for i, _ in patches], self.read_attributes(cond))
            targets = [(i, existing[i], d) for i, d in patches if i in existing]
            ok = self.condition_holds(cond, targets, "patch_condition") if targets else np.zeros(0, bool)
            wanted = [(i, d) for (i, _, d), good in zip(targets, ok, strict=True) if good]
        whole = self.current([i for i, _ in wanted])
        return [(i, whole[i], d) for i, d in wanted if i in whole]

    def _upsert(self, req: ValidatedWrite) -> list[Id]:
        """Set the request's upserted documents (those its condition lets through) as rows of
        its batch; returns their ids."""
        batch = req.upserts
        keep: list[int] | range = range(len(batch))
        if req.upsert_condition is not None:
            # an upsert replaces: only the condition's columns are read
            existing = self.current(batch.ids, self.read_attributes(req.upsert_condition))
            rows = [(r, i) for r, i in enumerate(batch.ids) if i in existing]
            targets = [(i, existing[i], batch.row(r, req.schema)) for r, i in rows]
            ok = (
                self.condition_holds(req.upsert_condition, targets, "upsert_condition")
                if targets
                else np.zeros(0, bool)
            )
            skip = {r for (r, _), good in zip(rows, ok, strict=True) if not good}
            keep = [r for r in range(len(batch)) if r not in skip]
        self.batches.append((batch, req.schema))
        self._set_rows(len(self.batches) - 1, keep)
        return batch.ids if isinstance(keep, range) else [batch.ids[r] for r in keep]

    # -- the entry ---------------------------------------------------------------------------------

    def docs_table(self) -> pa.Table | None:
        """The entry's document table: ``id``, ``$op`` and, sorted by name, every attribute some
        document of the group sets. Rows of upsert batches are taken column by column from the
        batches' Arrow arrays; only patched documents are turned into columns from dicts."""
        if not self.overlay:
            return None
        parts = [self._batch_part(number) for number in range(len(self.batches))]
        others: list[tuple[Id, Doc | None]] = []
        for i in self._loose:
            d = self.overlay.get(i, _ABSENT)
            if d is None or isinstance(d, dict):
                others.append((i, d))
        if others:
            parts.append(self._rows_part(others))
        parts = [p for p in parts if p.num_rows]
        if not parts:
            return None
        table = parts[0] if len(parts) == 1 else pa.concat_tables(parts, promote_options="default")
        names = sorted(
            c
            for c in table.column_names
            if c not in ("id", OP_COLUMN) and table.column(c).null_count < table.num_rows
        )
        return table.select(["id", OP_COLUMN, *names]).combine_chunks()

    def _batch_part(self, number: int) -> pa.Table:
        """The rows of upsert batch ``number`` that are still the group's last word on their id,
        as upserts, with the columns of attributes the schema still has, of the type it gives
        them."""
        batch, _ = self.batches[number]
        current = list(map(self.overlay.get, batch.ids))
        every = current == list(zip(repeat(number), range(len(batch)), strict=False))
        rows = None if every else [r for r, d in enumerate(current) if d == (number, r)]
        ids = batch.ids if rows is None else [batch.ids[r] for r in rows]
        take = None if rows is None else pa.array(rows, type=pa.int64())
        cols: dict[str, pa.Array] = {
            "id": ids_to_arrow(ids, self.schema.id_type or "uint"),
            OP_COLUMN: pa.array(np.full(len(ids), OP_UPSERT, dtype=np.uint8)),
        }
        for name, column in batch.columns.items():
            attr = self.schema.attributes.get(name)
            if attr is None or column.type != attr.type.arrow_type():
                continue  # the attribute was dropped later in the group
            cols[name] = column if take is None else column.take(take)
        return pa.table(cols)

    def _rows_part(self, items: list[tuple[Id, Doc | None]]) -> pa.Table:
        """Documents given as dicts (None: a delete) as columns."""
        schema = self.schema
        n = len(items)
        ops = [OP_DELETE if d is None else OP_UPSERT for _, d in items]
        # One pass over the values actually present: a column that few documents set costs what
        # its values cost here, and is scattered into its rows by Arrow (no per-cell Python work).
        present: dict[str, tuple[list[int], list[Any]]] = {}
        for row, (_, d) in enumerate(items):
            if d is None:
                continue
            for name, value in d.items():
                if value is None:
                    continue
                col = present.get(name)
                if col is None:
                    col = present[name] = ([], [])
                col[0].append(row)
                col[1].append(value)
        cols: dict[str, pa.Array] = {
            "id": ids_to_arrow([i for i, _ in items], schema.id_type or "uint"),
            OP_COLUMN: pa.array(ops, type=pa.uint8()),
        }
        for name in sorted(present):
            attr = schema.attributes.get(name)
            if attr is None:
                continue  # the attribute was dropped later in the group
            rows, values = present[name]
            cols[name] = _scatter(column_to_arrow(values, attr.type), rows, n)
        return pa.table(cols)


def _scatter(values: pa.Array, rows: list[int], n: int) -> pa.Array:
    """An array of ``n`` slots holding ``values[k]`` at ``rows[k]`` and null elsewhere."""
    if len(rows) == n:
        return values
    index = np.full(n, -1, dtype=np.int64)
    index[np.asarray(rows, dtype=np.int64)] = np.arange(len(rows), dtype=np.int64)
    return values.take(pa.array(index, mask=index < 0))


INLINE_GROUP_ROWS = 4096
"""A group of plain upserts of at most this many rows is resolved and encoded on the event loop
(``_plain_upserts``): it reads nothing of the snapshot and costs about a millisecond per 1,000
rows, all of it under the interpreter lock, so the worker thread's hop (~80 us of CPU and two
wake-ups per group) bought nothing."""
INLINE_GROUP_BYTES = 1 << 20
"""... and of at most this many logical bytes: encoding costs per byte too (Arrow IPC, the
checksum), and 4,096 rows of large attributes would hold the loop for tens of milliseconds."""


def _plain_upserts(group: list[Op], schema: Schema) -> bool:
    """Whether ``group`` is only upserts validated against ``schema`` that change nothing else
    (no condition, patch, delete, schema or settings change) and hold at most
    ``INLINE_GROUP_ROWS`` rows and ``INLINE_GROUP_BYTES`` logical bytes: resolving it reads no
    segment and runs no filter."""
    rows = nbytes = 0
    for op in group:
        req = op.request
        if (
            op.kind != "write"
            or req is None
            or op.parsed_against is not schema
            or op.expect is not None
            or op.settings
            or req.schema_changed
            or req.patches
            or req.deletes
            or req.delete_by_filter is not None
            or req.patch_by_filter is not None
            or req.upsert_condition is not None
            or req.encryption is not None
        ):
            return False
        rows += len(req.upserts)
        nbytes += req.logical_bytes
    return rows <= INLINE_GROUP_ROWS and nbytes <= INLINE_GROUP_BYTES


@dataclass
class _Prepared:
    """A group resolved against a snapshot: the requests that apply (with their outcomes), those
    refused, and the entry holding their net effect with its bytes (None: nothing to write)."""

    live: list[tuple[Op, _Outcome]] = field(default_factory=list)
    refused: list[tuple[Op, LagoonError]] = field(default_factory=list)
    entry: WalEntry | None = None
    data: bytes | None = None


class Committer:
    """Group-commits one namespace's writes on this node (one instance per namespace)."""

    def __init__(
        self,
        state: NamespaceState,
        components: Components,
        *,
        commit_window_ms: float = 0.0,
        token_matcher_factory: TokenMatcherFactory = _token_matcher,
        on_commit: Callable[[WalEntry, int], None] | None = None,
        turns: NodeCommitLocks | None = None,
    ) -> None:
        self.state = state
        self.turns = turns
        self.components = components
        self.commit_window = commit_window_ms / 1000
        self.token_matcher_factory = token_matcher_factory
        self.on_commit = on_commit
        self._queue: list[Op] = []
        self._task: asyncio.Task[None] | None = None
        self.commits = 0
        self.attempts = 0
        # The head this committer last saw in the bucket (its own entry once created, or what a
        # refresh read) and when (monotonic): building on it soon after needs no check.
        self._seen_head: tuple[int, float] | None = None

    async def submit(self, op: Op) -> dict[str, Any]:
        watch = COMMIT_WATCH.get()
        if watch is not None:
            op.future.add_done_callback(_watch_done(watch))
        self._queue.append(op)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        # The commit continues even if the caller goes away: shield the shared work. A caller that
        # is cancelled before its request joined a group withdraws it: it can then never commit.
        try:
            return await asyncio.shield(op.future)
        except asyncio.CancelledError:
            if op in self._queue:
                self._queue.remove(op)
                op.future.cancel()
            raise

    @property
    def idle(self) -> bool:
        """No write queued or committing (the handle may be dropped from the node's LRU)."""
        return not self._queue and (self._task is None or self._task.done())

    async def drain(self) -> None:
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while self._queue:
            if self.commit_window:
                await asyncio.sleep(self.commit_window)
            async with self._turn() as turn:
                if not self._queue:
                    continue
                group = self._next_group()
                await self._commit_group(group, turn.previous_head if turn is not None else -1)
                if turn is not None:
                    turn.head = self.state.head

    def _next_group(self) -> list[Op]:
        """The oldest queued requests, up to ``MAX_GROUP_REQUESTS`` and ``MAX_GROUP_BYTES``."""
        size, taken = 0, 0
        for op in self._queue[:MAX_GROUP_REQUESTS]:
            if taken and size >= MAX_GROUP_BYTES:
                break
            size += op.request.logical_bytes if op.request is not None else 0
            taken += 1
        group, self._queue = self._queue[:taken], self._queue[taken:]
        return group

    def _turn(self) -> contextlib.AbstractAsyncContextManager[Turn | None]:
        """The node's other serving processes commit this namespace in turn (nodelock.py)."""
        if self.turns is None:
            return contextlib.nullcontext()
        return self.turns.turn(self.state.keys.root)

    async def _commit_group(self, group: list[Op], known_head: int = -1) -> None:
        try:
            await self._commit(group, known_head)
        except BaseException as e:  # the node "crashed" (failpoint) or a bug: fail the group
            err = e if isinstance(e, LagoonError) else Unavailable("commit failed; retry", detail=repr(e))
            for op in group:
                if not op.future.done():
                    op.future.set_exception(err)
            if not isinstance(e, Exception):
                raise

    async def _commit(self, group: list[Op], known_head: int) -> None:
        """Commit ``group`` as one entry (module docstring), retrying at the next slot after a lost
        race. ``known_head``: a head another process of this node has just committed (its turn's
        hint): its entries are read first, so the group is not resolved on a head known stale."""
        state = self.state
        await state.ensure_loaded()
        if known_head > state.head:
            await state.catch_up(known_head)
            self._saw_head()
        for attempt in range(MAX_COMMIT_ATTEMPTS):
            self.attempts += 1
            await self._current_view(state)
            snap = state.current()
            prepared = await self._entry_for(snap, group)
            for op, err in prepared.refused:
                op.future.set_exception(err)
            if not prepared.live:
                return
            if prepared.entry is None or prepared.data is None:
                if await self._unchanged(snap):
                    self._settle(prepared, snap.head)
                    return
                continue
            if await self._created(prepared.entry, prepared.data, attempt):
                self._settle(prepared, prepared.entry.seq)
                return
        err = Conflict(
            f"could not commit to namespace '{state.keys.namespace}' after {MAX_COMMIT_ATTEMPTS} attempts"
        )
        for op in group:
            if not op.future.done():
                op.future.set_exception(err)

    async def _current_view(self, state: NamespaceState) -> None:
        """Before resolving: a view at most a poll interval old, whose head the bucket still holds,
        not ending in a young branch creation's fence."""
        if state.manifest_age() * 1000 >= state.settings.manifest.poll_interval_ms:
            await state.refresh()
            self._saw_head()
        await self._confirm_head(state)
        if state.tail.branch_fence_ms is not None:
            await self._await_branch(state)

    async def _entry_for(self, snap: Snapshot, group: list[Op]) -> _Prepared:
        """The group resolved against ``snap`` and its entry encoded, in a worker thread: the event
        loop only routes meanwhile. Its segments are pinned first: a worker thread that met an
        evicted one would wait on the loop to reopen it, which needs a worker thread itself, so
        a few such commits at once would hold every one of them and wait forever."""
        stamp = (self.components.nonce(), self.components.clock.now_ms())
        max_work = int(self.state.settings.limits.max_query_work)
        if _plain_upserts(group, snap.schema):
            return self._prepare(snap, group, stamp, max_work)
        async with in_use(snap.segments):
            return await asyncio.to_thread(self._prepare, snap, group, stamp, max_work)

    async def _unchanged(self, snap: Snapshot) -> bool:
        """Nothing to write: the decision was made on ``snap``; is it still the current head?"""
        await self.state.refresh()
        return self.state.head == snap.head

    async def _created(self, entry: WalEntry, data: bytes, attempt: int) -> bool:
        """Create the entry's slot; True once it is committed (and folded into the state), False
        when the slot went to another committer or may already be gone (retry at the next)."""
        state, seq = self.state, entry.seq
        self.components.failpoints.hit("wal.before_put")
        if await self._put(seq, data) == "lost":
            # Another committer (a node, or another serving process of this node) took the
            # slot. Full-jitter backoff from the second loss on: a committer that keeps winning
            # because it never needs to re-read would otherwise starve the others.
            losses = attempt + 1
            if losses > 1:
                cap = min(MAX_LOST_BACKOFF_SECS, 0.001 * 2 ** min(losses, 10))
                await asyncio.sleep(self.components.rng.uniform(0, cap))
            await state.refresh()
            self._saw_head()
            return False
        grace = state.settings.indexer.gc_grace_secs
        if grace > 0 and state.manifest_age() >= grace / 2:
            # We may have been paused long enough for the indexer to fold this slot and GC to
            # delete it, in which case our create re-used a dead slot that no reader will look
            # at. The latest manifest tells: a slot at or below indexed_through is lost.
            await state.refresh()
            if state.indexed_through >= seq:
                return False
        self.components.failpoints.hit("wal.after_put")
        state.committed(entry, len(data))
        self._saw_head()
        self.commits += 1
        if self.on_commit is not None:
            self.on_commit(entry, len(data))
        return True

    def _settle(self, prepared: _Prepared, version: int) -> None:
        for op, outcome in prepared.live:
            op.future.set_result(self._response(op, outcome, version))

    def _saw_head(self) -> None:
        self._seen_head = (self.state.head, self.components.clock.monotonic())

    async def _confirm_head(self, state: NamespaceState) -> None:
        """The entry at ``head + 1`` is created with create-if-absent, which only says that slot
        was free: after the bucket went back (restored from an older backup, recreated) it is
        free too, above a hole where no reader looks. So before building on a head this
        committer has not seen in the bucket within ``HEAD_SEEN_SECS``, one HEAD checks that the
        bucket still holds it (``view_held``); if not, the state is read again (the cache
        dropped) and the commit builds on the bucket's real head. A busy namespace's commits
        build on the entry committed just before: no request added."""
        seen = self._seen_head
        window = min(HEAD_SEEN_SECS, state.settings.manifest.poll_interval_ms / 1000)
        if (
            seen is not None
            and seen[0] == state.head
            and self.components.clock.monotonic() - seen[1] < window
        ):
            return
        if not await state.view_held():
            await state.refresh()  # the refresh's own check finds the same and reloads
        self._saw_head()

    def _prepare(self, snap: Snapshot, group: list[Op], stamp: tuple[bytes, int], max_work: int) -> _Prepared:
        """Resolve ``group`` against ``snap`` and encode its entry for slot ``snap.head + 1``
        (``stamp``: the entry's nonce and creation time; ``max_work``: limits.max_query_work).
        No I/O and no future is touched here: the caller settles the refused requests and
        commits the entry."""
        fp = self.components.failpoints
        resolver = _Resolver(snap, self.token_matcher_factory, max_work)
        prepared = _Prepared()
        for n, op in enumerate(group):
            if op.future.done():
                continue
            if n == len(group) // 2 and n:
                fp.hit("wal.mid_group")
            try:
                prepared.live.append((op, resolver.apply(op)))
            except LagoonError as e:
                prepared.refused.append((op, e))
        if not prepared.live:
            return prepared
        docs = resolver.docs_table()
        schema_changed = resolver.schema != snap.schema or resolver.truncate
        settings_changed = resolver.settings != snap.settings
        if docs is None and not schema_changed and not settings_changed:
            return prepared  # nothing to write
        prepared.entry = WalEntry(
            seq=snap.head + 1,
            nonce=stamp[0],
            created_at_ms=stamp[1],
            writer=self.components.node_id,
            requests=len(prepared.live),
            truncate=resolver.truncate,
            **schema_patch.entry_fields(
                snap.schema,
                resolver.schema,
                docs.column_names if docs is not None else (),
                changed=schema_changed,
                fresh=resolver.truncate or snap.schema.id_type is None,
            ),
            settings=dict(resolver.settings) if settings_changed else None,
            docs=docs,
        )
        prepared.data = encode_entry(seal_entry(prepared.entry, resolver.schema))
        return prepared

    async def _await_branch(self, state: NamespaceState) -> None:
        """The view ends in a branch creation's fence (wal/1 of a new branch) without the branch's
        manifest: building on it would put this write inside the branch's fork range, where no
        reader looks. Read the manifest; while the creation may still commit (the fence is
        younger than the grace period) answer 503; an older fence is a failed creation's (it
        commits within grace/2 or not at all) and is built on like an empty entry."""
        await state.refresh_manifest()
        fence = state.tail.branch_fence_ms
        if fence is None:
            return
        grace_ms = state.settings.indexer.gc_grace_secs * 1000
        if self.components.clock.now_ms() - fence <= grace_ms:
            raise Unavailable(
                f"namespace '{state.keys.namespace}' is being created as a branch; retry in a moment",
                retry_after=1.0,
            )

    async def _put(self, seq: int, data: bytes) -> str:
        """Create the slot. Returns "committed" or "lost" (someone else holds the slot)."""
        store, key = self.state.store, self.state.keys.wal(seq)
        doing = f"committing to namespace '{self.state.keys.namespace}'"
        try:
            await store.put(key, data, PutMode.CREATE)
            return "committed"
        except AlreadyExists:
            return "committed" if await self._holds(key, data) else "lost"
        except StorageError as e:
            if not e.transient:
                raise translate(e, doing) from e
        # Ambiguous: settle what the slot holds.
        try:
            if await self._holds(key, data):
                return "committed"
            return "lost"
        except ObjectNotFound:
            pass
        except StorageError as e:
            raise translate(e, doing) from e
        fence = encode_entry(
            seal_entry(
                WalEntry(
                    seq=seq,
                    nonce=self.components.nonce(),
                    created_at_ms=self.components.clock.now_ms(),
                    writer=self.components.node_id,
                    requests=0,
                )
            )
        )
        try:
            await store.put(key, fence, PutMode.CREATE)
            fenced = True
        except AlreadyExists:
            fenced = False
        except StorageError as e:
            raise translate(e, doing) from e
        if not fenced and await self._holds(key, data):
            return "committed"
        return "lost"  # the slot holds the fence or another writer's entry: retry after refresh

    async def _holds(self, key: str, data: bytes) -> bool:
        """Whether the slot holds exactly our entry (its nonce makes the bytes unique).
        Raises ObjectNotFound when the slot is empty."""
        return await self.state.store.get(key) == data

    @staticmethod
    def _response(op: Op, outcome: _Outcome, version: int) -> dict[str, Any]:
        """The acknowledgement; ``version`` is the namespace's commit version once the request is
        visible: the WAL seq of the entry that holds it (of the head it was checked against, for a
        request that changed nothing)."""
        req = op.request
        affected = len(outcome.upserted) + len(outcome.patched) + len(outcome.deleted)
        body: dict[str, Any] = {
            "status": "OK",
            "message": "committed" if op.kind == "write" else "OK",
            "rows_affected": affected,
            "billing": {"billable_logical_bytes_written": req.logical_bytes if req else 0},
            "version": version,
        }
        if op.kind == "truncate" and outcome.documents is not None:
            body["rows_deleted"] = outcome.documents
        if op.kind != "write" or req is None:
            return body
        if req.upserts:
            body["rows_upserted"] = len(outcome.upserted)
        if req.patches or req.patch_by_filter is not None:
            body["rows_patched"] = len(outcome.patched)
        if req.deletes or req.delete_by_filter is not None:
            body["rows_deleted"] = len(outcome.deleted)
        if outcome.rows_remaining:
            body["rows_remaining"] = True
        if req.return_affected_ids:
            body["upserted_ids"] = [id_to_json(i) for i in outcome.upserted]
            body["patched_ids"] = [id_to_json(i) for i in outcome.patched]
            body["deleted_ids"] = [id_to_json(i) for i in outcome.deleted]
        return body


def make_write_op(body: Any, schema: Schema) -> Op:
    """Validate now (against the schema the node knows) so bad input fails before queueing."""
    req = parse_write(body, schema)
    return Op(kind="write", body=body, request=req, parsed_against=schema)


__all__ = ["Committer", "Op", "SchemaMoved", "make_write_op"]
