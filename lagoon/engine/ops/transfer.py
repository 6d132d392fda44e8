"""``lagoon export`` / ``lagoon import``: one namespace as a JSON-lines file, and back.

File format (version 1), one JSON object per line, UTF-8:

    {"lagoon_export": 1, "namespace": "docs", "org": "default", "schema": {...},
     "distance_metric": "cosine_distance" | null, "exported_at": "...Z", "lagoon_version": "..."}
    {"id": 1, "title": "hello", "vector": [0.1, 0.2], ...}        one line per live document
    ...
    {"lagoon_export_end": 1, "documents": 2}                       end marker

The header's ``schema`` is the namespace schema exactly as ``GET .../schema`` returns it (id type,
every attribute with its full-text and ANN options); documents are in the write API's row form
(``upsert_rows``): attributes that are null are left out, vectors are float lists, datetimes ISO
8601 strings, uuids canonical strings. Any JSON-lines tool can read or produce the file; the end
marker lets ``import`` tell a complete file from a truncated one (a file without it still imports,
with a warning).

Export pages through the namespace in id order (``rank_by: ["id", "asc"]``, ``top_k`` up to
10,000, ``filters: ["id", "Gt", last id]``) through ``Database.query``, so memory stays bounded by
one page whatever the namespace size. Each page is a strongly consistent read, but the export as
a whole is not a point-in-time snapshot: a document written during the export may or may not be
in it. For an exact copy, stop writers first (e.g. ``PATCH .../metadata {"read_only": true}``).

Import upserts the documents in batches (default 1,000 rows per write, each batch atomic); the
first batch carries the header's schema and distance metric with ``create_namespace: true``, so
the namespace comes into existence with its first documents and an import that fails before any
batch landed leaves no namespace behind (an empty export restores an empty namespace with one
create-only write at the end). Retryable errors (429, 503, 409) are retried with backoff. An
import that fails (or is interrupted) after some batches landed says how many, and ``resume``
continues it: batches whose documents are all in the namespace already are skipped (one count
query per batch), the others written again (upserts are idempotent). Importing into an existing
namespace is refused unless ``resume`` or ``allow_existing`` (upsert everything) is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import os
import re
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from lagoon.engine.database import Database
from lagoon.engine.manifest_store import read_version
from lagoon.engine.ops import defaults
from lagoon.engine.ops.repair import rebuild_in_memory, tail_in_memory
from lagoon.engine.segment_handle import SegmentHandle
from lagoon.engine.state import DamagedSegment
from lagoon.engine.tail import SegmentLike, Snapshot
from lagoon.errors import DataCorruption, InvalidRequest, LagoonError, NotFound
from lagoon.format.keys import DEFAULT_ORG, NamespaceKeys, check_namespace
from lagoon.index.segment.read import SegmentReader
from lagoon.query.execute import execute_query
from lagoon.schema import unstored
from lagoon.storage.base import ObjectNotFound
from lagoon.wire.query import MAX_TOP_K, parse_request

EXPORT_FORMAT = 1
HEADER_KEY = "lagoon_export"
END_KEY = "lagoon_export_end"
DEFAULT_PAGE_SIZE = defaults.EXPORT_PAGE_SIZE
DEFAULT_BATCH_ROWS = defaults.IMPORT_BATCH_ROWS
MAX_BATCH_ROWS = defaults.IMPORT_MAX_BATCH_ROWS
DEFAULT_WRITE_ATTEMPTS = 8
STDIO = "-"

_ROW_INDEX = re.compile(r"^upsert_rows\[(\d+)\]")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lagoon")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value) + b"\n"


Progress = Callable[[int, int], None]
PageReader = Callable[[dict[str, Any]], Awaitable[list[dict[str, Any]]]]
"""``progress(documents, bytes)``: called after each page exported or batch imported, with the
totals so far (bytes: of the file written or read)."""


# --- export ----------------------------------------------------------------------------------


@dataclass
class ExportStats:
    namespace: str
    documents: int = 0
    pages: int = 0
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)  # --salvage: the damage left out
    rebuilt: list[str] = field(default_factory=list)  # --salvage: damaged segments read from other objects


def _damage(snap: Snapshot) -> list[str]:
    """What of ``snap`` cannot be read: damaged segments (with the WAL seqs they cover) and the
    damaged WAL entries the node already folds as empty."""
    out = [_damage_line(seg) for seg in snap.segments if isinstance(seg, DamagedSegment)]
    return out + list(snap.damage)


def _damage_line(seg: DamagedSegment) -> str:
    return (
        f"{seg.problem} (its documents, from WAL seqs {seg.ref.seq_from}..{seg.ref.seq_to}, are "
        "missing; older versions of them, if any segment holds one, may appear instead)"
    )


async def _salvageable(
    db: Database, org: str, namespace: str, snap: Snapshot
) -> tuple[Snapshot, list[str], list[str]]:
    """``snap`` with each damaged segment rebuilt in memory from what still holds its rows
    (its intact files, else the WAL entries it covers while they are retained: the rebuild
    ``lagoon repair`` makes, nothing written), or left out when nothing does. Returns the
    snapshot a salvage reads, what is still missing, and what was rebuilt."""
    keys = NamespaceKeys.of(org, namespace)
    segments: list[SegmentLike] = []
    skipped: list[str] = []
    rebuilt: list[str] = []
    for seg in snap.segments:
        if isinstance(seg, SegmentHandle):  # the export reads it throughout: its reader, held
            segments.append(await seg.open())
            continue
        if not isinstance(seg, DamagedSegment):
            segments.append(seg)
            continue
        r = await rebuild_in_memory(db.store, keys, seg.ref, snap.schema)
        if r.segment is None:
            skipped.append(_damage_line(seg))
            continue
        segments.append(r.segment)
        if r.lost_rows:
            lost = (
                f"WAL seqs {', '.join(map(str, r.lost_seqs))} are gone"
                if r.lost_seqs
                else "no object holds them"
            )
            skipped.append(
                f"{seg.problem} (read from {r.source}; {r.lost_rows} of its documents are missing: {lost})"
            )
        else:
            rebuilt.append(f"{seg.problem} (read from {r.source}; nothing missing)")
    kept = dataclasses.replace(snap, segments=tuple(segments), _source=None)
    kept, behind_hole = await _past_wal_hole(db, keys, kept)
    return kept, skipped + list(snap.damage) + behind_hole, rebuilt


async def _wal_after_head(db: Database, keys: NamespaceKeys, snap: Snapshot) -> int:
    """How many WAL entries lie after the snapshot's head behind a hole (one LIST): 0 when there
    are none, or when the entry right after the head exists (a write committed since the
    snapshot: readers go on to it, so nothing is hidden)."""
    try:
        if snap.manifest_version and (await read_version(db.store, keys, snap.manifest_version)).branch:
            return 0  # a branch's tail is partly its parent's: read as the node reads it
    except ObjectNotFound:
        return 0  # collected meanwhile: the chain moved on, the snapshot's head was not a hole
    after = [m.key async for m in db.store.list(keys.wal_prefix, start_after=keys.wal(snap.head))]
    return 0 if keys.wal(snap.head + 1) in after else len(after)


async def _past_wal_hole(db: Database, keys: NamespaceKeys, snap: Snapshot) -> tuple[Snapshot, list[str]]:
    """A missing WAL seq stops readers at it; the entries after it are still in the bucket.
    When there are any, the unindexed entries are read again and folded past the hole, as
    ``lagoon repair`` leaves them, into one segment in memory that replaces the snapshot's tail."""
    if not await _wal_after_head(db, keys, snap):
        return snap, []
    m = await read_version(db.store, keys, snap.manifest_version) if snap.manifest_version else None
    tail = await tail_in_memory(db.store, keys, m)
    segments: tuple[SegmentLike, ...] = ()
    if not tail.truncated:  # the entries past the hole may have grown the schema
        segments = tuple(
            s.with_schema(tail.schema) if isinstance(s, SegmentReader) else s for s in snap.segments
        )
    if tail.segment is not None:
        segments = (*segments, tail.segment)
    kept = dataclasses.replace(
        snap, segments=segments, chunks=(), runs=(), head=tail.head, schema=tail.schema, _source=None
    )
    holes = [
        f"wal/{q}: missing (a hole in the WAL: readers stop before it until `lagoon repair` fills it; "
        "the entries after it are exported)"
        for q in tail.missing
    ]
    return kept, holes


def _page_reader(db: Database, namespace: str, org: str, snap: Snapshot | None) -> PageReader:
    """Reads one page of rows: by ``Database.query`` (strong, one read per page), or, for a
    salvage, from the readable part of one snapshot."""

    async def by_query(body: dict[str, Any]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = (await db.query(namespace, body, org=org))["rows"]
        return rows

    if snap is None:
        return by_query
    src = snap.source()

    async def salvaged(body: dict[str, Any]) -> list[dict[str, Any]]:
        def work() -> list[dict[str, Any]]:
            rows: list[dict[str, Any]] = execute_query(parse_request(body, snap.schema), src)["rows"]
            return rows

        return await asyncio.to_thread(work)

    return salvaged


def _export_row(row: dict[str, Any]) -> dict[str, Any]:
    """A query row as an ``upsert_rows`` row: no nulls, no ``$``-fields (``$dist``)."""
    return {k: v for k, v in row.items() if v is not None and not k.startswith("$")}


def _check_exportable(snap: Snapshot, namespace: str) -> None:
    """Attributes with ``store: false`` (RFC 0008) keep no values: an export would lose them."""
    names = unstored(snap.schema)
    if names:
        raise InvalidRequest(
            f"export: {namespace!r} has attributes with store: false ({', '.join(map(repr, names))}); "
            "their values are not kept, so an export could not restore them"
        )


async def export_namespace(
    db: Database,
    namespace: str,
    out: IO[bytes],
    *,
    org: str = DEFAULT_ORG,
    page_size: int = DEFAULT_PAGE_SIZE,
    progress: Progress | None = None,
    salvage: bool = False,
) -> ExportStats:
    """Write the header, every live document and the end marker of ``namespace`` to ``out``.

    Raises NotFound if the namespace does not exist, and DataCorruption if part of it is
    damaged, unless ``salvage``: then every document some object still holds is exported from
    one snapshot (a damaged segment rebuilt in memory, as repair would, from its intact files or
    the WAL entries it covers), and what is missing and what was rebuilt are listed in
    ``ExportStats.skipped``/``rebuilt`` and in the end marker.
    """
    if not 1 <= page_size <= MAX_TOP_K:
        raise InvalidRequest(f"page size: expected 1..{MAX_TOP_K}, got {page_size}")
    check_namespace(namespace)
    snap = await db.snapshot(org, namespace, strong=True)
    _check_exportable(snap, namespace)
    keys = NamespaceKeys.of(org, namespace)
    damage = _damage(snap)
    behind = await _wal_after_head(db, keys, snap)
    if behind:
        damage.append(
            f"wal/{snap.head + 1}: missing (a hole in the WAL: readers stop before it, so the "
            f"{behind} entries after it are not read until `lagoon repair` fills it)"
        )
    if damage and not salvage:
        raise DataCorruption(
            f"{org}/{namespace} is damaged: {damage[0]}"
            + (f" (and {len(damage) - 1} more)" if len(damage) > 1 else "")
            + "; `lagoon export --salvage` exports what is readable and lists what it skips, "
            "or run `lagoon repair` first"
        )
    rebuilt: list[str] = []
    readable: Snapshot | None = None
    if salvage and damage:
        readable, damage, rebuilt = await _salvageable(db, org, namespace, snap)
    read_page = _page_reader(db, namespace, org, readable)
    schema = (readable or snap).schema.to_json()
    header = {
        HEADER_KEY: EXPORT_FORMAT,
        "namespace": namespace,
        "org": org,
        "schema": schema,
        "distance_metric": (readable or snap).schema.distance_metric,
        "exported_at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "lagoon_version": _version(),
    }
    if salvage:
        header["salvage"] = True
    stats = ExportStats(namespace, skipped=damage, rebuilt=rebuilt)

    def emit(value: Any) -> None:
        data = _dumps(value)
        out.write(data)
        stats.bytes += len(data)

    emit(header)
    last: Any = None
    while True:
        body: dict[str, Any] = {"rank_by": ["id", "asc"], "top_k": page_size, "include_attributes": True}
        if last is not None:
            body["filters"] = ["id", "Gt", last]
        rows = await read_page(body)
        stats.pages += 1
        for row in rows:
            emit(_export_row(row))
        stats.documents += len(rows)
        if progress is not None:
            progress(stats.documents, stats.bytes)
        if len(rows) < page_size:
            break
        last = rows[-1]["id"]
    end: dict[str, Any] = {END_KEY: EXPORT_FORMAT, "documents": stats.documents}
    if salvage:
        end["skipped"] = damage
        end["rebuilt"] = rebuilt
    emit(end)
    return stats


async def export_to_path(
    db: Database,
    namespace: str,
    path: str,
    *,
    org: str = DEFAULT_ORG,
    page_size: int = DEFAULT_PAGE_SIZE,
    progress: Progress | None = None,
    salvage: bool = False,
) -> ExportStats:
    """``export_namespace`` into ``path`` (``-`` = stdout). A file is written as ``<path>.partial``
    and renamed at the end, so an interrupted export never leaves a file that looks complete."""
    if path == STDIO:
        stats = await export_namespace(
            db, namespace, sys.stdout.buffer, org=org, page_size=page_size, progress=progress, salvage=salvage
        )
        sys.stdout.buffer.flush()
        return stats
    partial = path + ".partial"
    try:
        with open(partial, "wb") as f:
            stats = await export_namespace(
                db, namespace, f, org=org, page_size=page_size, progress=progress, salvage=salvage
            )
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise
    return stats


# --- import ----------------------------------------------------------------------------------


class ImportFileError(InvalidRequest):
    """The import file is not a Lagoon export (or a line of it is malformed)."""


@dataclass
class ImportStats:
    namespace: str
    documents: int = 0
    batches: int = 0
    retries: int = 0
    created: bool = False
    skipped: int = 0
    """Documents of batches a resumed import found in the namespace already (not written again)."""
    complete: bool = False
    """The file ended with an end marker whose count matched."""
    source_namespace: str = ""
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ExportHeader:
    namespace: str
    schema: dict[str, Any]
    distance_metric: str | None


def _parse_line(text: str | bytes, where: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as e:
        raise ImportFileError(f"{where}: not valid JSON ({e})") from None


def parse_header(value: Any, where: str) -> ExportHeader:
    if not isinstance(value, dict) or HEADER_KEY not in value:
        raise ImportFileError(
            f'{where}: not a Lagoon export (the first line must be the {{"{HEADER_KEY}": ...}} header)'
        )
    fmt = value[HEADER_KEY]
    if not isinstance(fmt, int) or isinstance(fmt, bool) or fmt < 1:
        raise ImportFileError(f"{where}: bad {HEADER_KEY} format version {fmt!r}")
    if fmt > EXPORT_FORMAT:
        raise ImportFileError(
            f"{where}: written in export format {fmt}; this Lagoon reads format {EXPORT_FORMAT}. Upgrade Lagoon."
        )
    schema = value.get("schema")
    if not isinstance(schema, dict):
        raise ImportFileError(f"{where}: header has no schema object")
    metric = value.get("distance_metric")
    if metric is not None and not isinstance(metric, str):
        raise ImportFileError(f"{where}: header distance_metric must be a string or null")
    return ExportHeader(str(value.get("namespace") or ""), schema, metric)


def _numbered(lines: Iterable[str | bytes]) -> Iterator[tuple[int, str | bytes]]:
    for number, line in enumerate(lines, start=1):
        if line.strip():
            yield number, line


async def _write_with_retry(
    write: Callable[[], Awaitable[dict[str, Any]]],
    stats: ImportStats,
    *,
    attempts: int,
    sleep: Callable[[float], Awaitable[None]],
) -> None:
    for attempt in range(1, attempts + 1):
        try:
            await write()
            return
        except LagoonError as e:
            if not e.retryable or attempt == attempts:
                raise
            stats.retries += 1
            await sleep(e.retry_after if e.retry_after is not None else min(10.0, 0.25 * 2**attempt))


@dataclass
class _Importer:
    """One import's state: the pending batch, where it came from, what has landed."""

    db: Database
    namespace: str
    org: str
    source: str
    stats: ImportStats
    create: dict[str, Any]  # schema, distance_metric, create_namespace: sent with the first write
    attempts: int
    sleep: Callable[[float], Awaitable[None]]
    resume: bool
    progress: Progress | None
    exists: bool
    bytes_read: int = 0
    batch: list[dict[str, Any]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)

    async def write(self, body: dict[str, Any]) -> None:
        await _write_with_retry(
            lambda: self.db.write(self.namespace, body, org=self.org),
            self.stats,
            attempts=self.attempts,
            sleep=self.sleep,
        )

    async def present(self) -> bool:
        """On resume: every document of the batch is in the namespace already (a batch is one
        atomic write, so it landed whole or not at all)."""
        ids = [row["id"] for row in self.batch]
        body = {"filters": ["id", "In", ids], "aggregate_by": {"n": ["Count"]}}
        found = await self.db.query(self.namespace, body, org=self.org)
        return bool(found.get("aggregations", {}).get("n") == len(set(map(str, ids))))

    async def flush(self) -> None:
        if not self.batch:
            return
        if self.resume and self.exists and await self.present():
            self.stats.skipped += len(self.batch)
        else:
            body: dict[str, Any] = {**self.create, "upsert_rows": list(self.batch)}
            try:
                await self.write(body)
            except InvalidRequest as e:
                raise type(e)(_locate(str(e), self.lines, self.source)) from None
            self.create = {}  # the namespace has its schema now; later batches are plain upserts
            self.stats.created = self.stats.created or not self.exists
            self.exists = True
            self.stats.batches += 1
        self.stats.documents += len(self.batch)
        self.batch.clear()
        self.lines.clear()
        if self.progress is not None:
            self.progress(self.stats.documents, self.bytes_read)

    async def add(self, number: int, value: dict[str, Any], batch_rows: int) -> None:
        self.batch.append(value)
        self.lines.append(number)
        if len(self.batch) >= batch_rows:
            await self.flush()

    async def finish(self) -> None:
        """The last batch; an export without documents still creates its (empty) namespace."""
        await self.flush()
        if self.create and not self.exists:
            await self.write(self.create)
            self.stats.created = True


async def _exists(db: Database, namespace: str, org: str) -> bool:
    try:
        await db.get_schema(namespace, org=org)
        return True
    except NotFound:
        return False


def _document(line: str | bytes, where: str, end: dict[str, Any] | None) -> tuple[Any, bool]:
    """A document line parsed, or the end marker (second value True); ImportFileError else."""
    if end is not None:
        raise ImportFileError(f"{where}: data after the end marker")
    value = _parse_line(line, where)
    if isinstance(value, dict) and END_KEY in value:
        return value, True
    if isinstance(value, dict) and HEADER_KEY in value:
        raise ImportFileError(f"{where}: a second export header (concatenated files?)")
    if not isinstance(value, dict) or "id" not in value:
        raise ImportFileError(f'{where}: expected a document object with an "id"')
    return value, False


def _check_end(end: dict[str, Any] | None, stats: ImportStats, source: str) -> None:
    if end is None:
        stats.warnings.append(
            f"{source} has no end marker: it may be truncated (or was not written by lagoon export)"
        )
    elif end.get("documents") != stats.documents:
        raise ImportFileError(
            f"{source}: the end marker counts {end.get('documents')!r} documents but the file holds "
            f"{stats.documents}; the file is damaged (the documents read so far were imported)"
        )
    else:
        stats.complete = True


def _with_resume_hint(e: LagoonError, stats: ImportStats, namespace: str) -> LagoonError:
    """The error, plus what landed before it and how to go on from there."""
    if stats.batches == 0:
        return e
    hint = (
        f"; {stats.documents} documents of '{namespace}' were imported before this (each batch is "
        "atomic): fix the cause and re-run the import with --resume to continue"
    )
    out = type(e)(str(e) + hint)
    out.retry_after = e.retry_after
    return out


async def import_namespace(
    db: Database,
    namespace: str,
    lines: Iterable[str | bytes],
    *,
    org: str = DEFAULT_ORG,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    allow_existing: bool = False,
    resume: bool = False,
    source: str = "input",
    attempts: int = DEFAULT_WRITE_ATTEMPTS,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    progress: Progress | None = None,
    stats: ImportStats | None = None,
) -> ImportStats:
    """Recreate ``namespace`` from the lines of an export (see the module docstring).

    Errors name ``source`` and the line number. Raises InvalidRequest when the namespace exists
    and neither ``allow_existing`` nor ``resume`` is set, or for a malformed file; engine errors
    of a batch are re-labelled with the line of the offending row. The namespace comes into
    existence with the first batch (schema included), so an import that fails before any batch
    landed leaves nothing behind; one that fails later says how many documents landed and to
    re-run with ``resume``, which skips the batches already there (checked by id). ``stats``
    (optional) is filled as the import goes, so a caller that is interrupted knows how far it got.
    """
    if not 1 <= batch_rows <= MAX_BATCH_ROWS:
        raise InvalidRequest(f"batch size: expected 1..{MAX_BATCH_ROWS}, got {batch_rows}")
    check_namespace(namespace)
    numbered = _numbered(lines)
    first = next(numbered, None)
    if first is None:
        raise ImportFileError(f"{source}: empty file (expected a Lagoon export)")
    header = parse_header(_parse_line(first[1], f"{source} line {first[0]}"), f"{source} line {first[0]}")
    stats = stats if stats is not None else ImportStats(namespace)
    stats.namespace, stats.source_namespace = namespace, header.namespace
    exists = await _exists(db, namespace, org)
    if exists and not (allow_existing or resume):
        raise InvalidRequest(
            f"namespace '{namespace}' already exists; import into a new namespace, continue an "
            "interrupted import (--resume), or upsert into the existing one (--allow-existing)"
        )
    create: dict[str, Any] = {"schema": header.schema, "create_namespace": True}
    if header.distance_metric:
        create["distance_metric"] = header.distance_metric
    imp = _Importer(db, namespace, org, source, stats, create, attempts, sleep, resume, progress, exists)
    imp.bytes_read = len(first[1])
    end: dict[str, Any] | None = None
    try:
        for number, line in numbered:
            imp.bytes_read += len(line)
            value, is_end = _document(line, f"{source} line {number}", end)
            if is_end:
                end = value
            else:
                await imp.add(number, value, batch_rows)
        await imp.finish()
    except LagoonError as e:
        raise _with_resume_hint(e, stats, namespace) from None
    _check_end(end, stats, source)
    return stats


def _locate(message: str, lines: list[int], source: str) -> str:
    """``upsert_rows[3].x: bad`` -> ``<source> line 17: upsert_rows[3].x: bad``."""
    m = _ROW_INDEX.match(message)
    if m and int(m.group(1)) < len(lines):
        return f"{source} line {lines[int(m.group(1))]}: {message}"
    return f"{source} lines {lines[0]}-{lines[-1]}: {message}" if lines else message


async def import_from_path(
    db: Database,
    namespace: str,
    path: str,
    *,
    org: str = DEFAULT_ORG,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    allow_existing: bool = False,
    resume: bool = False,
    progress: Progress | None = None,
    stats: ImportStats | None = None,
) -> ImportStats:
    """``import_namespace`` reading ``path`` (``-`` = stdin) line by line."""
    options: dict[str, Any] = {
        "org": org,
        "batch_rows": batch_rows,
        "allow_existing": allow_existing,
        "resume": resume,
        "progress": progress,
        "stats": stats,
    }
    if path == STDIO:
        return await import_namespace(db, namespace, sys.stdin.buffer, source="stdin", **options)
    with open(path, "rb") as f:
        return await import_namespace(db, namespace, f, source=path, **options)


__all__ = [
    "DEFAULT_BATCH_ROWS",
    "DEFAULT_PAGE_SIZE",
    "END_KEY",
    "EXPORT_FORMAT",
    "HEADER_KEY",
    "ExportHeader",
    "ExportStats",
    "ImportFileError",
    "ImportStats",
    "export_namespace",
    "export_to_path",
    "import_from_path",
    "import_namespace",
    "parse_header",
]
