"""``lagoon doctor``: check that the configured object store keeps Lagoon's guarantees
(``lagoon.engine.ops.doctor``). Exit 0 when every check passes (warnings allowed), 1 otherwise.

The store layer is imported when the command runs, so ``lagoon --help`` stays fast.
"""

from __future__ import annotations

import asyncio
import json

import click

from lagoon.cli.common import RunError, config_option, set_option
from lagoon.cli.support import command_settings, run_errors
from lagoon.config import StorageSettings
from lagoon.engine.ops import defaults


def _describe(storage: StorageSettings) -> str:
    if storage.backend == "s3":
        where = f"s3://{storage.bucket}/{storage.prefix}"
        return where + (f" at {storage.endpoint}" if storage.endpoint else "")
    if storage.backend == "fs":
        return f"fs folder {storage.root}" + (f" (prefix {storage.prefix})" if storage.prefix else "")
    return "memory store (this process only)"


@click.command("doctor")
@click.option(
    "--rounds",
    type=click.IntRange(1, 100_000),
    default=defaults.DOCTOR_ROUNDS,
    show_default=True,
    help="Rounds of the concurrent create-if-absent and If-Match races.",
)
@click.option(
    "--threads",
    type=click.IntRange(1, 64),
    default=defaults.DOCTOR_THREADS,
    show_default=True,
    help="Racing writers per process (this one and a second one).",
)
@click.option(
    "--max-skew-secs",
    type=click.FloatRange(0, None),
    default=defaults.DOCTOR_MAX_SKEW_SECS,
    show_default=True,
    help="Warn when the store clock is further than this from the local clock.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@config_option
@set_option
def command(
    rounds: int,
    threads: int,
    max_skew_secs: float,
    as_json: bool,
    config_file: str | None,
    assignments: tuple[str, ...],
) -> None:
    """Check the configured object store: read/list-after-write, ranges, conditional-write races, clock."""
    from lagoon.engine.ops.doctor import DoctorOptions, run_doctor
    from lagoon.storage.factory import open_store

    settings = command_settings(config_file, assignments)
    storage = settings.storage
    options = DoctorOptions(
        rounds=rounds,
        threads=threads,
        peer=storage if storage.backend != "memory" else None,
        max_skew_secs=max_skew_secs,
    )
    with run_errors("doctor"):
        store = open_store(storage)
        try:
            report = run_doctor(store, options, target=_describe(storage))
        finally:
            asyncio.run(store.close())
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        click.echo(report.render(), nl=False)
    if not report.ok:
        raise RunError("doctor: the store failed " + ", ".join(c.name for c in report.failed))
