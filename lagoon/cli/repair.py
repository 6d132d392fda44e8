"""``lagoon repair``: check namespaces in the bucket like fsck and fix what is safe (``lagoon.engine.ops.repair``).

Exit 0 when no error remains (warnings such as orphans allowed), 1 otherwise; with ``--dry-run``
nothing is changed, so a fixable error still exits 1. The store layer is imported when the
command runs, so ``lagoon --help`` stays fast.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from lagoon.cli.common import RunError, config_option, set_option
from lagoon.cli.support import checked_by, command_settings, namespace_option, run_errors
from lagoon.format.keys import DEFAULT_ORG, check_org

if TYPE_CHECKING:
    from lagoon.engine.ops.repair import RepairReport
    from lagoon.storage.base import ObjectStore


@click.command("repair")
@namespace_option(required=False, help="Check only this namespace (default: every namespace).")
@click.option(
    "--org",
    default=None,
    callback=checked_by(check_org),
    help=f"Organisation to check (default: {DEFAULT_ORG}).",
)
@click.option("--all-orgs", is_flag=True, help="Check every organisation in the store.")
@click.option("--dry-run", is_flag=True, help="Report only; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@config_option
@set_option
def command(
    namespace: str | None,
    org: str | None,
    all_orgs: bool,
    dry_run: bool,
    as_json: bool,
    config_file: str | None,
    assignments: tuple[str, ...],
) -> None:
    """Verify manifests, CURRENT, segments, WAL, strays and orphans; fix what is safe (fsck)."""
    if all_orgs and (org is not None or namespace is not None):
        raise click.UsageError("--all-orgs checks every namespace of every org: drop --org/--namespace")
    from lagoon.cli.runtime import run_with_store
    from lagoon.engine.ops.repair import repair

    settings = command_settings(config_file, assignments)
    orgs = None if all_orgs else [org or DEFAULT_ORG]

    async def run(store: ObjectStore) -> RepairReport:
        return await repair(
            store,
            orgs=orgs,
            namespace=namespace,
            dry_run=dry_run,
            grace_secs=settings.indexer.gc_grace_secs,
            settings=settings,
        )

    with run_errors("repair"):
        report = run_with_store(settings, run)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        click.echo(report.render(), nl=False)
    if not report.ok:
        bad = [f"{n.org}/{n.namespace}" for n in report.namespaces if not n.ok]
        bad += [f"the namespace catalog of {c.org}" for c in report.catalogs if not c.ok]
        raise RunError(f"repair: errors remain in {', '.join(bad)}")
