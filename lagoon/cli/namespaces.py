"""``lagoon namespaces``: list an org's namespaces, one name per line (every page).

The engine is imported when the command runs, so ``lagoon --help`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from lagoon.cli.common import config_option, set_option
from lagoon.cli.support import command_settings, org_option, run_errors

if TYPE_CHECKING:
    from lagoon.engine.database import Database


@click.command("namespaces")
@click.option("--prefix", default="", help="Only names starting with this prefix.")
@org_option
@config_option
@set_option
def command(prefix: str, org: str, config_file: str | None, assignments: tuple[str, ...]) -> None:
    """List the existing namespaces of an org, in name order."""
    from lagoon.cli.runtime import run_with_database
    from lagoon.engine.ops.namespaces import iter_namespaces

    settings = command_settings(config_file, assignments)

    async def run(db: Database) -> int:
        count = 0
        async for name in iter_namespaces(db, org=org, prefix=prefix):
            click.echo(name)
            count += 1
        return count

    with run_errors("namespaces"):
        run_with_database(settings, run)
