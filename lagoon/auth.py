"""API keys: their format, the keys file, and turning a bearer token into a ``Principal``.

A key is ``lgn_<keyid>_<secret>``: ``keyid`` is 16 lowercase hex characters (not secret; it names
the key in logs and in the keys file), ``secret`` is 256 random bits, url-safe base64 (43 chars).
The keys file (``auth.keys_file``) is TOML, one table per key id::

    [0123456789abcdef]
    hash = "<SHA-256 hex of the secret>"
    org = "acme"
    role = "writer"            # reader < writer < admin
    created = 2025-01-01T00:00:00Z
    revoked = false

Invariants:
- The secret is shown once by ``lagoon keys create`` and never stored, logged or printed again;
  only its SHA-256 is kept (the secret has 256 bits of entropy, so a fast hash is enough).
- Verification compares digests with ``hmac.compare_digest`` and costs the same whether or not the
  key id exists; a revoked key is only reported as revoked to someone who holds its secret.
- The keys file is strict: an unknown field (say a misspelt ``revokd``) or bad value makes the
  whole file invalid rather than being ignored. Writes go to a temporary file renamed over the
  old one, under an advisory lock (``<file>.lock``), so readers never see half a file and
  concurrent ``lagoon keys`` commands do not lose each other's changes.
- ``KeyStore`` re-reads the file when its identity (mtime, size, inode) changes. If the changed
  file cannot be read, every request fails with ``Unavailable`` (fail closed) until it is fixed:
  serving the previous copy could keep honouring a key the operator just revoked.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import hmac
import os
import re
import secrets
import stat
import tempfile
import threading
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, get_args

from lagoon.config import AuthSettings, dumps_toml
from lagoon.errors import Forbidden, InvalidRequest, Unauthorized, Unavailable
from lagoon.format.keys import DEFAULT_ORG, ORG_RE, check_org

Role = Literal["reader", "writer", "admin"]
ROLES: tuple[Role, ...] = get_args(Role)
_RANK: dict[str, int] = {role: rank for rank, role in enumerate(ROLES)}

KEY_PREFIX = "lgn_"
_KEY_ID = re.compile(r"[0-9a-f]{16}")
_KEY = re.compile(r"lgn_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_RECORD_FIELDS = frozenset({"hash", "org", "role", "created", "revoked"})
_DUMMY_HASH = hashlib.sha256(b"lagoon: no such key").hexdigest()

_HEADER = """\
Lagoon API keys, managed with `lagoon keys`: key id -> SHA-256 of the secret, org, role.
Secrets are never stored here; a lost key cannot be recovered, only revoked and replaced."""


class KeysFileError(InvalidRequest):
    """The keys file is missing, unreadable, not TOML, or has an invalid entry."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key's id (``""`` when auth is off), its org and its role."""

    key_id: str
    org: str
    role: Role

    def allows(self, role: Role) -> bool:
        """True when this principal's role is ``role`` or above it (reader < writer < admin)."""
        return _RANK[self.role] >= _RANK[role]

    def require(self, role: Role, action: str = "this operation") -> None:
        """Raise Forbidden unless this principal's role is at least ``role``."""
        if not self.allows(role):
            raise Forbidden(f"{action} needs the {role} role; this API key has the {self.role} role")


AUTH_OFF_PRINCIPAL = Principal(key_id="", org=DEFAULT_ORG, role="admin")
"""Every request acts as this principal when no keys file is configured."""


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One entry of the keys file. ``hash`` is the SHA-256 hex digest of the key's secret."""

    key_id: str
    hash: str
    org: str
    role: Role
    created: dt.datetime
    revoked: bool = False


def hash_secret(secret: str) -> str:
    """SHA-256 hex digest of a key's secret part."""
    return hashlib.sha256(secret.encode()).hexdigest()


def format_key(key_id: str, secret: str) -> str:
    return f"{KEY_PREFIX}{key_id}_{secret}"


def parse_key(token: str) -> tuple[str, str]:
    """``(key_id, secret)`` of a key, accepting an optional ``Bearer `` prefix.

    Raises Unauthorized for anything that is not a well-formed key; the message never echoes it.
    """
    token = token.strip()
    if token[:7].lower() == "bearer ":
        token = token[7:].strip()
    m = _KEY.fullmatch(token) if len(token) < 128 else None
    if m is None:
        raise Unauthorized("invalid API key")
    return m.group(1), m.group(2)


def check_role(role: str) -> Role:
    for known in ROLES:
        if role == known:
            return known
    raise InvalidRequest(f"invalid role {role!r}: must be one of {', '.join(ROLES)}")


def generate_key(org: str, role: str, *, now: dt.datetime | None = None) -> tuple[str, KeyRecord]:
    """A new key and its record. The key (with its secret) is for the caller to show once."""
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    record = KeyRecord(
        key_id=key_id,
        hash=hash_secret(secret),
        org=check_org(org),
        role=check_role(role),
        created=(now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).replace(microsecond=0),
    )
    return format_key(key_id, secret), record


def verify(record: KeyRecord, secret: str) -> bool:
    """Constant-time check that ``secret`` hashes to ``record.hash``."""
    return hmac.compare_digest(hash_secret(secret), record.hash)


# --- the keys file ---------------------------------------------------------------------------


def load_keys(path: str | os.PathLike[str]) -> dict[str, KeyRecord]:
    """The keys file's records by key id. Raises KeysFileError naming the file and the entry."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise KeysFileError(f"keys file not found: {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise KeysFileError(f"keys file {path} is not valid TOML: {e}") from None
    except OSError as e:
        raise KeysFileError(f"cannot read keys file {path}: {e.strerror or e}") from None
    return {key_id: _record(path, key_id, entry) for key_id, entry in data.items()}


def _record(path: str | os.PathLike[str], key_id: str, entry: Any) -> KeyRecord:
    where = f"keys file {path}, key {key_id!r}"
    if not _KEY_ID.fullmatch(key_id):
        raise KeysFileError(f"{where}: a key id is 16 lowercase hex characters")
    if not isinstance(entry, dict):
        raise KeysFileError(f"{where}: must be a table [{key_id}]")
    if unknown := sorted(set(entry) - _RECORD_FIELDS):
        raise KeysFileError(f"{where}: unknown field(s) {', '.join(unknown)}")
    if missing := sorted(_RECORD_FIELDS - {"revoked"} - set(entry)):
        raise KeysFileError(f"{where}: missing field(s) {', '.join(missing)}")
    key_hash, org, role, created = entry["hash"], entry["org"], entry["role"], entry["created"]
    revoked = entry.get("revoked", False)
    if not isinstance(key_hash, str) or not _SHA256_HEX.fullmatch(key_hash):
        raise KeysFileError(f"{where}: hash must be 64 lowercase hex characters (SHA-256)")
    if not isinstance(org, str) or not ORG_RE.fullmatch(org):
        raise KeysFileError(f"{where}: invalid org {org!r}")
    if role not in ROLES:
        raise KeysFileError(f"{where}: role must be one of {', '.join(ROLES)}, got {role!r}")
    if isinstance(created, str):
        try:
            created = dt.datetime.fromisoformat(created)
        except ValueError:
            raise KeysFileError(f"{where}: created must be an RFC 3339 date-time") from None
    if not isinstance(created, dt.datetime) or created.tzinfo is None:
        raise KeysFileError(f"{where}: created must be an RFC 3339 date-time with a time zone")
    if not isinstance(revoked, bool):
        raise KeysFileError(f"{where}: revoked must be true or false")
    return KeyRecord(key_id, key_hash, org, check_role(role), created, revoked)


def dumps_keys(keys: Mapping[str, KeyRecord]) -> str:
    """The keys file text for ``keys`` (sorted by creation time, then id)."""
    ordered = sorted(keys.values(), key=lambda r: (r.created, r.key_id))
    tables = {
        r.key_id: {"hash": r.hash, "org": r.org, "role": r.role, "created": r.created, "revoked": r.revoked}
        for r in ordered
    }
    return dumps_toml(tables, header=_HEADER)


def save_keys(path: str | os.PathLike[str], keys: Mapping[str, KeyRecord]) -> None:
    """Replace the keys file atomically (temp file + fsync + rename; mode 0600 for a new file)."""
    target = Path(path)
    try:
        mode = stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        mode = 0o600
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(dumps_keys(keys))
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@contextlib.contextmanager
def locked_keys(path: str | os.PathLike[str], *, create: bool = False) -> Iterator[dict[str, KeyRecord]]:
    """Read-modify-write the keys file under an exclusive lock; saved if the block succeeds.

    With ``create``, a missing file starts empty (and is created on save).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{target}.lock", "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            keys = {} if create and not target.exists() else load_keys(target)
            before = dict(keys)
            yield keys
            if keys != before:
                save_keys(target, keys)
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def create_key(path: str | os.PathLike[str], org: str, role: str) -> tuple[str, KeyRecord]:
    """Generate a key, add it to the keys file (created if missing), and return it once."""
    with locked_keys(path, create=True) as keys:
        key, record = generate_key(org, role)
        while record.key_id in keys:  # pragma: no cover - 64-bit ids practically never collide
            key, record = generate_key(org, role)
        keys[record.key_id] = record
    return key, record


def revoke_key(path: str | os.PathLike[str], key_id: str) -> tuple[KeyRecord, bool]:
    """Mark ``key_id`` revoked. Returns the record and whether it was already revoked.

    Accepts a whole key too (only its id is used). Raises KeysFileError for an unknown id.
    """
    if key_id.startswith(KEY_PREFIX):
        key_id = key_id[len(KEY_PREFIX) :].partition("_")[0]
    with locked_keys(path) as keys:
        record = keys.get(key_id)
        if record is None:
            raise KeysFileError(f"no key {key_id!r} in {path}")
        if record.revoked:
            return record, True
        keys[key_id] = record = replace(record, revoked=True)
    return record, False


# --- serving ---------------------------------------------------------------------------------


class KeyStore:
    """Authenticates bearer tokens against the keys file, re-reading it whenever it changes."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        """Load the file now: a server configured with a bad or missing keys file must not start."""
        self.path = Path(path)
        self._lock = threading.Lock()
        self._identity = self._stat()
        self._keys: dict[str, KeyRecord] | None = load_keys(self.path)
        self._error = ""

    @classmethod
    def from_settings(cls, auth: AuthSettings) -> KeyStore | None:
        """The store for ``auth.keys_file``, or None when auth is off (no keys file)."""
        return cls(auth.keys_file) if auth.keys_file else None

    def _stat(self) -> tuple[int, int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev)

    def keys(self) -> dict[str, KeyRecord]:
        """The current records by key id; raises Unavailable while the changed file is unreadable."""
        identity = self._stat()
        with self._lock:
            if identity != self._identity:
                self._identity = identity
                try:
                    self._keys = load_keys(self.path)
                    self._error = ""
                except KeysFileError as e:
                    self._keys, self._error = None, str(e)
            if self._keys is None:
                raise Unavailable(
                    "API keys cannot be checked: the keys file changed and cannot be read", detail=self._error
                )
            return self._keys

    def authenticate(self, bearer: str) -> Principal:
        """The principal of a key (``Bearer `` prefix optional); Unauthorized if it is not valid.

        Unknown, malformed and wrong-secret keys get the same message; a revoked key is reported
        as revoked only after its secret checked out.
        """
        key_id, secret = parse_key(bearer)
        record = self.keys().get(key_id)
        ok = hmac.compare_digest(hash_secret(secret), record.hash if record else _DUMMY_HASH)
        if record is None or not ok:
            raise Unauthorized("invalid API key")
        if record.revoked:
            raise Unauthorized(f"API key {key_id} has been revoked")
        return Principal(key_id=record.key_id, org=record.org, role=record.role)


__all__ = [
    "AUTH_OFF_PRINCIPAL",
    "DEFAULT_ORG",
    "KEY_PREFIX",
    "ROLES",
    "KeyRecord",
    "KeyStore",
    "KeysFileError",
    "Principal",
    "Role",
    "check_org",
    "check_role",
    "create_key",
    "dumps_keys",
    "format_key",
    "generate_key",
    "hash_secret",
    "load_keys",
    "locked_keys",
    "parse_key",
    "revoke_key",
    "save_keys",
    "verify",
]
