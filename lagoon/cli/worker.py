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
    build_overrides,
    config_option,
    logging_options,
    print_config_option,
    resolve_settings,
    run_component,
    set_option,
    storage_options,
)
from lagoon.cli.common import print_config as emit_config

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
    overrides = build_overrides(
        assignments,
        {
            ("storage", "backend"): storage_backend,
            ("storage", "root"): storage_root,
            ("observability", "log_level"): log_level,
            ("observability", "log_format"): log_format,
        },
    )
    settings = resolve_settings(config_file, overrides)
    if print_config:
        emit_config(settings, PROGRAM)
        return
    raise SystemExit(run_component("lagoon.worker", settings, PROGRAM))


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (``lagoon-worker``)."""
    command.main(args=list(argv) if argv is not None else None, prog_name=PROGRAM)
