"""The command-line programs: config resolution and errors, --print-config, keys, docs coverage."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tomllib
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from lagoon import auth
from lagoon.cli import common, main, server, worker
from lagoon.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def invoke(command: click.Command, args: list[str], env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(command, args, env=env, catch_exceptions=False)


def write(tmp_path: Path, text: str, name: str = "lagoon.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def clean_subprocess_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("LAGOON_")}
    env.update(extra)
    return env


# --- lagoon-server / lagoon-worker: configuration -------------------------------------------


def test_print_config_in_a_real_process(tmp_path: Path) -> None:
    """The installed script, a config file, an env var and a flag: each wins where it should."""
    keys_file = tmp_path / "keys.toml"
    key, record = auth.create_key(keys_file, "acme", "admin")
    cfg = write(
        tmp_path,
        f'[server]\nlisten = "0.0.0.0:1"\nmax_body_bytes = 4096\n[storage]\nregion = "eu-west-1"\n'
        f'endpoint = "http://minio:topsecret@minio:9000"\n[auth]\nkeys_file = "{keys_file}"\n',
    )
    proc = subprocess.run(
        [str(BIN / "lagoon-server"), "--print-config", "--listen", "0.0.0.0:3"],
        env=clean_subprocess_env(LAGOON_CONFIG=str(cfg), LAGOON_SERVER__MAX_BODY_BYTES="8192"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    printed = tomllib.loads(proc.stdout)
    assert printed["server"]["listen"] == "0.0.0.0:3"  # flag
    assert printed["server"]["max_body_bytes"] == 8192  # env
    assert printed["storage"]["region"] == "eu-west-1"  # file
    assert printed["server"]["shutdown_grace_secs"] == 10.0  # default
    assert printed["auth"]["keys_file"] == str(keys_file)
    for secret in (key, key.split("_", 2)[2], record.hash, "topsecret"):
        assert secret not in proc.stdout and secret not in proc.stderr


def test_invalid_config_in_a_real_process_exits_2_naming_the_key() -> None:
    proc = subprocess.run(
        [str(BIN / "lagoon-server"), "--print-config"],
        env=clean_subprocess_env(LAGOON_STORAGE__BUKET="x"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "storage.buket" in lines[0] and "LAGOON_STORAGE__BUKET" in lines[0]


def test_printed_config_reads_back_unchanged(tmp_path: Path) -> None:
    result = invoke(
        server.command,
        ["--print-config", "--embedded-indexer", "--set", "limits.max_namespaces=7", "--storage-root", "/d"],
    )
    assert result.exit_code == 0, result.output
    printed = write(tmp_path, result.stdout, "printed.toml")
    expected = load_settings(
        None,
        {
            "server": {"embedded_indexer": True},
            "storage": {"root": "/d"},
            "limits": {"max_namespaces": 7},
        },
    )
    assert load_settings(printed) == expected


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--listen", "nowhere"], {}, "server.listen"),
        (["--set", "storage.buket=x"], {}, "storage.buket"),
        (["--set", "server.max_body_bytes=lots"], {}, "server.max_body_bytes"),
        (["--set", "nonsense"], {}, "SECTION.KEY=VALUE"),
        (["--storage-backend", "s3"], {}, "storage.bucket"),
        ([], {"LAGOON_SERVER__LISTN": "x"}, "server.listn"),
        ([], {"LAGOON_CACHE__DISK_BYTES": "-1"}, "cache.disk_bytes"),
        (["--config", "/does/not/exist.toml"], {}, "/does/not/exist.toml"),
    ],
)
def test_server_invalid_config_exits_2_with_one_line(
    args: list[str], env: dict[str, str], named: str
) -> None:
    result = invoke(server.command, [*args, "--print-config"], env=env)
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and named in lines[0]


def test_unknown_key_in_config_file_names_key_and_file(tmp_path: Path) -> None:
    cfg = write(tmp_path, "[observability]\nlog_fromat = 'text'\n")
    result = invoke(server.command, ["--config", str(cfg), "--print-config"])
    assert result.exit_code == 2
    assert "observability.log_fromat" in result.stderr and str(cfg) in result.stderr


def test_flag_not_given_does_not_override(tmp_path: Path) -> None:
    cfg = write(tmp_path, "[server]\nembedded_indexer = true\n[observability]\nlog_format = 'text'\n")
    result = invoke(server.command, ["--config", str(cfg), "--print-config"])
    printed = tomllib.loads(result.stdout)
    assert printed["server"]["embedded_indexer"] is True
    assert printed["observability"]["log_format"] == "text"
    result = invoke(server.command, ["--config", str(cfg), "--no-embedded-indexer", "--print-config"])
    assert tomllib.loads(result.stdout)["server"]["embedded_indexer"] is False


def test_named_flag_beats_set() -> None:
    result = invoke(
        server.command, ["--set", "server.listen=1.1.1.1:1", "--listen", "2.2.2.2:2", "--print-config"]
    )
    assert tomllib.loads(result.stdout)["server"]["listen"] == "2.2.2.2:2"


def test_worker_print_config() -> None:
    result = invoke(worker.command, ["--print-config", "--storage-backend", "memory", "--log-level", "debug"])
    assert result.exit_code == 0
    printed = tomllib.loads(result.stdout)
    assert printed["storage"]["backend"] == "memory"
    assert printed["observability"]["log_level"] == "debug"
    assert "lagoon-worker" in result.stdout.splitlines()[0]


def test_worker_invalid_config_exits_2() -> None:
    result = invoke(worker.command, ["--print-config"], env={"LAGOON_INDEXER__FLUSH_BYTES": "0"})
    assert result.exit_code == 2 and "indexer.flush_bytes" in result.stderr


# --- lagoon-server / lagoon-worker: starting the component -----------------------------------


def fake_component(monkeypatch: pytest.MonkeyPatch, name: str, result: Any = None) -> list[Settings]:
    calls: list[Settings] = []
    module = types.ModuleType(name)

    def run(settings: Settings) -> Any:
        calls.append(settings)
        logging.getLogger(name).info("running")
        return result

    module.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, name, module)
    return calls


def test_server_calls_lagoon_server_run_with_resolved_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_component(monkeypatch, "lagoon.server")
    result = invoke(
        server.command, ["--listen", "127.0.0.1:9999", "--embedded-indexer", "--log-format", "json"]
    )
    assert result.exit_code == 0, result.output
    (settings,) = calls
    assert settings.server.listen == "127.0.0.1:9999" and settings.server.embedded_indexer
    log_lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert log_lines[0]["msg"] == "lagoon-server starting" and log_lines[0]["level"] == "info"
    assert log_lines[1]["msg"] == "running" and log_lines[1]["logger"] == "lagoon.server"


def test_worker_calls_lagoon_worker_run(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_component(monkeypatch, "lagoon.worker", result=3)
    result = invoke(worker.command, ["--storage-backend", "memory"])
    assert result.exit_code == 3
    assert calls[0].storage.backend == "memory"


def test_missing_component_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lagoon.worker", None)  # import fails as if not installed
    result = invoke(worker.command, [])
    assert result.exit_code == 1
    assert "lagoon.worker" in result.stderr and "not part of this build" in result.stderr


def test_component_without_run_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lagoon.server", types.ModuleType("lagoon.server"))
    result = invoke(server.command, [])
    assert result.exit_code == 1 and "lagoon.server.run is not part of this build" in result.stderr


def test_component_with_a_missing_dependency_says_which(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_import(name: str) -> types.ModuleType:
        raise ModuleNotFoundError("No module named 'uvicorn_x'", name="uvicorn_x")

    monkeypatch.setattr(common, "import_module", broken_import)
    result = invoke(server.command, [])
    assert result.exit_code == 1 and "uvicorn_x" in result.stderr


def test_interrupt_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("lagoon.server")

    def run(settings: Settings) -> None:
        raise KeyboardInterrupt

    module.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "lagoon.server", module)
    assert invoke(server.command, []).exit_code == 130


def test_print_config_does_not_import_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lagoon.server", None)
    assert invoke(server.command, ["--print-config"]).exit_code == 0


# --- lagoon keys -----------------------------------------------------------------------------


def test_keys_create_list_revoke(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.toml"
    created = invoke(
        main.cli, ["keys", "create", "--org", "acme", "--role", "writer", "--keys-file", str(keys_file)]
    )
    assert created.exit_code == 0, created.output
    key = created.stdout.strip()
    assert created.stdout == key + "\n"  # the key alone on stdout, nothing else
    key_id, secret = auth.parse_key(key)
    assert "only time" in created.stderr and key_id in created.stderr and secret not in created.stderr
    assert secret not in keys_file.read_text()
    assert auth.KeyStore(keys_file).authenticate(key).role == "writer"

    listed = invoke(main.cli, ["keys", "list", "--keys-file", str(keys_file)])
    assert listed.exit_code == 0
    assert key_id in listed.stdout and "acme" in listed.stdout and "active" in listed.stdout
    record = auth.load_keys(keys_file)[key_id]
    assert secret not in listed.stdout and record.hash not in listed.stdout

    revoked = invoke(main.cli, ["keys", "revoke", key_id, "--keys-file", str(keys_file)])
    assert revoked.exit_code == 0 and f"Revoked key {key_id}" in revoked.stdout
    again = invoke(main.cli, ["keys", "revoke", key_id, "--keys-file", str(keys_file)])
    assert again.exit_code == 0 and "already revoked" in again.stdout
    rows = json.loads(invoke(main.cli, ["keys", "list", "--json", "--keys-file", str(keys_file)]).stdout)
    assert rows == [
        {"key_id": key_id, "org": "acme", "role": "writer", "created": rows[0]["created"], "revoked": True}
    ]
    assert rows[0]["created"].endswith("Z")


def test_keys_list_filters_by_org(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.toml"
    _, a = auth.create_key(keys_file, "acme", "reader")
    _, b = auth.create_key(keys_file, "beta", "admin")
    out = invoke(main.cli, ["keys", "list", "--org", "beta", "--keys-file", str(keys_file)]).stdout
    assert b.key_id in out and a.key_id not in out


def test_keys_file_from_config_and_env(tmp_path: Path) -> None:
    from_config = tmp_path / "a.toml"
    cfg = write(tmp_path, f'[auth]\nkeys_file = "{from_config}"\n', "lagoon.toml")
    result = invoke(main.cli, ["--config", str(cfg), "keys", "create", "--org", "o", "--role", "reader"])
    assert result.exit_code == 0 and from_config.exists()

    from_env = tmp_path / "b.toml"
    result = invoke(
        main.cli,
        ["keys", "create", "--org", "o", "--role", "admin"],
        env={"LAGOON_AUTH__KEYS_FILE": str(from_env)},
    )
    assert result.exit_code == 0 and from_env.exists()


def test_keys_without_a_keys_file_exit_2() -> None:
    result = invoke(main.cli, ["keys", "list"])
    assert result.exit_code == 2 and "--keys-file" in result.stderr


def test_explicit_keys_file_works_with_a_broken_config(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.toml"
    env = {"LAGOON_STORAGE__BUKET": "typo"}
    result = invoke(
        main.cli, ["keys", "create", "--org", "o", "--role", "reader", "--keys-file", str(keys_file)], env
    )
    assert result.exit_code == 0
    result = invoke(main.cli, ["keys", "list"], env)
    assert result.exit_code == 2 and "storage.buket" in result.stderr


@pytest.mark.parametrize(("org", "role"), [("a b", "reader"), ("acme", "root"), ("", "admin")])
def test_keys_create_validates_org_and_role(tmp_path: Path, org: str, role: str) -> None:
    keys_file = tmp_path / "keys.toml"
    result = invoke(main.cli, ["keys", "create", "--org", org, "--role", role, "--keys-file", str(keys_file)])
    assert result.exit_code == 2 and not keys_file.exists()


def test_keys_revoke_unknown_exits_1(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.toml"
    auth.create_key(keys_file, "acme", "reader")
    result = invoke(main.cli, ["keys", "revoke", "0" * 16, "--keys-file", str(keys_file)])
    assert result.exit_code == 1 and "no key" in result.stderr


def test_keys_list_of_a_broken_file_exits_1(tmp_path: Path) -> None:
    keys_file = write(tmp_path, "[0123456789abcdef]\nrole = 'god'\n", "keys.toml")
    result = invoke(main.cli, ["keys", "list", "--keys-file", str(keys_file)])
    assert result.exit_code == 1 and str(keys_file) in result.stderr


# --- lagoon config / version -----------------------------------------------------------------


def test_config_print_toml_and_json(tmp_path: Path) -> None:
    cfg = write(tmp_path, "[storage]\nendpoint = 'http://u:hunter2@minio:9000'\n")
    toml_out = invoke(main.cli, ["--config", str(cfg), "config", "print"])
    assert toml_out.exit_code == 0
    assert tomllib.loads(toml_out.stdout)["storage"]["endpoint"].startswith("http://u:***")
    json_out = invoke(
        main.cli, ["--config", str(cfg), "config", "print", "--format", "json", "--set", "cache.dir=/c"]
    )
    data = json.loads(json_out.stdout)
    assert data["cache"]["dir"] == "/c" and data["limits"]["max_namespaces"] is None
    assert "hunter2" not in toml_out.stdout + json_out.stdout


def test_config_print_invalid_exits_2() -> None:
    result = invoke(main.cli, ["config", "print", "--set", "server.nope=1"])
    assert result.exit_code == 2 and "server.nope" in result.stderr


def test_version() -> None:
    assert invoke(main.cli, ["version"]).stdout.startswith("lagoon ")
    assert invoke(main.cli, ["--version"]).stdout == invoke(main.cli, ["version"]).stdout


def test_lagoon_main_entry_point() -> None:
    with pytest.raises(SystemExit) as info:
        main.main(["version"])
    assert info.value.code == 0


def test_installed_scripts_exist() -> None:
    for name in ("lagoon", "lagoon-server", "lagoon-worker"):
        assert (BIN / name).exists(), name


# --- documentation ---------------------------------------------------------------------------


def command_paths(group: click.Group, prefix: str) -> Iterator[tuple[str, click.Command]]:
    for name, command in sorted(group.commands.items()):
        path = f"{prefix} {name}"
        yield path, command
        if isinstance(command, click.Group):
            yield from command_paths(command, path)


def test_every_command_and_option_is_documented() -> None:
    doc = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    commands: list[tuple[str, click.Command]] = [
        ("lagoon-server", server.command),
        ("lagoon-worker", worker.command),
        ("lagoon", main.cli),
        *command_paths(main.cli, "lagoon"),
    ]
    for path, command in commands:
        if not isinstance(command, click.Group) or path == "lagoon":
            assert f"{path}" in doc, f"{path} is not documented in docs/cli.md"
        for param in command.params:
            for opt in [*param.opts, *param.secondary_opts]:
                if opt.startswith("--") and opt != "--help":
                    assert opt in doc, f"{path} {opt} is not documented in docs/cli.md"
