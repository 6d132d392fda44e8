"""lagoon.config: sources and their precedence, strictness, redaction, TOML output, the docs table."""

from __future__ import annotations

import datetime as dt
import math
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr

from lagoon import config
from lagoon.config import (
    REDACTED,
    LimitsSettings,
    ServerSettings,
    Settings,
    StorageSettings,
    load_settings,
    redacted_dict,
    settings_table_markdown,
    to_toml,
)
from lagoon.errors import InvalidRequest

ROOT = Path(__file__).resolve().parents[2]

# Verbatim from the deployment guide (§2): every key an operator copies from it must load.
GUIDE_TOML = """
[server]
listen = "0.0.0.0:8080"
embedded_indexer = false          # true for single-process mode

[storage]
backend = "s3"                    # "s3" | "fs"
bucket = "lagoon-prod"
prefix = "lagoon/"
region = "us-east-1"
endpoint = ""                     # set for MinIO/R2, e.g. "http://minio:9000"
# Credentials: standard AWS env/instance-profile chain
# (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / IAM role). Never put secrets here.
sse = "aws:kms"                   # "" | "AES256" | "aws:kms" — see §4
sse_kms_key_id = "arn:aws:kms:us-east-1:123456789012:key/..."

[cache]
dir = "/var/lib/lagoon/cache"
disk_bytes = 53687091200          # 50 GiB
memory_bytes = 4294967296         # 4 GiB
max_pinned_bytes = 21474836480    # 20 GiB

[indexer]
flush_interval_secs = 5
compaction_fanin = 8

[manifest]
poll_interval_ms = 1000           # read staleness bound on non-writer nodes

[auth]
keys_file = "/etc/lagoon/keys.toml"   # key-id -> {hash, org, role}; managed via `lagoon keys`

[limits]                          # optional; absent = unlimited
requests_per_second = 200
write_bytes_per_minute = 1073741824
max_namespaces = 1000

[observability]
log_format = "json"
otlp_endpoint = ""                # set to enable OpenTelemetry trace export
audit_log = "/var/log/lagoon/audit.jsonl"
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No LAGOON_* variable of the developer's shell or CI leaks into these tests."""
    import os

    for name in list(os.environ):
        if name.upper().startswith("LAGOON_"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str, name: str = "lagoon.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(*args: Any, **kwargs: Any) -> str:
    with pytest.raises(InvalidRequest) as info:
        load_settings(*args, **kwargs)
    return str(info.value)


# --- sources and precedence ------------------------------------------------------------------


def test_defaults_without_file_or_env() -> None:
    s = load_settings()
    assert s == Settings()
    assert s.server.listen == "127.0.0.1:8080"  # never open to the network by default
    assert s.storage.backend == "fs"
    assert s.auth.keys_file == ""
    assert s.limits.requests_per_second is None


def test_deployment_guide_example_loads(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, GUIDE_TOML))
    assert s.server.listen == "0.0.0.0:8080"
    assert s.storage.backend == "s3" and s.storage.bucket == "lagoon-prod"
    assert s.storage.prefix == "lagoon/" and s.storage.sse == "aws:kms"
    assert s.storage.sse_kms_key_id.startswith("arn:aws:kms:")
    assert s.cache.dir == "/var/lib/lagoon/cache" and s.cache.disk_bytes == 50 * 1024**3
    assert s.cache.memory_bytes == 4 * 1024**3 and s.cache.max_pinned_bytes == 20 * 1024**3
    assert s.indexer.flush_interval_secs == 5.0 and s.indexer.compaction_fanin == 8
    assert s.manifest.poll_interval_ms == 1000
    assert s.auth.keys_file == "/etc/lagoon/keys.toml"
    assert s.limits == LimitsSettings(
        requests_per_second=200, write_bytes_per_minute=1073741824, max_namespaces=1000
    )
    assert s.observability.audit_log == "/var/log/lagoon/audit.jsonl"


def test_every_guide_key_is_a_setting() -> None:
    guide = tomllib.loads(GUIDE_TOML)
    known = config.sections()
    for section, values in guide.items():
        assert section in known
        assert set(values) <= set(known[section].model_fields)


def test_filesystem_mode_from_guide(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, '[storage]\nbackend = "fs"\nroot = "/data/lagoon"\n'))
    assert (s.storage.backend, s.storage.root) == ("fs", "/data/lagoon")


def test_config_path_from_lagoon_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAGOON_CONFIG", str(write(tmp_path, '[storage]\nroot = "/from-env-path"\n')))
    assert load_settings().storage.root == "/from-env-path"
    explicit = write(tmp_path, '[storage]\nroot = "/explicit"\n', "other.toml")
    assert load_settings(explicit).storage.root == "/explicit"


def test_env_beats_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, '[storage]\nbackend = "s3"\nbucket = "from-file"\n')
    monkeypatch.setenv("LAGOON_STORAGE__BUCKET", "from-env")
    assert load_settings(path).storage.bucket == "from-env"


def test_env_overrides_one_key_and_keeps_the_files_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, '[storage]\nbackend = "s3"\nbucket = "b"\nregion = "eu-west-1"\nprefix = "p/"\n')
    monkeypatch.setenv("LAGOON_STORAGE__REGION", "ap-south-1")
    s = load_settings(path)
    assert (s.storage.backend, s.storage.bucket, s.storage.region, s.storage.prefix) == (
        "s3",
        "b",
        "ap-south-1",
        "p/",
    )
    assert s.storage.root == "./lagoon-data"  # neither source: default


def test_env_partial_section_without_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAGOON_CACHE__MEMORY_BYTES", "123")
    s = load_settings()
    assert s.cache.memory_bytes == 123
    assert s.cache.disk_bytes == 10 * 1024**3


def test_guide_environment_equivalents(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAGOON_STORAGE__BACKEND", "s3")
    monkeypatch.setenv("LAGOON_STORAGE__BUCKET", "lagoon-prod")
    monkeypatch.setenv("LAGOON_STORAGE__SSE", "AES256")
    monkeypatch.setenv("LAGOON_CACHE__DIR", "/var/cache/lagoon")
    s = load_settings()
    assert (s.storage.bucket, s.storage.sse, s.cache.dir) == ("lagoon-prod", "AES256", "/var/cache/lagoon")


def test_env_names_are_case_insensitive_and_converted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("lagoon_server__embedded_indexer", "true")
    monkeypatch.setenv("LAGOON_LIMITS__REQUESTS_PER_SECOND", "2.5")
    s = load_settings()
    assert s.server.embedded_indexer is True
    assert s.limits.requests_per_second == 2.5


def test_overrides_beat_env_and_file_and_merge_per_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, '[server]\nlisten = "0.0.0.0:1"\nembedded_indexer = true\nmax_body_bytes = 4096\n')
    monkeypatch.setenv("LAGOON_SERVER__LISTEN", "0.0.0.0:2")
    monkeypatch.setenv("LAGOON_SERVER__MAX_BODY_BYTES", "8192")
    s = load_settings(path, {"server": {"listen": "0.0.0.0:3"}})
    assert s.server.listen == "0.0.0.0:3"  # flag > env > file
    assert s.server.max_body_bytes == 8192  # env > file
    assert s.server.embedded_indexer is True  # file only


def test_environ_false_ignores_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAGOON_CONFIG", str(write(tmp_path, '[storage]\nroot = "/x"\n')))
    monkeypatch.setenv("LAGOON_STORAGE__BUCKET", "env")
    monkeypatch.setenv("LAGOON_STORAGE__BUKET", "typo, but ignored")
    assert load_settings(environ=False) == Settings()


def test_direct_construction_reads_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAGOON_STORAGE__ROOT", "/env")
    assert Settings().storage.root == "./lagoon-data"
    assert Settings(storage=StorageSettings(backend="memory")).storage.backend == "memory"
    assert load_settings().storage.root == "/env"


def test_sections_are_not_shared_between_instances() -> None:
    a, b = Settings(), Settings()
    a.server.listen = "10.0.0.1:80"
    assert b.server.listen == "127.0.0.1:8080"
    assert Settings().server.listen == "127.0.0.1:8080"


# --- strictness: unknown keys and bad values name the key ------------------------------------


def test_unknown_key_in_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[storage]\nbuket = "x"\n')
    msg = error_of(path)
    assert "storage.buket" in msg and str(path) in msg


def test_unknown_section_in_file(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, "[storrage]\nbucket = 'x'\n"))
    assert "storrage" in msg


def test_top_level_scalar_in_file(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, 'storage = "s3"\n'))
    assert "'storage' must be a section" in msg


def test_unknown_env_key_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAGOON_STORAGE__BUKET", "x")
    msg = error_of()
    assert "storage.buket" in msg and "LAGOON_STORAGE__BUKET" in msg


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("LAGOON_FOO__BAR", "'foo'"),
        ("LAGOON_STORAGE", "set one key at a time"),
        ("LAGOON_STORAGE__BUCKET__X", "storage.bucket__x"),
    ],
)
def test_env_vars_that_are_not_settings(monkeypatch: pytest.MonkeyPatch, name: str, expected: str) -> None:
    monkeypatch.setenv(name, "1")
    msg = error_of()
    assert expected in msg and name in msg


def test_lagoon_config_is_not_a_setting_but_allowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAGOON_CONFIG", str(write(tmp_path, "")))
    assert load_settings() == Settings()


def test_unknown_override_key() -> None:
    msg = error_of(None, {"storage": {"buket": "x"}})
    assert "storage.buket" in msg and "command line" in msg


def test_wrong_type_in_file_names_key_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\nmax_body_bytes = "lots"\n')
    msg = error_of(path)
    assert "server.max_body_bytes" in msg and str(path) in msg and "'lots'" in msg


def test_wrong_type_in_env_names_key_and_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAGOON_INDEXER__COMPACTION_FANIN", "many")
    msg = error_of()
    assert "indexer.compaction_fanin" in msg and "LAGOON_INDEXER__COMPACTION_FANIN" in msg


def test_wrong_value_in_override_names_key() -> None:
    msg = error_of(None, {"storage": {"backend": "ftp"}})
    assert "storage.backend" in msg and "command line" in msg


def test_out_of_range_value() -> None:
    assert "indexer.compaction_fanin" in error_of(None, {"indexer": {"compaction_fanin": 1}})


def test_error_is_one_line_per_load(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, '[server]\nlisten = "nope"\nmax_body_bytes = -1\n'))
    assert "\n" not in msg
    assert "server.listen" in msg and "server.max_body_bytes" in msg


def test_missing_config_file(tmp_path: Path) -> None:
    assert "not found" in error_of(tmp_path / "absent.toml")


def test_invalid_toml_names_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[server\nlisten = 1\n")
    msg = error_of(path)
    assert str(path) in msg and "TOML" in msg


@pytest.mark.parametrize("listen", ["8080", ":8080", "host:", "host:0", "host:70000", "host:http"])
def test_listen_must_be_host_port(listen: str) -> None:
    assert "server.listen" in error_of(None, {"server": {"listen": listen}})


@pytest.mark.parametrize("prefix", ["/lagoon/", "lagoon"])
def test_prefix_shape(prefix: str) -> None:
    assert "storage.prefix" in error_of(None, {"storage": {"prefix": prefix}})


def test_s3_needs_a_bucket() -> None:
    assert "storage.bucket is required" in error_of(None, {"storage": {"backend": "s3"}})


def test_kms_key_needs_kms_sse() -> None:
    msg = error_of(None, {"storage": {"sse": "AES256", "sse_kms_key_id": "arn:x"}})
    assert "storage.sse_kms_key_id" in msg


def test_sse_values() -> None:
    for sse in ("", "AES256", "aws:kms"):
        assert load_settings(None, {"storage": {"sse": sse}}).storage.sse == sse
    assert "storage.sse" in error_of(None, {"storage": {"sse": "aes256"}})


def test_assignment_is_validated() -> None:
    s = Settings()
    with pytest.raises(ValueError, match="listen"):
        s.server = ServerSettings(listen="bad")


# --- printing: redaction and TOML ------------------------------------------------------------


class _WithSecrets(BaseModel):
    class Section(config.AuthSettings):
        api_token: str = ""
        password: SecretStr = SecretStr("")
        webhook: str = ""

    auth: Section = Section()


def test_redacted_dict_masks_secret_looking_values() -> None:
    s = _WithSecrets(
        auth=_WithSecrets.Section(
            keys_file="/etc/keys.toml",
            api_token="tok-123",
            password=SecretStr("hunter2"),
            webhook="https://user:pw@hooks.example/x?token=abc&team=1",
        )
    )
    out = redacted_dict(s)["auth"]
    assert out["keys_file"] == "/etc/keys.toml"
    assert out["api_token"] == REDACTED and out["password"] == REDACTED
    assert "pw@" not in out["webhook"] and "abc" not in out["webhook"] and "team=1" in out["webhook"]
    text = repr(out)
    for secret in ("tok-123", "hunter2", "pw", "abc"):
        assert f"'{secret}'" not in text and f":{secret}@" not in text and f"={secret}" not in text


def test_redacted_dict_keeps_empty_secrets_visible_as_empty() -> None:
    out = redacted_dict(_WithSecrets())["auth"]
    assert out["api_token"] == "" and out["password"] == ""


def test_redacted_dict_masks_api_keys_and_url_passwords_in_real_settings() -> None:
    s = load_settings(
        None,
        {
            "storage": {"endpoint": "http://minio:miniosecret@minio:9000"},
            "observability": {"otlp_endpoint": "https://otel/v1?api_key=k1&x=y", "audit_log": "lgn_ab_cdef"},
        },
    )
    out = redacted_dict(s)
    assert out["storage"]["endpoint"] == f"http://minio:{REDACTED}@minio:9000"
    assert "k1" not in out["observability"]["otlp_endpoint"]
    assert out["observability"]["audit_log"] == f"lgn_ab_{REDACTED}"
    assert out["storage"]["sse_kms_key_id"] == ""  # a key *id* is not a secret


def test_settings_have_no_secret_fields() -> None:
    """By design: credentials come from the AWS chain. A new secret field needs a redaction review."""
    for section in config.sections().values():
        for name, info in section.model_fields.items():
            assert not config.is_secret_name(name), name
            assert info.annotation not in (SecretStr,), name


def test_toml_round_trip(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, GUIDE_TOML))
    printed = to_toml(s, header="resolved\nby a test")
    assert printed.startswith("# resolved\n# by a test\n")
    assert load_settings(write(tmp_path, printed, "printed.toml")) == s


def test_toml_round_trip_of_unset_optionals_and_awkward_strings(tmp_path: Path) -> None:
    s = load_settings(
        None,
        {
            "storage": {"root": 'C:\\data\\"lagoon"\n\t\x01\x7f é ☃'},
            "observability": {"audit_log": "# not a comment"},
            "limits": {"max_namespaces": 5},
        },
    )
    assert s.limits.requests_per_second is None
    printed = to_toml(s)
    assert "# requests_per_second is unset" in printed
    assert load_settings(write(tmp_path, printed)) == s


def test_toml_scalars() -> None:
    assert config.toml_value(True) == "true"
    assert config.toml_value(3) == "3"
    assert config.toml_value(0.5) == "0.5"
    assert tomllib.loads(f"x = {config.toml_value(1e-300)}")["x"] == 1e-300
    assert config.toml_value(math.inf) == "inf" and config.toml_value(-math.inf) == "-inf"
    assert config.toml_value(math.nan) == "nan"
    when = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert config.toml_value(when) == "2025-01-02T03:04:05Z"
    assert tomllib.loads(f"t = {config.toml_value(when)}")["t"] == when
    with pytest.raises(TypeError):
        config.toml_value([1])
    with pytest.raises(TypeError):
        config.toml_value(dt.datetime(2025, 1, 1))  # naive: ambiguous


def test_dumps_toml_quotes_non_bare_keys() -> None:
    text = config.dumps_toml({"a.b": {"c d": 1}})
    assert tomllib.loads(text) == {"a.b": {"c d": 1}}


def test_json_output_is_redacted() -> None:
    s = load_settings(None, {"storage": {"endpoint": "http://u:p4ss@h:1"}})
    text = config.to_json(s)
    assert "p4ss" not in text and '"max_namespaces": null' in text


# --- documentation ---------------------------------------------------------------------------


def test_every_setting_has_a_description_and_a_cost() -> None:
    for section, model in config.sections().items():
        for key, info in model.model_fields.items():
            assert info.description, f"{section}.{key} has no description"
            assert config.field_cost(info), f"{section}.{key} has no cost"


def test_configuration_doc_is_up_to_date() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    begin, end = "<!-- BEGIN settings-table -->\n", "<!-- END settings-table -->"
    assert begin in doc and end in doc
    table = doc.split(begin, 1)[1].split(end, 1)[0]
    assert table == settings_table_markdown(), (
        "docs/configuration.md is out of date; regenerate the table with\n"
        "  .venv/bin/python -c 'from lagoon.config import settings_table_markdown as t; print(t(), end=\"\")'"
    )


def test_table_lists_every_key_with_its_env_var() -> None:
    table = settings_table_markdown()
    for section, model in config.sections().items():
        for key in model.model_fields:
            assert f"`{section}.{key}`" in table
            assert f"`{config.env_var_name(section, key)}`" in table


KUBERNETES_SERVICE_LINKS = {
    "LAGOON_SERVER_SERVICE_HOST": "10.96.0.12",
    "LAGOON_SERVER_SERVICE_PORT": "8080",
    "LAGOON_SERVER_SERVICE_PORT_HTTP": "8080",
    "LAGOON_SERVER_PORT": "tcp://10.96.0.12:8080",
    "LAGOON_SERVER_PORT_8080_TCP": "tcp://10.96.0.12:8080",
    "LAGOON_SERVER_PORT_8080_TCP_PROTO": "tcp",
    "LAGOON_SERVER_PORT_8080_TCP_PORT": "8080",
    "LAGOON_SERVER_PORT_8080_TCP_ADDR": "10.96.0.12",
}


def test_kubernetes_service_link_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    from lagoon.config import ignored_environment

    for name, value in KUBERNETES_SERVICE_LINKS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LAGOON_STORAGE__BUCKET", "still-read")
    settings = load_settings()
    assert settings.storage.bucket == "still-read"
    assert ignored_environment(settings) == sorted(KUBERNETES_SERVICE_LINKS)


def test_near_misses_get_a_suggestion(monkeypatch: pytest.MonkeyPatch) -> None:
    from lagoon.config import ignored_environment

    monkeypatch.setenv("LAGOON_STORAG__BUCKET", "x")
    assert "did you mean LAGOON_STORAGE__BUCKET?" in error_of()
    monkeypatch.delenv("LAGOON_STORAG__BUCKET")
    monkeypatch.setenv("LAGOON_STORAGE__BUKET", "x")
    assert "did you mean LAGOON_STORAGE__BUCKET?" in error_of()
    monkeypatch.delenv("LAGOON_STORAGE__BUKET")
    monkeypatch.setenv("LAGOON_STORAGE_BUCKET", "x")  # one underscore: not a setting, but close to one
    assert ignored_environment(load_settings()) == [
        "LAGOON_STORAGE_BUCKET; did you mean LAGOON_STORAGE__BUCKET?"
    ]


def test_names_without_a_double_underscore_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    from lagoon.config import ignored_environment

    monkeypatch.setenv("LAGOON_STORAGEX", "1")
    assert ignored_environment(load_settings()) == ["LAGOON_STORAGEX"]


def test_server_boots_with_service_links_and_warns_once(tmp_path: Path) -> None:
    """lagoon-server with every service-link variable of the shipped Service: ready, one warning."""
    import json
    import os
    import subprocess
    import sys
    import time

    import httpx

    from tests.server.conftest import free_port, server_env

    port = free_port()
    env = server_env(tmp_path / "data", LAGOON_SERVER__PROCESSES="1", LAGOON_OBSERVABILITY__LOG_LEVEL="info")
    env.update(KUBERNETES_SERVICE_LINKS)
    exe = Path(sys.executable).parent / "lagoon-server"
    proc = subprocess.Popen(
        [str(exe), "--listen", f"127.0.0.1:{port}"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 60
        ready = False
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                pass
            if ready:
                break
            time.sleep(0.1)
        assert ready, f"exit {proc.poll()}"
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    lines = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    warnings = [x for x in lines if x["logger"] == "lagoon.config"]
    assert len(warnings) == 1 and warnings[0]["level"] == "warning", warnings
    assert warnings[0]["variables"] == sorted(KUBERNETES_SERVICE_LINKS)
    assert os.path.isdir(tmp_path / "data")
