"""What the engine-backed ``lagoon`` commands share: settings resolution, ``--org``, error exits.

Settings: the command's own ``--config`` wins over the group's (``lagoon --config PATH export``
and ``lagoon export --config PATH`` both work), then ``LAGOON_*`` variables, then ``--set``.
Errors: Lagoon, storage and file errors become ``RunError`` (exit 1, one ``Error: ...`` line);
invalid configuration is a ``ConfigError`` (exit 2), bad names a click usage error (exit 2).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import click

from lagoon.cli.common import RunError, parse_assignments, resolve_settings
from lagoon.config import Settings
from lagoon.errors import LagoonError
from lagoon.format.keys import DEFAULT_ORG, check_namespace, check_org

F = TypeVar("F", bound=Callable[..., Any])


def command_settings(config_file: str | None, assignments: tuple[str, ...] = ()) -> Settings:
    """Resolve the settings for the current command (see the module docstring)."""
    if config_file is None:
        ctx = click.get_current_context(silent=True)
        root = ctx.find_root() if ctx is not None else None
        inherited = root.params.get("config_file") if root is not None else None
        config_file = inherited if isinstance(inherited, str) else None
    return resolve_settings(config_file, parse_assignments(assignments))


def checked_by(check: Callable[[str], str]) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A click callback that passes an option's value through ``check`` (a name rule of
    ``lagoon.format.keys``): a LagoonError becomes a usage error (exit 2); no value stays None."""

    def callback(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return check(value)
        except LagoonError as e:
            raise click.BadParameter(str(e)) from None

    return callback


def org_option(f: F) -> F:
    return click.option(
        "--org",
        default=DEFAULT_ORG,
        show_default=True,
        callback=checked_by(check_org),
        help="Organisation that owns the namespaces.",
    )(f)


def namespace_option(*, required: bool, help: str) -> Callable[[F], F]:
    def decorate(f: F) -> F:
        return click.option(
            "--namespace", "namespace", required=required, callback=checked_by(check_namespace), help=help
        )(f)

    return decorate


@contextlib.contextmanager
def run_errors(program: str) -> Iterator[None]:
    """Turn Lagoon and file errors into one-line ``Error: ...`` exits with status 1."""
    try:
        yield
    except LagoonError as e:
        raise RunError(f"{program}: {e}") from None
    except OSError as e:
        raise RunError(f"{program}: {e.filename or ''}: {e.strerror or e}") from None
