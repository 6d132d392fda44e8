"""``lagoon import``: recreate a namespace from a ``lagoon export`` file (``lagoon.engine.ops.transfer``).

The engine is imported when the command runs, so ``lagoon --help`` stays fast.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import click

from lagoon.cli.common import config_option, set_option
from lagoon.cli.support import command_settings, namespace_option, org_option, run_errors
from lagoon.engine.ops import defaults

if TYPE_CHECKING:
    from lagoon.engine.database import Database
    from lagoon.engine.ops.transfer import ImportStats


@click.command("import")
@namespace_option(required=True, help="Namespace to create (need not be the exported one).")
@click.option("--in", "source", required=True, metavar="FILE", help="Export file (.jsonl); '-' = stdin.")
@org_option
@click.option(
    "--batch-size",
    type=click.IntRange(1, defaults.IMPORT_MAX_BATCH_ROWS),
    default=defaults.IMPORT_BATCH_ROWS,
    show_default=True,
    help="Documents per write (each write is atomic).",
)
@click.option(
    "--allow-existing",
    is_flag=True,
    help="Upsert every document even if the namespace already exists.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue an interrupted or failed import: skip the batches already in the namespace.",
)
@config_option
@set_option
def command(
    namespace: str,
    source: str,
    org: str,
    batch_size: int,
    allow_existing: bool,
    resume: bool,
    config_file: str | None,
    assignments: tuple[str, ...],
) -> None:
    """Create a namespace with an export's schema and upsert its documents in batches."""
    from lagoon.cli.progress import TransferProgress
    from lagoon.cli.runtime import run_with_database
    from lagoon.engine.ops.transfer import ImportStats, import_from_path

    settings = command_settings(config_file, assignments)
    stats = ImportStats(namespace)
    size = None if source == "-" else _file_size(source)

    async def run(db: Database) -> ImportStats:
        with TransferProgress(f"import {namespace}", total_bytes=size) as bar:
            return await import_from_path(
                db,
                namespace,
                source,
                org=org,
                batch_rows=batch_size,
                allow_existing=allow_existing,
                resume=resume,
                progress=bar.update,
                stats=stats,
            )

    try:
        with run_errors("import"):
            stats = run_with_database(settings, run)
    except KeyboardInterrupt:
        landed = f"{stats.documents} documents were imported" if stats.batches else "nothing was imported"
        click.echo(f"Interrupted: {landed}; run the same command with --resume to continue.", err=True)
        raise click.exceptions.Exit(130) from None
    if stats.skipped:
        click.echo(f"Resumed: {stats.skipped} documents were in the namespace already.", err=True)
    for warning in stats.warnings:
        click.echo(f"Warning: {warning}", err=True)
    verb = "Created" if stats.created else "Updated"
    origin = f" (exported from '{stats.source_namespace}')" if stats.source_namespace else ""
    click.echo(
        f"{verb} {org}/{namespace}: imported {stats.documents} documents in {stats.batches} writes{origin}.",
        err=True,
    )


def _file_size(path: str) -> int | None:
    try:
        return os.path.getsize(path)
    except OSError:
        return None  # the import reports the file's problem itself
