"""Logging setup: one line per event on stdout, as JSON (default) or text.

A JSON line is ``{"ts", "level", "logger", "msg", ...fields}``: ``ts`` is RFC 3339 UTC with
milliseconds, ``level`` is lowercase (``debug``/``info``/``warning``/``error``/``critical``), the
fields are the ones given to ``log_event`` (or as ``extra=`` to a plain ``logging`` call), and
``exc`` holds a traceback when there is one. A field whose name clashes with one of the four core
keys is kept as ``field_<name>``.

Invariants:
- Nothing secret reaches the output: values of fields whose name looks secret (``token``,
  ``password``, ``authorization``, ...) are masked, and in every string (message included) the
  secret part of anything shaped like an API key (``lgn_<id>_<secret>``) and URL passwords are
  masked. Log the key id, never the key.
- ``configure_logging`` is idempotent: it replaces the handler it installed before, and touches no
  other handler.
- Only data reaches the output: uvicorn's ``color_message`` (its message again, with ANSI colour
  escapes) is dropped, so a line never carries terminal escapes a log pipeline would store.
- Values that are not JSON types are written with ``str()``; a log call never raises.
- Python warnings (``warnings.warn``, numpy's ``RuntimeWarning`` for an overflow or an invalid
  value) are log records too: logger ``py.warnings``, level ``warning``, the warning's text as
  ``msg`` with ``category``, ``filename`` and ``lineno`` fields. Nothing is written raw to stderr,
  so the JSON stream stays one object per line. The warnings filters still apply (by default a
  warning is shown once per code location).
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import warnings
from collections.abc import Mapping
from typing import Any, TextIO

import orjson

from lagoon.config import REDACTED, ObservabilitySettings, is_secret_name, redact_text

_FIELDS_ATTR = "lagoon_fields"
_CORE = ("ts", "level", "logger", "msg")
# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", _FIELDS_ATTR}
# Attributes other libraries put on their records that are not data: uvicorn adds
# ``color_message``, its message again with ANSI colour escapes, for its own coloured formatter.
_DROPPED_ATTRS = frozenset({"color_message"})


def log_event(logger: logging.Logger, msg: str, /, *, level: int = logging.INFO, **fields: Any) -> None:
    """Log ``msg`` with structured ``fields`` (e.g. ``request_id=..., namespace=..., status=200``)."""
    if logger.isEnabledFor(level):
        logger.log(level, msg, extra={_FIELDS_ATTR: fields}, stacklevel=2)


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields of a record, secrets masked: ``log_event`` fields and ``extra=`` ones."""
    fields: dict[str, Any] = {
        k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS and k not in _DROPPED_ATTRS
    }
    given = getattr(record, _FIELDS_ATTR, None)
    if isinstance(given, Mapping):
        fields.update(given)
    return {(f"field_{k}" if k in _CORE else k): _scrub(k, v) for k, v in fields.items()}


def _scrub(name: str, value: Any) -> Any:
    if is_secret_name(name) and value not in (None, ""):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {str(k): _scrub(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(name, v) for v in value]
    return value


def _timestamp(record: logging.LogRecord) -> str:
    when = dt.datetime.fromtimestamp(record.created, dt.UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _message(record: logging.LogRecord) -> str:
    try:
        text = record.getMessage()
    except Exception:  # a bad %-format must not lose the event
        text = f"{record.msg!s} {record.args!r}"
    return redact_text(text)


class JsonFormatter(logging.Formatter):
    """One JSON object per line (see the module docstring for its keys)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": _message(record),
        }
        line.update(record_fields(record))
        if record.exc_info:
            line["exc"] = redact_text(self.formatException(record.exc_info))
        elif record.exc_text:
            line["exc"] = redact_text(record.exc_text)
        return orjson.dumps(line, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


class TextFormatter(logging.Formatter):
    """``<ts> <level> <logger>: <msg> key=value ...`` for people reading a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record), f"{record.levelname.lower():<7}", f"{record.name}:", _message(record)]
        for key, value in record_fields(record).items():
            text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
            if not text or any(c.isspace() or c in '"=' for c in text):
                text = orjson.dumps(text).decode()  # quoted, so key=value pairs stay parseable
            parts.append(f"{key}={text}")
        out = " ".join(parts)
        if record.exc_info:
            out += "\n" + redact_text(self.formatException(record.exc_info))
        return out


_warnings_log = logging.getLogger("py.warnings")


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """``warnings.showwarning`` replacement: the warning as a structured log record."""
    log_event(
        _warnings_log,
        f"{category.__name__}: {message}",
        level=logging.WARNING,
        category=category.__name__,
        filename=filename,
        lineno=lineno,
    )


class _LagoonHandler(logging.StreamHandler[TextIO]):
    """Marks the handler ``configure_logging`` owns, so a second call replaces it."""


def configure_logging(observability: ObservabilitySettings, *, stream: TextIO | None = None) -> None:
    """Send every log record at or above ``observability.log_level`` to stdout (or ``stream``)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _LagoonHandler):
            root.removeHandler(handler)
            handler.close()
    handler = _LagoonHandler(stream if stream is not None else sys.stdout)
    handler.setFormatter(JsonFormatter() if observability.log_format == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(observability.log_level.upper())
    warnings.showwarning = _show_warning


__all__ = ["JsonFormatter", "TextFormatter", "configure_logging", "log_event", "record_fields"]
