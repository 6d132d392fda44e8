"""The settings table of docs/configuration.md, generated from the models' descriptions and costs
(a test keeps the document in sync).
"""

from __future__ import annotations

import json
import typing
from typing import Literal

from pydantic.fields import FieldInfo

from lagoon.config.models import env_var_name, sections


def field_cost(info: FieldInfo) -> str:
    """The documented cost of a setting (empty if it has none, which the tests refuse)."""
    extra = info.json_schema_extra
    cost = extra.get("cost") if isinstance(extra, dict) else None
    return cost if isinstance(cost, str) else ""


def _type_name(info: FieldInfo) -> str:
    annotation = info.annotation
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is Literal:
        return " \\| ".join(json.dumps(a) for a in args)
    if type(None) in args:
        inner = [a for a in args if a is not type(None)]
        return " \\| ".join(getattr(a, "__name__", str(a)) for a in inner) + " (optional)"
    return getattr(annotation, "__name__", str(annotation))


def _default_text(info: FieldInfo) -> str:
    default = info.get_default(call_default_factory=True)
    if default is None:
        return "unset"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, str):
        return f'`"{default}"`'
    if isinstance(default, int) and default >= 1024**2 and default % 1024**2 == 0:
        human = f"{default // 1024**3} GiB" if default % 1024**3 == 0 else f"{default // 1024**2} MiB"
        return f"`{default}` ({human})"
    return f"`{default}`"


def settings_table_markdown() -> str:
    """The Markdown table of every setting, as embedded in docs/configuration.md."""
    rows = [
        "| Key | Environment variable | Type | Default | Meaning | Cost |",
        "|---|---|---|---|---|---|",
    ]
    for section, model in sections().items():
        for key, info in model.model_fields.items():
            cells = [
                f"`{section}.{key}`",
                f"`{env_var_name(section, key)}`",
                _type_name(info),
                _default_text(info),
                (info.description or "").replace("|", "\\|"),
                field_cost(info).replace("|", "\\|"),
            ]
            rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"
