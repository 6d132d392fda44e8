"""The settings models: one section class per ``[section]``, ``Settings`` over them, and the
names of the ``LAGOON_*`` environment variables.

Every field has a description and a cost (``json_schema_extra={"cost": ...}``), from which
``lagoon.config.docs`` generates the table of docs/configuration.md. ``Settings(...)`` built
directly reads only its arguments and the defaults; ``lagoon.config.loader.load_settings`` sets
``SOURCES`` for the one construction that may also read the environment and the config file.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

ENV_PREFIX = "LAGOON_"
CONFIG_ENV_VAR = "LAGOON_CONFIG"
"""The one ``LAGOON_*`` variable that is not a setting: the path of the config file."""


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
    header_timeout_secs: float = Field(
        default=10.0,
        gt=0,
        description="Time a connection has to deliver a request's head (request line + headers), from "
        "when it opens or its next request's first byte; past it a started head gets 408 and the "
        "connection is closed (a connection that sent nothing is closed).",
        json_schema_extra=_cost(
            "Longer lets slow (or trickling, slowloris-style) clients hold connections longer; shorter "
            "cuts off clients on very slow links."
        ),
    )
    max_connections: int = Field(
        default=4096,
        ge=1,
        description="Open client connections per serving process; a connection beyond it is closed as "
        "soon as it is accepted.",
        json_schema_extra=_cost(
            "Each connection holds a file descriptor and a little memory; keep it well under the "
            "process's open-file limit (ulimit -n), which the store's files share."
        ),
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
    segment_fetch_parallelism: int = Field(
        default=8,
        ge=1,
        le=64,
        description="Segments of one query whose object-store reads (posting pages, probed cluster "
        "blocks, document batches of segments opened from their heads) run at once; 1 reads one "
        "segment after another, so a cold query then waits one more round trip per segment.",
        json_schema_extra=_cost(
            "Each cold query may use this many threads (one its own) and simultaneous GETs; the "
            "process keeps a pool of query_threads x (this - 1) threads for them."
        ),
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
    commit_routing: bool = Field(
        default=False,
        description="With several serving processes, hand each namespace's validated writes to one "
        "owning process, which group-commits them (RFC 0010); false (default): each process commits "
        "what it receives, in turns per namespace.",
        json_schema_extra=_cost(
            "True concentrates one namespace's commits on one process; false makes the processes "
            "alternate commits and each read the other's entries."
        ),
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
    max_open_tail_bytes: int = Field(
        default=1024**3,
        ge=0,
        description="Unindexed WAL tail bytes (as stored) the open namespaces of a serving process "
        "may hold together; beyond it the least recently used idle namespaces are closed (each "
        "namespace's own tail is bounded by indexer.max_unindexed_bytes).",
        json_schema_extra=_cost(
            "Resident memory (a folded tail takes about its stored size or more); lower re-reads "
            "WAL tails of namespaces used in turn more often."
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
        description=(
            "Memory budget for the segments of every namespace a serving process has open (their "
            "files, decoded documents and vectors); the least recently used ones beyond it are "
            "freed and opened again from the disk cache or the store when next queried."
        ),
        json_schema_extra=_cost(
            "Resident memory of every server process, plus the segments of the queries running "
            "(pinned) and each open namespace's WAL tail (docs/operations.md, sizing); a segment "
            "larger than it is opened again for every query."
        ),
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
    memory_bytes: int = Field(
        default=256 * 1024**2,
        ge=0,
        description="Memory budget for the segments a process that runs only the indexer keeps "
        "(lagoon-worker, and the embedded indexer's own process beside several serving "
        "processes): segments it just built and compaction inputs, least recently used out. A "
        "single serving process with the embedded indexer shares cache.memory_bytes instead.",
        json_schema_extra=_cost(
            "Resident memory of the indexer process, on top of the segments a compaction or an "
            "index build is working on; lower re-reads recent segments from the store when "
            "compacting them."
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
    outage_staleness_ms: int = Field(
        default=60_000,
        ge=0,
        description=(
            "While the object store is unreachable, eventually consistent reads of a namespace "
            "this node has loaded keep answering from its cached view for this long after its "
            "last successful refresh (performance.staleness_ms and performance.store_unreachable "
            "say so); later, and always for strong reads, they fail with 503. 0 = they fail at once."
        ),
        json_schema_extra=_cost(
            "Higher: eventual reads ride out longer outages, on older data; 0: no stale answers."
        ),
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
    max_returned_bytes: int = Field(
        default=128 * 1024 * 1024,
        ge=0,
        description="Most logical bytes of rows one query or multi-query returns (as counted in "
        "billable_logical_bytes_returned: ids, $dist and the included attributes; the JSON is about 1-3x "
        "that); past it the request is a 400 (rows estimated large are read in slices and the request "
        "stops at the slice that crosses it). 0 = no limit.",
        json_schema_extra=_cost(
            "Higher lets one small request make the node build a response this large (and several "
            "times that in memory while it is encoded); lower refuses top_k 10,000 with large attributes."
        ),
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
class Sources:
    """What ``Settings.__init__`` may read besides its arguments; set only by ``load_settings``."""

    environ: bool = False
    toml: dict[str, Any] | None = None


SOURCES: contextvars.ContextVar[Sources | None] = contextvars.ContextVar(
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
        current = SOURCES.get() or Sources()
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


def env_var_name(section: str, key: str) -> str:
    """The environment variable that sets ``section.key``, e.g. ``LAGOON_STORAGE__BUCKET``."""
    return f"{ENV_PREFIX}{section.upper()}__{key.upper()}"
