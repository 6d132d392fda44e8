"""lagoon.auth: key format, the keys file, KeyStore authentication and reloads, roles."""

from __future__ import annotations

import datetime as dt
import os
import stat
import threading
from pathlib import Path

import pytest

from lagoon import auth
from lagoon.auth import KeyRecord, KeysFileError, KeyStore, Principal
from lagoon.config import AuthSettings
from lagoon.errors import Forbidden, InvalidRequest, Unauthorized, Unavailable

NOW = dt.datetime(2025, 3, 4, 5, 6, 7, tzinfo=dt.UTC)


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    return tmp_path / "etc" / "keys.toml"


def bump_mtime(path: Path) -> None:
    """Make sure a rewrite within the same mtime tick is still seen as a change."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


# --- key format ------------------------------------------------------------------------------


def test_generated_key_format() -> None:
    key, record = auth.generate_key("acme", "writer", now=NOW)
    prefix, key_id, secret = key.split("_", 2)
    assert prefix == "lgn" and key_id == record.key_id
    assert len(key_id) == 16 and all(c in "0123456789abcdef" for c in key_id)
    assert len(secret) == 43  # 256 bits, url-safe base64 without padding
    assert set(secret) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert record.hash == auth.hash_secret(secret) and len(record.hash) == 64
    assert (record.org, record.role, record.created, record.revoked) == ("acme", "writer", NOW, False)
    assert auth.parse_key(key) == (key_id, secret)
    assert auth.verify(record, secret) and not auth.verify(record, secret[:-1] + "x")


def test_generated_keys_differ() -> None:
    keys = {auth.generate_key("acme", "reader")[0] for _ in range(50)}
    assert len(keys) == 50


def test_parse_accepts_bearer_prefix_and_whitespace() -> None:
    key, record = auth.generate_key("acme", "reader")
    assert auth.parse_key(f"Bearer {key}")[0] == record.key_id
    assert auth.parse_key(f"  bearer   {key} ")[0] == record.key_id


@pytest.mark.parametrize(
    "token",
    [
        "",
        "Bearer ",
        "lgn_",
        "lgn_0123456789abcdef",
        "lgn_0123456789abcdef_short",
        "xyz_0123456789abcdef_" + "a" * 43,
        "lgn_0123456789ABCDEF_" + "a" * 43,
        "lgn_0123456789abcdef_" + "a" * 42 + "!",
        "lgn_0123456789abcdef_" + "a" * 500,
    ],
)
def test_parse_rejects_malformed_keys_without_echoing_them(token: str) -> None:
    with pytest.raises(Unauthorized) as info:
        auth.parse_key(token)
    assert str(info.value) == "invalid API key"


def test_org_and_role_checks() -> None:
    for org in ("acme", "a", "acme-1-prod", "0rg", "x" * 63):
        assert auth.check_org(org) == org
    for org in ("", "-acme", "a b", "x" * 64, "acme/other", "ü", "Acme", "acme.prod", "acme_x", "acme\n"):
        with pytest.raises(InvalidRequest):
            auth.check_org(org)
    assert auth.check_role("admin") == "admin"
    with pytest.raises(InvalidRequest, match="reader, writer, admin"):
        auth.check_role("root")


# --- roles -----------------------------------------------------------------------------------


def test_role_order() -> None:
    reader, writer, admin = (Principal("k", "o", r) for r in ("reader", "writer", "admin"))
    assert reader.allows("reader") and not reader.allows("writer") and not reader.allows("admin")
    assert writer.allows("reader") and writer.allows("writer") and not writer.allows("admin")
    assert admin.allows("reader") and admin.allows("writer") and admin.allows("admin")
    admin.require("admin")
    with pytest.raises(Forbidden, match="delete namespace needs the admin role") as info:
        writer.require("admin", "delete namespace")
    assert info.value.status == 403


def test_auth_off_principal_is_default_org_admin() -> None:
    assert Principal(key_id="", org="default", role="admin") == auth.AUTH_OFF_PRINCIPAL
    assert KeyStore.from_settings(AuthSettings()) is None


# --- the keys file ---------------------------------------------------------------------------


def test_create_writes_hash_not_secret(keys_file: Path) -> None:
    key, record = auth.create_key(keys_file, "acme", "writer")
    text = keys_file.read_text()
    secret = key.split("_", 2)[2]
    assert secret not in text and key not in text
    assert record.hash in text and f"[{record.key_id}]" in text
    assert auth.load_keys(keys_file) == {record.key_id: record}
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
    assert sorted(p.name for p in keys_file.parent.iterdir()) == ["keys.toml", "keys.toml.lock"]


def test_save_preserves_an_existing_mode(keys_file: Path) -> None:
    auth.create_key(keys_file, "acme", "writer")
    keys_file.chmod(0o640)
    auth.create_key(keys_file, "acme", "reader")
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o640
    assert len(auth.load_keys(keys_file)) == 2


def test_file_round_trip_is_sorted_by_creation(keys_file: Path) -> None:
    records = {}
    for i, role in enumerate(("admin", "reader", "writer")):
        _, r = auth.generate_key(f"org{i}", role, now=NOW - dt.timedelta(days=i))
        records[r.key_id] = r
    auth.save_keys(keys_file, records)
    assert auth.load_keys(keys_file) == records
    text = keys_file.read_text()
    assert text.index("org2") < text.index("org1") < text.index("org0")


def test_concurrent_creates_do_not_lose_keys(keys_file: Path) -> None:
    created: list[KeyRecord] = []

    def create() -> None:
        for _ in range(5):
            created.append(auth.create_key(keys_file, "acme", "reader")[1])

    threads = [threading.Thread(target=create) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(auth.load_keys(keys_file)) == {r.key_id for r in created}
    assert len(created) == 20


def test_revoke(keys_file: Path) -> None:
    key, record = auth.create_key(keys_file, "acme", "writer")
    revoked, already = auth.revoke_key(keys_file, record.key_id)
    assert revoked.revoked and not already
    assert auth.load_keys(keys_file)[record.key_id].revoked
    _, already = auth.revoke_key(keys_file, key)  # the whole key works too
    assert already
    with pytest.raises(KeysFileError, match="no key"):
        auth.revoke_key(keys_file, "0" * 16)


def test_missing_file(keys_file: Path) -> None:
    with pytest.raises(KeysFileError, match="not found"):
        auth.load_keys(keys_file)
    with pytest.raises(KeysFileError, match="not found"):
        auth.revoke_key(keys_file, "0" * 16)


VALID_ENTRY = {
    "hash": '"' + "a" * 64 + '"',
    "org": '"acme"',
    "role": '"reader"',
    "created": "2025-01-01T00:00:00Z",
    "revoked": "false",
}


def entry_text(key_id: str = "0123456789abcdef", **changes: str | None) -> str:
    fields = {**VALID_ENTRY, **changes}
    return f"[{key_id}]\n" + "".join(f"{k} = {v}\n" for k, v in fields.items() if v is not None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (entry_text(revokd="true"), "unknown field(s) revokd"),
        (entry_text(org=None), "missing field(s) org"),
        (entry_text(hash='"abc"'), "hash must be"),
        (entry_text(role='"root"'), "role must be one of"),
        (entry_text(org='"a b"'), "invalid org"),
        (entry_text(created="2025-01-01T00:00:00"), "time zone"),
        (entry_text(created='"yesterday"'), "RFC 3339"),
        (entry_text(revoked='"no"'), "revoked must be"),
        (entry_text(key_id="NOT-HEX"), "16 lowercase hex"),
        ("0123456789abcdef = 1\n", "must be a table"),
        ("[broken\n", "not valid TOML"),
    ],
)
def test_keys_file_is_strict(keys_file: Path, text: str, expected: str) -> None:
    keys_file.parent.mkdir(parents=True)
    keys_file.write_text(text)
    with pytest.raises(KeysFileError) as info:
        auth.load_keys(keys_file)
    assert expected in str(info.value) and str(keys_file) in str(info.value)


def test_keys_file_accepts_string_dates_and_default_revoked(keys_file: Path) -> None:
    keys_file.parent.mkdir(parents=True)
    keys_file.write_text(entry_text(created='"2025-01-01T00:00:00+02:00"', revoked=None))
    (record,) = auth.load_keys(keys_file).values()
    assert record.created == dt.datetime(2024, 12, 31, 22, 0, tzinfo=dt.UTC)
    assert record.revoked is False


# --- KeyStore --------------------------------------------------------------------------------


def test_authenticate(keys_file: Path) -> None:
    key, record = auth.create_key(keys_file, "acme", "writer")
    store = KeyStore(keys_file)
    assert store.authenticate(key) == Principal(record.key_id, "acme", "writer")
    assert store.authenticate(f"Bearer {key}").org == "acme"


def test_wrong_secret_and_unknown_id_look_the_same(keys_file: Path) -> None:
    key, record = auth.create_key(keys_file, "acme", "writer")
    store = KeyStore(keys_file)
    wrong_secret = auth.format_key(record.key_id, "A" * 43)
    unknown_id = auth.format_key("f" * 16, key.split("_", 2)[2])
    messages = set()
    for token in (wrong_secret, unknown_id, "garbage"):
        with pytest.raises(Unauthorized) as info:
            store.authenticate(token)
        assert info.value.status == 401
        messages.add(str(info.value))
    assert messages == {"invalid API key"}


def test_revocation_is_seen_without_restart(keys_file: Path) -> None:
    key, record = auth.create_key(keys_file, "acme", "admin")
    store = KeyStore(keys_file)
    store.authenticate(key)
    auth.revoke_key(keys_file, record.key_id)
    with pytest.raises(Unauthorized, match="revoked"):
        store.authenticate(key)
    wrong = auth.format_key(record.key_id, "B" * 43)
    with pytest.raises(Unauthorized) as info:  # revocation is not revealed without the secret
        store.authenticate(wrong)
    assert "revoked" not in str(info.value)


def test_new_keys_are_seen_without_restart(keys_file: Path) -> None:
    auth.create_key(keys_file, "acme", "admin")
    store = KeyStore(keys_file)
    key, _ = auth.create_key(keys_file, "beta", "reader")
    assert store.authenticate(key).org == "beta"


def test_in_place_edit_is_seen(keys_file: Path) -> None:
    key, _ = auth.create_key(keys_file, "acme", "reader")
    store = KeyStore(keys_file)
    keys_file.write_text(keys_file.read_text().replace('role = "reader"', 'role = "admin"'))
    bump_mtime(keys_file)
    assert store.authenticate(key).role == "admin"


def test_unreadable_change_fails_closed_then_recovers(keys_file: Path) -> None:
    key, _ = auth.create_key(keys_file, "acme", "reader")
    store = KeyStore(keys_file)
    good = keys_file.read_text()
    keys_file.write_text(good.replace("revoked = false", "revokd = true"))
    bump_mtime(keys_file)
    with pytest.raises(Unavailable, match="keys file changed and cannot be read") as info:
        store.authenticate(key)
    assert info.value.retryable
    assert "revokd" in info.value.detail and "revokd" not in info.value.message  # the log's, not a client's
    keys_file.write_text(good)
    bump_mtime(keys_file)
    bump_mtime(keys_file)
    assert store.authenticate(key).org == "acme"
    keys_file.unlink()
    with pytest.raises(Unavailable) as info:
        store.authenticate(key)
    assert "not found" in info.value.detail


def test_store_refuses_to_start_on_a_bad_or_missing_file(keys_file: Path) -> None:
    with pytest.raises(KeysFileError):
        KeyStore(keys_file)
    with pytest.raises(KeysFileError):
        KeyStore.from_settings(AuthSettings(keys_file=str(keys_file)))
    auth.create_key(keys_file, "acme", "reader")
    store = KeyStore.from_settings(AuthSettings(keys_file=str(keys_file)))
    assert store is not None and len(store.keys()) == 1
