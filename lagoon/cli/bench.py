"""``lagoon bench``: write + query micro-benchmark against the configured store (thin shell)."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

import click

from lagoon.cli.common import config_option, set_option
from lagoon.cli.support import command_settings, org_option, run_errors

if TYPE_CHECKING:
    from lagoon.engine.database import Database


@click.command("bench")
@click.option("--docs", default=10_000, show_default=True, help="Documents to write.")
@click.option("--dims", default=128, show_default=True, help="Vector dimensions.")
@click.option("--batch", default=500, show_default=True, help="Documents per write request.")
@click.option("--queries", default=200, show_default=True, help="Timed queries of each kind.")
@org_option
@config_option
@set_option
def command(
    docs: int,
    dims: int,
    batch: int,
    queries: int,
    org: str,
    config_file: str | None,
    assignments: tuple[str, ...],
) -> None:
    """Time writes and queries against the configured store, in a scratch namespace it deletes."""
    from lagoon.cli.runtime import run_with_database
    from lagoon.engine.ops.bench import format_results, run_bench

    if min(docs, dims, batch, queries) < 1:
        raise click.UsageError("--docs, --dims, --batch and --queries must be at least 1")
    settings = command_settings(config_file, assignments)
    namespace = f"lagoon-bench-{secrets.token_hex(4)}"

    async def run(db: Database) -> str:
        results = await run_bench(
            db, namespace=namespace, docs=docs, dims=dims, batch=batch, queries=queries, org=org
        )
        return format_results(results)

    with run_errors("bench"):
        click.echo(run_with_database(settings, run))
