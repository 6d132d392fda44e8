"""Redaction: configuration is printed and logged only with anything secret-looking masked.

Settings hold no secrets by design (credentials come from the standard AWS chain); these keep it so
for anything printed, even if one is added later.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from typing import Any

from pydantic import (
    BaseModel,
    SecretBytes,
    SecretStr,
)

from lagoon.config.toml_writer import dumps_toml

REDACTED = "**********"


_SECRET_NAME = re.compile(
    r"secret|passw(or)?d|token|credential|private_key|access_key|api_key|authorization|^key$", re.I
)
_API_KEY_IN_TEXT = re.compile(r"\b(lgn_[A-Za-z0-9]+_)[A-Za-z0-9_-]+")


def is_secret_name(name: str) -> bool:
    """True for names that usually hold a secret (``token``, ``password``, ``authorization``, ...)."""
    return bool(_SECRET_NAME.search(name))


def redact_text(text: str) -> str:
    """``text`` with secrets masked: the secret part of anything shaped like an API key
    (``lgn_<id>_<secret>``; the id stays, it is not secret), and in URLs the password and the
    values of secret-looking query parameters."""
    text = _API_KEY_IN_TEXT.sub(lambda m: m.group(1) + REDACTED, text)
    return _redact_url(text) if "://" in text else text


def _redact_value(name: str, value: Any) -> Any:
    if isinstance(value, SecretStr | SecretBytes):
        return REDACTED if value.get_secret_value() else ""
    if is_secret_name(name) and value not in (None, ""):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    return value


def _redact_url(value: str) -> str:
    try:
        parts = urllib.parse.urlsplit(value)
        password = parts.password
    except ValueError:
        return value
    if password is not None:
        host = parts.netloc.rpartition("@")[2]
        parts = parts._replace(netloc=f"{parts.username or ''}:{REDACTED}@{host}")
    if parts.query:
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        if any(is_secret_name(k) for k, _ in query):
            masked = [(k, REDACTED if is_secret_name(k) else v) for k, v in query]
            parts = parts._replace(query=urllib.parse.urlencode(masked, safe="*"))
    return urllib.parse.urlunsplit(parts)


def redacted_dict(settings: BaseModel) -> dict[str, dict[str, Any]]:
    """``{section: {key: value}}`` of ``settings`` with anything secret-looking masked.

    Masked: ``SecretStr``/``SecretBytes`` values, values of keys whose name looks secret (token,
    password, secret, ...), Lagoon API keys inside strings and passwords inside URLs. Settings hold
    no secrets by design; this keeps it so for anything printed, even if one is added later.
    """
    out: dict[str, dict[str, Any]] = {}
    for section_name in type(settings).model_fields:
        section = getattr(settings, section_name)
        if not isinstance(section, BaseModel):
            raise TypeError(f"{section_name} is not a section")
        out[section_name] = {
            key: _redact_value(key, getattr(section, key)) for key in type(section).model_fields
        }
    return out


def to_json(settings: BaseModel) -> str:
    """The redacted settings as indented JSON (``null`` for unset optional keys)."""
    return json.dumps(redacted_dict(settings), indent=2)


def to_toml(settings: BaseModel, *, header: str = "") -> str:
    """The redacted settings as a TOML document that ``load_settings`` reads back unchanged."""
    return dumps_toml(redacted_dict(settings), header=header)
