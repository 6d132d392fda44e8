"""``lagoon-worker``: resolve the configuration and run the background loops (``lagoon.worker.run``).

The worker indexes WAL tails, compacts segments and collects garbage; several may run at once
(they coordinate through manifest compare-and-swap). Same configuration handling as
``lagoon-server``: flags beat the environment, which beats the config file.
"""

from __future__ import annotations

from collections.abc import Sequence

import click

from lagoon.cli.common import (
    CONTEXT_SETTINGS,
    config_option,
    launch,
    logging_options,
    print_config_option,
    set_option,
    storage_and_logging_flags,
    storage_options,
)

PROGRAM = "lagoon-worker"


@click.command(name=PROGRAM, context_settings=CONTEXT_SETTINGS)
@config_option
@storage_options
@logging_options
@set_option
@print_config_option
def command(
    config_file: str | None,
    storage_backend: str | None,
    storage_root: str | None,
    log_level: str | None,
    log_format: str | None,
    assignments: tuple[str, ...],
    print_config: bool,
) -> None:
    """Run Lagoon's indexer, compactor and garbage collector."""
    flags = storage_and_logging_flags(storage_backend, storage_root, log_level, log_format)
    launch(PROGRAM, "lagoon.worker", config_file, assignments, flags, print_only=print_config)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (``lagoon-worker``)."""
    command.main(args=list(argv) if argv is not None else None, prog_name=PROGRAM)
