"""``lagoon export``: write one namespace to a JSON-lines file (``lagoon.engine.ops.transfer``).

The engine is imported when the command runs, so ``lagoon --help`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from lagoon.cli.common import config_option, set_option
from lagoon.cli.support import command_settings, namespace_option, org_option, run_errors
from lagoon.engine.ops import defaults
from lagoon.errors import DataCorruption

if TYPE_CHECKING:
    from lagoon.engine.database import Database
    from lagoon.engine.ops.transfer import ExportStats


@click.command("export")
@namespace_option(required=True, help="Namespace to export.")
@click.option("--out", "out", required=True, metavar="FILE", help="Output file (.jsonl); '-' = stdout.")
@org_option
@click.option(
    "--page-size",
    type=click.IntRange(1, defaults.EXPORT_PAGE_SIZE),
    default=defaults.EXPORT_PAGE_SIZE,
    show_default=True,
    help="Documents fetched per query page (bounds memory).",
)
@click.option(
    "--salvage",
    is_flag=True,
    help="Export what is readable from a damaged namespace and list what was skipped "
    "(without it, a damaged namespace is refused).",
)
@config_option
@set_option
def command(
    namespace: str,
    out: str,
    org: str,
    page_size: int,
    salvage: bool,
    config_file: str | None,
    assignments: tuple[str, ...],
) -> None:
    """Export a namespace's schema and live documents as JSON lines (a backup `lagoon import` reads)."""
    from lagoon.cli.progress import TransferProgress
    from lagoon.cli.runtime import run_with_database
    from lagoon.engine.ops.transfer import export_to_path

    settings = command_settings(config_file, assignments)

    async def run(db: Database) -> ExportStats:
        try:
            total = (await db.metadata(namespace, org=org))["approx_row_count"]
        except DataCorruption:
            total = None  # the count needs the damaged part; the export says what to do
        with TransferProgress(f"export {namespace}", total_documents=total) as bar:
            return await export_to_path(
                db, namespace, out, org=org, page_size=page_size, progress=bar.update, salvage=salvage
            )

    try:
        with run_errors("export"):
            stats = run_with_database(settings, run)
    except KeyboardInterrupt:
        click.echo("Interrupted: no export file was written (run the export again).", err=True)
        raise click.exceptions.Exit(130) from None
    where = "stdout" if out == "-" else out
    for what in stats.rebuilt:
        click.echo(f"Rebuilt (damaged): {what}", err=True)
    for what in stats.skipped:
        click.echo(f"Skipped (damaged): {what}", err=True)
    click.echo(
        f"Exported {stats.documents} documents of {org}/{namespace} to {where} ({stats.bytes} bytes).",
        err=True,
    )
