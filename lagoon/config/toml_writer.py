"""A TOML writer for flat tables of scalars (what ``lagoon config`` prints and ``lagoon keys`` writes);
the standard library reads TOML but does not write it.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from typing import Any


def dumps_toml(tables: Mapping[str, Mapping[str, Any]], *, header: str = "") -> str:
    """A TOML document of flat tables of scalars (str, bool, int, float, datetime).

    ``None`` has no TOML spelling: such a key is written as a comment, so reading the document back
    leaves it unset. Table names that are not bare keys are quoted.
    """
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    for name, values in tables.items():
        if lines:
            lines.append("")
        lines.append(f"[{_toml_key(name)}]")
        for key, value in values.items():
            if value is None:
                lines.append(f"# {_toml_key(key)} is unset")
            else:
                lines.append(f"{_toml_key(key)} = {toml_value(value)}")
    return "\n".join(lines) + "\n"


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else toml_value(key)


def toml_value(value: Any) -> str:
    """One TOML scalar. Raises TypeError for anything else (tables here are flat by design)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return '"' + "".join(_toml_char(c) for c in value) + '"'
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise TypeError("naive datetimes are ambiguous; give a timezone")
        text = value.astimezone(dt.UTC).isoformat(timespec="microseconds" if value.microsecond else "seconds")
        return text.replace("+00:00", "Z")
    raise TypeError(f"cannot write {type(value).__name__} as a TOML scalar")


_TOML_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _toml_char(c: str) -> str:
    if c in _TOML_ESCAPES:
        return _TOML_ESCAPES[c]
    if ord(c) < 0x20 or ord(c) == 0x7F:
        return f"\\u{ord(c):04x}"
    return c
