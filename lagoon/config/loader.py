"""``load_settings``: defaults < TOML file < ``LAGOON_*`` environment < command-line overrides.

The only code that reads the environment or the config file for configuration. Unknown keys and
wrong types fail here with ``InvalidRequest`` naming the key and where it came from.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from pydantic import (
    ValidationError,
)

from lagoon.config.models import (
    CONFIG_ENV_VAR,
    ENV_PREFIX,
    SOURCES,
    Settings,
    Sources,
    env_var_name,
    sections,
)
from lagoon.config.redact import is_secret_name
from lagoon.errors import InvalidRequest


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    environ: bool = True,
) -> Settings:
    """Resolve settings: defaults < TOML file < LAGOON_* environment < ``overrides`` (CLI flags).

    ``config_file`` defaults to ``$LAGOON_CONFIG`` (when ``environ``); the file must exist.
    ``environ=False`` ignores the environment entirely (``LAGOON_CONFIG`` included).
    Raises InvalidRequest naming the offending key and its source on unknown keys or bad values.
    """
    env = _lagoon_environ() if environ else {}
    path = config_file if config_file is not None else (env.get(CONFIG_ENV_VAR) or None)
    toml = _read_toml(Path(path)) if path is not None else None
    problems, ignored = _unknown_env_vars(env)
    problems += _unknown_keys(toml or {}, f"in {path}")
    problems += _unknown_keys(overrides or {}, "on the command line")
    if problems:
        raise InvalidRequest("invalid configuration: " + "; ".join(problems))
    plain_overrides = {section: dict(values) for section, values in (overrides or {}).items()}
    token = SOURCES.set(Sources(environ=environ, toml=toml))
    try:
        settings = Settings(**cast(dict[str, Any], plain_overrides))
        settings._ignored_env = ignored
        return settings
    except ValidationError as e:
        raise InvalidRequest(_describe(e, toml, path, env, plain_overrides)) from None
    except ValueError as e:  # e.g. an environment value pydantic-settings cannot decode
        raise InvalidRequest(f"invalid configuration: {e}") from None
    finally:
        SOURCES.reset(token)


def _lagoon_environ() -> dict[str, str]:
    """The LAGOON_* variables, names upper-cased (pydantic-settings matches them case-insensitively)."""
    return {k.upper(): v for k, v in os.environ.items() if k.upper().startswith(ENV_PREFIX)}


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise InvalidRequest(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise InvalidRequest(f"config file {path} is not valid TOML: {e}") from None
    except OSError as e:
        raise InvalidRequest(f"cannot read config file {path}: {e.strerror or e}") from None


def _unknown_env_vars(env: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """(problems, ignored) among the LAGOON_* variables.

    Only ``LAGOON_<SECTION>__<KEY>`` names are settings: such a name with an unknown section or
    key is a problem (a typo: refused, with the nearest setting as a suggestion), as is a name that
    is exactly a section (``LAGOON_STORAGE``). Any other ``LAGOON_*`` name is not a setting and is
    ignored (returned in ``ignored``, with a suggestion when it is close to one): Kubernetes
    injects ``<SERVICE>_SERVICE_HOST``, ``<SERVICE>_PORT=tcp://...`` and more for every Service,
    so a Service named ``lagoon-server`` gives every pod ``LAGOON_SERVER_PORT``."""
    known = sections()
    problems: list[str] = []
    ignored: list[str] = []
    for name in sorted(env):
        if name == CONFIG_ENV_VAR:
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        section, sep, key = rest.partition("__")
        if not sep or not section:
            if rest in known:
                problems.append(
                    f"environment variable {name} sets a whole section; set one key at a time, "
                    f"e.g. {env_var_name(rest, next(iter(known[rest].model_fields)))}"
                )
            else:
                ignored.append(name + _suggestion(rest))
        elif section not in known:
            problems.append(
                f"unknown setting section '{section}' (from environment variable {name})"
                + _suggestion(rest.replace("__", "_", 1))
            )
        elif key not in known[section].model_fields:
            problems.append(
                f"unknown setting '{section}.{key}' (from environment variable {name})"
                + _suggestion(f"{section}_{key}")
            )
    return problems, ignored


def _suggestion(flat: str) -> str:
    """'; did you mean LAGOON_S__K?' for the setting whose ``section_key`` is closest to ``flat``."""
    candidates = {
        f"{s}_{k}": env_var_name(s, k) for s, model in sections().items() for k in model.model_fields
    }
    close = difflib.get_close_matches(flat, list(candidates), n=1, cutoff=0.85)
    return f"; did you mean {candidates[close[0]]}?" if close else ""


IGNORED_ENV_WARNING = (
    "ignoring environment variables that are not settings (settings are LAGOON_<SECTION>__<KEY>)"
)


def ignored_environment(settings: Settings) -> list[str]:
    """The ``LAGOON_*`` variables ``load_settings`` ignored (not settings), with suggestions; the
    programs log them once, in one warning (``IGNORED_ENV_WARNING``), after logging is set up."""
    return list(settings._ignored_env)


def _unknown_keys(data: Mapping[str, Any], where: str) -> list[str]:
    known = sections()
    problems = []
    for section, values in data.items():
        if section not in known:
            problems.append(f"unknown setting section '{section}' {where}")
        elif not isinstance(values, Mapping):
            problems.append(f"'{section}' must be a section ([{section}]) {where}, got {values!r}")
        else:
            problems += [
                f"unknown setting '{section}.{key}' {where}"
                for key in values
                if key not in known[section].model_fields
            ]
    return problems


def _describe(
    e: ValidationError,
    toml: Mapping[str, Any] | None,
    path: str | os.PathLike[str] | None,
    env: Mapping[str, str],
    overrides: Mapping[str, Mapping[str, Any]],
) -> str:
    parts = []
    for err in e.errors():
        loc = [str(p) for p in err["loc"]]
        key = ".".join(loc)
        where = ""
        if len(loc) >= 2:
            section, name = loc[0], loc[1]
            if name in overrides.get(section, {}):
                where = " (from the command line)"
            elif env_var_name(section, name) in env:
                where = f" (from environment variable {env_var_name(section, name)})"
            elif toml is not None and name in (toml.get(section) or {}):
                where = f" (from {path})"
        msg = err["msg"].removeprefix("Value error, ")
        if len(loc) == 1 and err["type"] == "value_error":  # a section-level check names its keys
            parts.append(msg)
        elif len(loc) >= 2 and is_secret_name(loc[1]):
            parts.append(f"setting '{key}'{where}: {msg}")
        else:
            parts.append(f"setting '{key}'{where}: {msg} (got {err.get('input')!r})")
    return "invalid configuration: " + "; ".join(parts)
