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
"""

from __future__ import annotations

import contextvars
import datetime as dt
import difflib
import json
import math
import os
import re
import tomllib
import typing
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretBytes,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from lagoon.errors import InvalidRequest

ENV_PREFIX = "LAGOON_"
CONFIG_ENV_VAR = "LAGOON_CONFIG"
"""The one ``LAGOON_*`` variable that is not a setting: the path of the config file."""

REDACTED = "**********"


def _cost(text: str) -> dict[str, Any]:
    return {"cost": text}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ServerSettings(_Section):
    listen: str = Field(
        default="127.0.0.1:8080",
        description="host:port the HTTP API binds to.",
        json_schema_extra=_cost(
            "A non-loopback address exposes the API to the network: put TLS and API keys in front."
        ),
    )
    embedded_indexer: bool = Field(
        default=False,
        description="Run the indexer, compactor and GC loops inside the server process.",
        json_schema_extra=_cost("Indexing and compaction compete with queries for this node's CPU and RAM."),
    )
    processes: int = Field(
        default=0,
        ge=0,
        le=256,
        description="Serving processes on this node, all behind server.listen (0: one per usable CPU, "
        "honouring the CPU affinity and a cgroup CPU limit, at most 16; always 1 with the memory "
        "backend). Each runs the whole API; they share the disk cache and split cache.memory_bytes.",
        json_schema_extra=_cost(
            "Each process holds its own copy of hot namespaces' decoded indexes and ~100 MB of "
            "interpreter and libraries; 1 caps the node at about one core."
        ),
    )
    indexer_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="CPU niceness added to the node's own for the embedded indexer's process when there "
        "are several serving processes (at most 19): indexing gets the cores queries leave idle.",
        json_schema_extra=_cost("Higher lets a busy node's index lag grow; 0 lets indexing take query CPU."),
    )
    max_body_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=1024,
        description="Largest request body accepted (413 beyond it); checked before buffering.",
        json_schema_extra=_cost(
            "Each in-flight write may buffer this much memory; concurrent writes add up."
        ),
    )
    max_header_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        description="Largest request head (request line + headers) accepted; 431 beyond it, "
        "checked as the bytes arrive.",
        json_schema_extra=_cost("Each connection may buffer this much before its request is routed."),
    )
    max_headers: int = Field(
        default=100,
        ge=8,
        description="Most header lines in one request; 431 beyond it.",
        json_schema_extra=_cost("Higher lets one request carry more headers to parse and log."),
    )
    request_timeout_secs: float = Field(
        default=60.0,
        gt=0,
        description="Per-request deadline; a request past it gets 503 (writes: not committed).",
        json_schema_extra=_cost(
            "Longer holds connections and memory for slow requests; shorter fails large writes and queries."
        ),
    )
    max_concurrent_queries: int = Field(
        default=16,
        ge=1,
        description="Concurrent queries per namespace on one node; beyond it 429 + Retry-After.",
        json_schema_extra=_cost("Higher uses more CPU and memory under load and raises tail latency."),
    )
    query_threads: int = Field(
        default=4,
        ge=1,
        le=256,
        description="Query evaluation threads per serving process (the bounded query executor).",
        json_schema_extra=_cost(
            "More run more queries at once per process (their pure-Python parts still share one core)."
        ),
    )
    query_threads_per_org: int = Field(
        default=2,
        ge=1,
        le=256,
        description="Most query threads one org may use at once in a process, even when the others "
        "are idle, so the next org's query always finds a free thread.",
        json_schema_extra=_cost("Equal to query_threads: one org's slow queries can make others wait."),
    )
    max_queued_queries: int = Field(
        default=64,
        ge=0,
        description="Queries of one org that may wait for a query thread in a process; more get 429.",
        json_schema_extra=_cost("Higher holds more waiting requests (and their bodies) in memory."),
    )
    commit_window_ms: float = Field(
        default=0.0,
        ge=0,
        description="Extra wait to gather more writes into one WAL entry. Requests that arrive while a "
        "commit is in flight are always grouped; raise this to trade latency for fewer PUTs.",
        json_schema_extra=_cost("Adds up to this much latency to every write; saves object-store PUTs."),
    )
    shutdown_grace_secs: float = Field(
        default=10.0,
        ge=0,
        description="How long in-flight requests may finish after a stop signal.",
        json_schema_extra=_cost("Longer makes restarts and rolling upgrades slower."),
    )

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be host:port, e.g. 127.0.0.1:8080")
        return v


class StorageSettings(_Section):
    backend: Literal["fs", "s3", "memory"] = Field(
        default="fs",
        description="fs: a local folder; s3: any S3-compatible store; memory: ephemeral (tests).",
        json_schema_extra=_cost(
            "fs is single-machine only (no shared compare-and-swap); memory loses everything on exit."
        ),
    )
    root: str = Field(
        default="./lagoon-data",
        description="Folder for the fs backend.",
        json_schema_extra=_cost("Holds all durable data of the fs backend: put it on a disk you back up."),
    )
    bucket: str = Field(
        default="",
        description="Bucket for the s3 backend (required when backend = 's3').",
        json_schema_extra=_cost("Use a dedicated bucket: every object under the prefix belongs to Lagoon."),
    )
    prefix: str = Field(
        default="",
        description="Key prefix inside the bucket (or root), e.g. 'lagoon/'.",
        json_schema_extra=_cost("None; lets several deployments share a bucket with IAM scoped per prefix."),
    )
    region: str = Field(
        default="us-east-1",
        description="S3 region.",
        json_schema_extra=_cost("A region far from the compute nodes adds latency and egress charges."),
    )
    endpoint: str = Field(
        default="",
        description="S3 endpoint for MinIO/R2/GCS/SeaweedFS, e.g. http://minio:9000; empty = AWS.",
        json_schema_extra=_cost("Use https:// unless the store is on a trusted network."),
    )
    sse: Literal["", "AES256", "aws:kms"] = Field(
        default="",
        description="Server-side encryption header sent on every PUT: '' (none), 'AES256' or 'aws:kms'.",
        json_schema_extra=_cost(
            "aws:kms adds a KMS call (and charge) to object reads and writes, subject to KMS quotas."
        ),
    )
    sse_kms_key_id: str = Field(
        default="",
        description="KMS key id/ARN when sse = 'aws:kms'; empty = the account's default aws/s3 key.",
        json_schema_extra=_cost("The compute role needs kms:GenerateDataKey and kms:Decrypt on the key."),
    )

    @field_validator("prefix")
    @classmethod
    def _check_prefix(cls, v: str) -> str:
        if v.startswith("/") or (v and not v.endswith("/")):
            raise ValueError("must be empty or end with '/' and not start with '/', e.g. 'lagoon/'")
        return v

    @model_validator(mode="after")
    def _check_combinations(self) -> StorageSettings:
        if self.backend == "s3" and not self.bucket:
            raise ValueError("storage.bucket is required when storage.backend = 's3'")
        if self.sse_kms_key_id and self.sse != "aws:kms":
            raise ValueError("storage.sse_kms_key_id is set but storage.sse is not 'aws:kms'")
        return self


class CacheSettings(_Section):
    dir: str = Field(
        default="",
        description=(
            "Disk cache folder for segment files; empty = '<system temp dir>/lagoon-cache' for the "
            "s3 backend, none for fs and memory (their files are already local)."
        ),
        json_schema_extra=_cost(
            "Use fast local disk, on an encrypted volume if node-disk theft is in your threat model."
        ),
    )
    max_open_namespaces: int = Field(
        default=4096,
        ge=1,
        description="Namespaces a serving process keeps open (state, WAL tail, committer); the least "
        "recently used idle ones beyond it are closed and reopened from the store when used again.",
        json_schema_extra=_cost(
            "Higher keeps more namespaces warm in memory; lower re-reads manifests and WAL tails more often."
        ),
    )
    disk_bytes: int = Field(
        default=10 * 1024**3,
        ge=0,
        description="Disk cache budget (LRU).",
        json_schema_extra=_cost(
            "Disk space; too small means more object-store GETs and slower cold queries."
        ),
    )
    memory_bytes: int = Field(
        default=1 * 1024**3,
        ge=0,
        description="Memory cache budget for hot small objects.",
        json_schema_extra=_cost("Resident memory of every server process."),
    )
    max_pinned_bytes: int = Field(
        default=5 * 1024**3,
        ge=0,
        description=(
            "Disk budget for pinned namespaces: their segment files are kept on disk (fetched when "
            "the node first serves the namespace, never evicted) up to this size, on top of disk_bytes."
        ),
        json_schema_extra=_cost(
            "Disk space reserved for pinned namespaces, whether or not they are queried."
        ),
    )


class IndexerSettings(_Section):
    flush_interval_secs: float = Field(
        default=5.0,
        gt=0,
        description="Index the WAL tail once its oldest entry is this old.",
        json_schema_extra=_cost(
            "Lower: fresher indexes but more small segments (PUTs, compaction); higher: queries scan "
            "a longer unindexed tail."
        ),
    )
    flush_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1,
        description="...or once the unindexed tail is this large.",
        json_schema_extra=_cost("Higher: fewer, larger segments but more exhaustive scanning per query."),
    )
    compaction_fanin: int = Field(
        default=8,
        ge=2,
        description="Merge segments when a level holds this many.",
        json_schema_extra=_cost(
            "Higher: less rewriting (write amplification) but more segments for every query to visit."
        ),
    )
    max_unindexed_bytes: int = Field(
        default=2 * 1024**3,
        ge=1,
        description="Writes get 429 + Retry-After while the unindexed tail is larger.",
        json_schema_extra=_cost(
            "Higher absorbs write bursts, but queries scan up to this much unindexed data."
        ),
    )
    gc_grace_secs: float = Field(
        default=3600.0,
        ge=0,
        description="Objects unreferenced for this long (store clock) are deleted. Must exceed the "
        "longest query and upload stall plus clock skew.",
        json_schema_extra=_cost(
            "Lower frees storage sooner but risks deleting objects a slow reader still needs; higher "
            "pays for garbage longer."
        ),
    )
    poll_interval_secs: float = Field(
        default=1.0,
        gt=0,
        description="How often workers look for work.",
        json_schema_extra=_cost("Lower: quicker pickup, more LIST/GET requests (billed per request)."),
    )


class ManifestSettings(_Section):
    poll_interval_ms: int = Field(
        default=1000,
        ge=1,
        description="Staleness bound of eventually consistent reads on this node.",
        json_schema_extra=_cost("Lower: fresher reads, more GET requests per active namespace per node."),
    )


class AnnSettings(_Section):
    recall_target: float = Field(
        default=0.95,
        ge=0.5,
        le=1.0,
        description=(
            "Default recall@k of ANN queries for namespaces without their own ann_recall_target "
            "(PATCH metadata); probes are planned across all segments to reach it."
        ),
        json_schema_extra=_cost("Higher: more clusters probed per query (latency); 1.0 scans exactly."),
    )
    recall_sample_rate: float = Field(
        default=0.01,
        ge=0.0,
        le=1.0,
        description=(
            "Share of ANN queries re-run exhaustively in the background to measure recall "
            "(lagoon_ann_recall{namespace}); 0 = off."
        ),
        json_schema_extra=_cost(
            "Each sample costs one exact scan of the namespace, in a low-priority thread."
        ),
    )
    recall_sample_min_docs: int = Field(
        default=20_000,
        ge=0,
        description="Namespaces with fewer documents are not sampled (they are searched almost exactly).",
        json_schema_extra=_cost("Lower: recall is measured on small namespaces too, for little information."),
    )
    recall_samples_per_sec: float = Field(
        default=2.0,
        gt=0,
        description="At most this many sampled re-runs per second per process; more are skipped.",
        json_schema_extra=_cost("Higher: faster-moving recall gauges, more background CPU."),
    )
    recall_window: int = Field(
        default=200,
        ge=1,
        description="lagoon_ann_recall is the mean of a namespace's last this-many samples.",
        json_schema_extra=_cost("Higher: steadier gauge that follows changes more slowly."),
    )


class AuthSettings(_Section):
    keys_file: str = Field(
        default="",
        description="TOML keys file (see `lagoon keys`); empty = auth off.",
        json_schema_extra=_cost(
            "Empty means no authentication: anyone who reaches the port acts as admin of org 'default'."
        ),
    )


class LimitsSettings(_Section):
    requests_per_second: float | None = Field(
        default=None,
        gt=0,
        description="Per-key request rate (token bucket); unset = unlimited.",
        json_schema_extra=_cost("Unset: one client can starve the others; set it for internet-facing APIs."),
    )
    write_bytes_per_minute: int | None = Field(
        default=None,
        gt=0,
        description="Per-key write volume; unset = unlimited.",
        json_schema_extra=_cost("Unset: one writer can fill the indexing backlog for everyone."),
    )
    max_namespaces: int | None = Field(
        default=None,
        gt=0,
        description="Namespaces per org; unset = unlimited. Checked by compare-and-swap on the org's "
        "namespace count, without listing the org; soft only by the drift of crashed creations, "
        "which the worker's sweep and lagoon repair recount.",
        json_schema_extra=_cost("Unset: an org can create namespaces (and storage costs) without bound."),
    )
    max_query_work: float = Field(
        default=1e10,
        ge=0,
        description="Largest estimated pattern-matching work of one query (Regex/Glob/IGlob: pattern "
        "weight x bytes of the attribute; a unit is about a nanosecond of one core); above it the "
        "query is refused with 400 before it runs. 0 = no limit (docs/limits.md).",
        json_schema_extra=_cost(
            "Higher admits queries that hold a query thread for longer (up to the request deadline)."
        ),
    )


class ObservabilitySettings(_Section):
    log_format: Literal["json", "text"] = Field(
        default="json",
        description="Log line format on stdout: json (one object per line) or text.",
        json_schema_extra=_cost("None; json for log pipelines, text for people."),
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info",
        description="Lowest level logged.",
        json_schema_extra=_cost("debug multiplies log volume."),
    )
    metrics_listen: str = Field(
        default="127.0.0.1:9091",
        description=(
            "HOST:PORT where lagoon-worker serves Prometheus metrics (/metrics); empty = off. "
            "lagoon-server serves /metrics on server.listen."
        ),
        json_schema_extra=_cost("One listening socket; bind 0.0.0.0 only on a trusted network."),
    )

    @field_validator("metrics_listen")
    @classmethod
    def _check_metrics_listen(cls, v: str) -> str:
        if v == "":
            return v
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be empty (off) or host:port, e.g. 127.0.0.1:9091")
        return v

    otlp_endpoint: str = Field(
        default="",
        description=(
            "OTLP/HTTP collector for traces of the query path, e.g. http://otel-collector:4318 "
            "('/v1/traces' is appended); empty = off."
        ),
        json_schema_extra=_cost("Span export costs some CPU and network per query."),
    )
    audit_log: str = Field(
        default="",
        description="Append-only JSONL audit log path; empty = off.",
        json_schema_extra=_cost("One line per write and namespace change; grows without bound, rotate it."),
    )


@dataclass(frozen=True)
class _Sources:
    """What ``Settings.__init__`` may read besides its arguments; set only by ``load_settings``."""

    environ: bool = False
    toml: dict[str, Any] | None = None


_SOURCES: contextvars.ContextVar[_Sources | None] = contextvars.ContextVar(
    "lagoon_settings_sources", default=None
)


class _TomlDataSource(InitSettingsSource):
    """The already parsed and checked config file, merged below the environment."""


class Settings(BaseSettings):
    """Resolved configuration. Build it with ``load_settings``.

    Constructing it directly (``Settings(storage=StorageSettings(backend="memory"))``) uses only the
    defaults and the arguments, never the environment or a file.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_assignment=True,
        nested_model_default_partial_update=True,
    )

    server: ServerSettings = ServerSettings()
    storage: StorageSettings = StorageSettings()
    cache: CacheSettings = CacheSettings()
    indexer: IndexerSettings = IndexerSettings()
    manifest: ManifestSettings = ManifestSettings()
    ann: AnnSettings = AnnSettings()
    auth: AuthSettings = AuthSettings()
    limits: LimitsSettings = LimitsSettings()
    observability: ObservabilitySettings = ObservabilitySettings()
    _ignored_env: list[str] = PrivateAttr(default_factory=list)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        current = _SOURCES.get() or _Sources()
        sources: list[PydanticBaseSettingsSource] = [init_settings]
        if current.environ:
            sources.append(env_settings)
        if current.toml is not None:
            sources.append(_TomlDataSource(settings_cls, current.toml))
        return tuple(sources)


def sections() -> dict[str, type[BaseModel]]:
    """Section name -> section model class, in declaration order."""
    out: dict[str, type[BaseModel]] = {}
    for name, info in Settings.model_fields.items():
        annotation = info.annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            raise TypeError(f"Settings.{name} is not a section")  # pragma: no cover - a coding error
        out[name] = annotation
    return out


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
    token = _SOURCES.set(_Sources(environ=environ, toml=toml))
    try:
        settings = Settings(**cast(dict[str, Any], plain_overrides))
        settings._ignored_env = ignored
        return settings
    except ValidationError as e:
        raise InvalidRequest(_describe(e, toml, path, env, plain_overrides)) from None
    except ValueError as e:  # e.g. an environment value pydantic-settings cannot decode
        raise InvalidRequest(f"invalid configuration: {e}") from None
    finally:
        _SOURCES.reset(token)


def _lagoon_environ() -> dict[str, str]:
    """The LAGOON_* variables, names upper-cased (pydantic-settings matches them case-insensitively)."""
    return {k.upper(): v for k, v in os.environ.items() if k.upper().startswith(ENV_PREFIX)}


def env_var_name(section: str, key: str) -> str:
    """The environment variable that sets ``section.key``, e.g. ``LAGOON_STORAGE__BUCKET``."""
    return f"{ENV_PREFIX}{section.upper()}__{key.upper()}"


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


# --- printing --------------------------------------------------------------------------------

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


# --- documentation ---------------------------------------------------------------------------


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


__all__ = [
    "CONFIG_ENV_VAR",
    "ENV_PREFIX",
    "REDACTED",
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
