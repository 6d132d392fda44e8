"""What the command-line programs share: config options, flag -> setting overrides, error exits.

Flags never read the environment: they become ``overrides`` for ``load_settings``, which applies them
above the file and the ``LAGOON_*`` variables. A flag that is not given overrides nothing.
Invalid configuration exits 2 with one line naming the key; other failures exit 1.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Callable, Iterable, Mapping
from importlib import import_module
from typing import Any, TypeVar

import click

from lagoon.config import IGNORED_ENV_WARNING, Settings, ignored_environment, load_settings, to_toml
from lagoon.errors import LagoonError
from lagoon.logs import configure_logging, log_event

F = TypeVar("F", bound=Callable[..., Any])

CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class ConfigError(click.ClickException):
    """Invalid configuration or usage: printed as one ``Error: ...`` line, exit status 2."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class RunError(click.ClickException):
    """A failure at run time: printed as ``Error: ...``, exit status 1."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


def version() -> str:
    try:
        return importlib.metadata.version("lagoon")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"


def config_option(f: F) -> F:
    return click.option(
        "--config",
        "config_file",
        metavar="PATH",
        default=None,
        help="TOML config file (default: $LAGOON_CONFIG, else none).",
    )(f)


def set_option(f: F) -> F:
    return click.option(
        "--set",
        "assignments",
        metavar="SECTION.KEY=VALUE",
        multiple=True,
        help="Override any setting, e.g. --set storage.bucket=prod (repeatable; beats file and env).",
    )(f)


def print_config_option(f: F) -> F:
    return click.option(
        "--print-config",
        is_flag=True,
        help="Print the resolved configuration as TOML (nothing secret) and exit.",
    )(f)


def storage_options(f: F) -> F:
    f = click.option(
        "--storage-root", metavar="PATH", default=None, help="storage.root: folder of the fs backend."
    )(f)
    return click.option(
        "--storage-backend",
        type=click.Choice(["fs", "s3", "memory"]),
        default=None,
        help="storage.backend.",
    )(f)


def logging_options(f: F) -> F:
    f = click.option(
        "--log-format", type=click.Choice(["json", "text"]), default=None, help="observability.log_format."
    )(f)
    return click.option(
        "--log-level",
        type=click.Choice(["debug", "info", "warning", "error"]),
        default=None,
        help="observability.log_level.",
    )(f)


def parse_assignments(assignments: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``["storage.bucket=x"]`` -> ``{"storage": {"bucket": "x"}}``; values stay strings and are
    converted (and checked) by the settings model like environment values."""
    out: dict[str, dict[str, Any]] = {}
    for item in assignments:
        key, eq, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not eq or not dot or not section or not name or "." in name:
            raise ConfigError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. storage.bucket=prod")
        out.setdefault(section, {})[name] = value
    return out


def build_overrides(
    assignments: Iterable[str], flags: Mapping[tuple[str, str], Any]
) -> dict[str, dict[str, Any]]:
    """Overrides from ``--set`` items and named flags (``(section, key) -> value``, None = not
    given). A named flag beats a ``--set`` of the same key."""
    out = parse_assignments(assignments)
    for (section, key), value in flags.items():
        if value is not None:
            out.setdefault(section, {})[key] = value
    return out


def storage_and_logging_flags(
    storage_backend: str | None, storage_root: str | None, log_level: str | None, log_format: str | None
) -> dict[tuple[str, str], Any]:
    """The settings named by ``storage_options`` and ``logging_options`` (for ``build_overrides``)."""
    return {
        ("storage", "backend"): storage_backend,
        ("storage", "root"): storage_root,
        ("observability", "log_level"): log_level,
        ("observability", "log_format"): log_format,
    }


def launch(
    program: str,
    module_name: str,
    config_file: str | None,
    assignments: Iterable[str],
    flags: Mapping[tuple[str, str], Any],
    *,
    print_only: bool,
) -> None:
    """What ``lagoon-server`` and ``lagoon-worker`` do once their flags are read: resolve the
    settings (named flags beat ``--set``); with ``--print-config`` print them and return, else run
    ``module_name`` (``run_component``) and exit with its status."""
    settings = resolve_settings(config_file, build_overrides(assignments, flags))
    if print_only:
        print_config(settings, program)
        return
    raise SystemExit(run_component(module_name, settings, program))


def resolve_settings(config_file: str | None, overrides: Mapping[str, Mapping[str, Any]]) -> Settings:
    """``load_settings``, turning an invalid configuration into a ConfigError (exit 2)."""
    try:
        return load_settings(config_file, overrides)
    except LagoonError as e:
        raise ConfigError(str(e)) from None


def print_config(settings: Settings, program: str) -> None:
    """Print ``settings`` as TOML that ``--config`` reads back unchanged; secrets masked."""
    header = (
        f"Configuration resolved by {program} {version()}: defaults < config file < LAGOON_* environment"
        " < flags.\nSecrets are never printed."
    )
    click.echo(to_toml(settings, header=header), nl=False)


def run_component(module_name: str, settings: Settings, program: str) -> int:
    """Import ``module_name`` lazily and call its ``run(settings)``; returns the exit status.

    Imported here, not at the top, so ``--print-config`` works whatever is installed.
    """
    try:
        module = import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name is None or not (module_name == e.name or module_name.startswith(e.name + ".")):
            raise RunError(f"cannot start {program}: {module_name} needs a missing module: {e}") from None
        module = None
    run = getattr(module, "run", None)
    if not callable(run):
        raise RunError(f"cannot start {program}: {module_name}.run is not part of this build")
    configure_logging(settings.observability)
    log_event(logging.getLogger(module_name), f"{program} starting", version=version())
    ignored = ignored_environment(settings)
    if ignored:
        log_event(
            logging.getLogger("lagoon.config"), IGNORED_ENV_WARNING, level=logging.WARNING, variables=ignored
        )
    try:
        result = run(settings)
    except KeyboardInterrupt:
        return 130
    except LagoonError as e:
        raise RunError(f"{program}: {e}") from None
    return result if isinstance(result, int) and not isinstance(result, bool) else 0
