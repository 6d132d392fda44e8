"""Settings: every configuration key Lagoon reads, with its default, its meaning and its cost.

Sources, lowest to highest precedence: defaults < ``lagoon.toml`` (path from ``--config`` or
``LAGOON_CONFIG``) < ``LAGOON_*`` environment variables (``__`` nests: ``LAGOON_STORAGE__BUCKET``)
< command-line flags (``overrides``). Sources merge key by key: an environment variable replaces one
key of a section and leaves the file's other keys of that section alone.

Invariants:
- ``load_settings`` is the only code that reads the environment or the config file for
  configuration; constructing ``Settings(...)`` directly uses defaults and its arguments only, so
  tests are not affected by the developer's environment.
- Unknown keys (in the file, in ``LAGOON_*`` variables, in overrides) and wrong types fail at load
  time with ``InvalidRequest`` naming the key and where it came from; nothing is silently ignored.
- Every field has a description and a cost (``json_schema_extra={"cost": ...}``); the table in
  ``docs/configuration.md`` is generated from them (``settings_table_markdown``) and a test keeps
  it in sync.
- Credentials are never read from here: the S3 backend uses the standard AWS credential chain.
  ``redacted_dict`` masks anything secret-looking so printed or logged configuration never leaks one.

The package: ``models`` (the sections and ``Settings``), ``loader`` (``load_settings``: sources,
precedence, strictness), ``redact`` (masking for anything printed), ``toml_writer`` (TOML output),
``docs`` (the generated settings table). Import from ``lagoon.config``.
"""

from lagoon.config.docs import field_cost, settings_table_markdown
from lagoon.config.loader import IGNORED_ENV_WARNING, ignored_environment, load_settings
from lagoon.config.models import (
    CONFIG_ENV_VAR,
    ENV_PREFIX,
    AnnSettings,
    AuthSettings,
    CacheSettings,
    IndexerSettings,
    LimitsSettings,
    ManifestSettings,
    ObservabilitySettings,
    ServerSettings,
    Settings,
    StorageSettings,
    env_var_name,
    sections,
)
from lagoon.config.redact import REDACTED, is_secret_name, redact_text, redacted_dict, to_json, to_toml
from lagoon.config.toml_writer import dumps_toml, toml_value

__all__ = [
    "CONFIG_ENV_VAR",
    "ENV_PREFIX",
    "IGNORED_ENV_WARNING",
    "REDACTED",
    "AnnSettings",
    "AuthSettings",
    "CacheSettings",
    "IndexerSettings",
    "LimitsSettings",
    "ManifestSettings",
    "ObservabilitySettings",
    "ServerSettings",
    "Settings",
    "StorageSettings",
    "dumps_toml",
    "env_var_name",
    "field_cost",
    "ignored_environment",
    "is_secret_name",
    "load_settings",
    "redact_text",
    "redacted_dict",
    "sections",
    "settings_table_markdown",
    "to_json",
    "to_toml",
    "toml_value",
]
