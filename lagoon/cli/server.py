"""``lagoon-server``: resolve the configuration and run the HTTP API (``lagoon.server.run``).

Flags are overrides above the config file and the environment; ``--print-config`` prints the
resolved configuration and exits without importing the server. Auth warnings, binding and
shutdown are the server module's job, not this shell's.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import MutableMapping, Sequence

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

PROGRAM = "lagoon-server"

TUNED_MALLOC = {"MALLOC_ARENA_MAX": "2"}
"""glibc allocator settings a server runs with unless its environment sets them: two arenas, not
eight per core each keeping what its threads freed. A fixed ``MALLOC_MMAP_THRESHOLD_=131072``
lowers resident memory further (large buffers unmapped when freed) but is not the default: every
buffer over 128 KiB is then a fresh mapping whose pages fault in zeroed, and writes paid for it
(100-row JSON writes, 8 connections, same build interleaved: 23.7k-26.8k docs/s with it vs
28.4k-38.8k without). docs/operations.md, "Sizing a node's memory", has the measurements."""
_MALLOPT = {"MALLOC_ARENA_MAX": -8, "MALLOC_MMAP_THRESHOLD_": -3}  # M_ARENA_MAX, M_MMAP_THRESHOLD


def tune_allocator(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Apply ``TUNED_MALLOC`` where ``environ`` does not set the variable already (an operator's
    value wins): in the environment, which the serving processes the supervisor starts read when
    they start, and in this process (``mallopt``; glibc read the environment before Python ran).
    Returns what was applied."""
    applied = {k: v for k, v in TUNED_MALLOC.items() if k not in environ}
    environ.update(applied)
    if applied and environ is os.environ:
        with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to tune
            libc = ctypes.CDLL(None)
            for k, v in applied.items():
                libc.mallopt(_MALLOPT[k], int(v))
    return applied


@click.command(name=PROGRAM, context_settings=CONTEXT_SETTINGS)
@config_option
@click.option("--listen", metavar="HOST:PORT", default=None, help="server.listen (default 127.0.0.1:8080).")
@click.option(
    "--embedded-indexer/--no-embedded-indexer",
    default=None,
    help="server.embedded_indexer: also run the indexer, compactor and GC in this process.",
)
@storage_options
@click.option("--keys-file", metavar="PATH", default=None, help="auth.keys_file (empty: auth off).")
@logging_options
@set_option
@print_config_option
def command(
    config_file: str | None,
    listen: str | None,
    embedded_indexer: bool | None,
    storage_backend: str | None,
    storage_root: str | None,
    keys_file: str | None,
    log_level: str | None,
    log_format: str | None,
    assignments: tuple[str, ...],
    print_config: bool,
) -> None:
    """Serve the Lagoon HTTP API (turbopuffer v2 compatible)."""
    flags = {
        ("server", "listen"): listen,
        ("server", "embedded_indexer"): embedded_indexer,
        ("auth", "keys_file"): keys_file,
        **storage_and_logging_flags(storage_backend, storage_root, log_level, log_format),
    }
    if not print_config:
        tune_allocator()
    launch(PROGRAM, "lagoon.server", config_file, assignments, flags, print_only=print_config)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (``lagoon-server``)."""
    command.main(args=list(argv) if argv is not None else None, prog_name=PROGRAM)
