"""``lagoon``: operator commands. A thin shell over ``lagoon.auth`` and ``lagoon.config``.

Commands here work without the engine: ``keys create|list|revoke``, ``config print``, ``version``.
Commands that need the engine (``export``, ``import``, ``repair``, ``doctor``, ``bench``,
``namespaces``) belong to whoever implements them: a click command in its own ``lagoon/cli/<name>.py``,
added here with ``cli.add_command``. None is stubbed: a command listed in ``--help`` works.

Invariants: a new key's secret goes to stdout exactly once (alone on its line, so scripts can capture
it) and is never written anywhere else; listings show key ids, never hashes. The configuration is
only resolved when a command needs it, so ``keys --keys-file PATH`` works even with a broken config.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import click

from lagoon import auth
from lagoon.cli import bench, doctor, export, imports, namespaces, repair
from lagoon.cli.common import (
    CONTEXT_SETTINGS,
    ConfigError,
    RunError,
    config_option,
    parse_assignments,
    resolve_settings,
    set_option,
    version,
)
from lagoon.cli.support import checked_by
from lagoon.config import Settings, to_json, to_toml
from lagoon.errors import LagoonError

PROGRAM = "lagoon"


@dataclass
class _State:
    config_file: str | None
    _settings: Settings | None = field(default=None, repr=False)

    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = resolve_settings(self.config_file, {})
        return self._settings

    def keys_file(self, explicit: str | None) -> str:
        if explicit:
            return explicit
        configured = self.settings().auth.keys_file
        if not configured:
            raise ConfigError(
                "no keys file: pass --keys-file PATH or set auth.keys_file (LAGOON_AUTH__KEYS_FILE)"
            )
        return configured


@click.group(name=PROGRAM, context_settings=CONTEXT_SETTINGS)
@config_option
@click.version_option(version(), "--version", prog_name=PROGRAM, message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context, config_file: str | None) -> None:
    """Administer a Lagoon deployment."""
    ctx.obj = _State(config_file)


def _state() -> _State:
    state = click.get_current_context().find_object(_State)
    if state is None:  # pragma: no cover - every command runs under ``cli``
        raise RuntimeError("lagoon command run outside the lagoon group")
    return state


# --- keys ------------------------------------------------------------------------------------

keys_file_option = click.option(
    "--keys-file",
    metavar="PATH",
    default=None,
    help="Keys file (default: auth.keys_file from the configuration).",
)


@cli.group()
def keys() -> None:
    """Create, list and revoke API keys (the auth.keys_file)."""


@keys.command("create")
@click.option(
    "--org", required=True, callback=checked_by(auth.check_org), help="Organisation the key acts for."
)
@click.option(
    "--role",
    required=True,
    type=click.Choice(auth.ROLES),
    help="reader: query and list; writer: + write, delete docs, branch; admin: + delete namespaces.",
)
@keys_file_option
def keys_create(org: str, role: str, keys_file: str | None) -> None:
    """Create a key and print it once. Store it now: it cannot be shown again."""
    path = _state().keys_file(keys_file)
    try:
        key, record = auth.create_key(path, org, role)
    except LagoonError as e:
        raise RunError(str(e)) from None
    except OSError as e:
        raise RunError(f"cannot write keys file {path}: {e.strerror or e}") from None
    click.echo(key)
    click.echo(
        f"Created key {record.key_id} (org {record.org}, role {record.role}) in {path}.\n"
        "This is the only time the key is shown: store it in your secret manager now.",
        err=True,
    )


@keys.command("list")
@click.option("--org", default=None, help="Only this organisation's keys.")
@click.option("--json", "as_json", is_flag=True, help="One JSON array instead of a table.")
@keys_file_option
def keys_list(org: str | None, as_json: bool, keys_file: str | None) -> None:
    """List keys: id, org, role, creation time, status. Never the secret or its hash."""
    path = _state().keys_file(keys_file)
    try:
        records = sorted(auth.load_keys(path).values(), key=lambda r: (r.created, r.key_id))
    except LagoonError as e:
        raise RunError(str(e)) from None
    rows = [
        {
            "key_id": r.key_id,
            "org": r.org,
            "role": r.role,
            "created": r.created.isoformat().replace("+00:00", "Z"),
            "revoked": r.revoked,
        }
        for r in records
        if org is None or r.org == org
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = [("KEY ID", "ORG", "ROLE", "CREATED", "STATUS")] + [
        (r["key_id"], r["org"], r["role"], r["created"], "revoked" if r["revoked"] else "active")
        for r in rows
    ]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(table[0]))]
    for row in table:
        click.echo(
            "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


@keys.command("revoke")
@click.argument("key_id")
@keys_file_option
def keys_revoke(key_id: str, keys_file: str | None) -> None:
    """Revoke KEY_ID; servers reject the key as soon as they see the changed file."""
    path = _state().keys_file(keys_file)
    try:
        record, already = auth.revoke_key(path, key_id)
    except LagoonError as e:
        raise RunError(str(e)) from None
    except OSError as e:
        raise RunError(f"cannot write keys file {path}: {e.strerror or e}") from None
    if already:
        click.echo(f"Key {record.key_id} was already revoked.")
    else:
        click.echo(f"Revoked key {record.key_id} (org {record.org}, role {record.role}).")


# --- config, version -------------------------------------------------------------------------


@cli.group()
def config() -> None:
    """Inspect the configuration."""


@config.command("print")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["toml", "json"]),
    default="toml",
    show_default=True,
    help="Output format.",
)
@set_option
def config_print(fmt: str, assignments: tuple[str, ...]) -> None:
    """Print the resolved configuration (defaults < file < LAGOON_* env < --set); nothing secret."""
    state = _state()
    settings = resolve_settings(state.config_file, parse_assignments(assignments))
    if fmt == "json":
        click.echo(to_json(settings))
    else:
        click.echo(to_toml(settings), nl=False)


@cli.command("version")
def version_command() -> None:
    """Print Lagoon's version."""
    click.echo(f"{PROGRAM} {version()}")


cli.add_command(export.command)
cli.add_command(imports.command)
cli.add_command(namespaces.command)
cli.add_command(doctor.command)
cli.add_command(repair.command)
cli.add_command(bench.command)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (``lagoon``)."""
    cli.main(args=list(argv) if argv is not None else None, prog_name=PROGRAM)
