"""Object keys: the one module that builds and parses every key Lagoon stores.

Layout under the store's prefix (the storage backend applies ``storage.prefix``):

    {org}/{ns}/wal/{seq:020d}.wal          immutable WAL entries; seq is dense 1, 2, 3, ...
    {org}/{ns}/manifest/{ver:020d}.json    immutable manifest versions; ver is dense 1, 2, 3, ...
    {org}/{ns}/manifest/CURRENT            hint: latest known manifest version (plain PUT, may lag)
    {org}/{ns}/seg/{segment_id}/{file}     immutable segment files (ids never reused)
    _lagoon/...                            cluster-wide objects, among them:
    _lagoon/catalog/{org}/ns/{ns}          namespace marker (listing: docs/formats/catalog.md)
    _lagoon/catalog/{org}/count.json       the org's namespace count
    _lagoon/quarantine/{org}/{ns}/{ms}/... objects ``lagoon repair`` moved aside (docs/operations.md)
    _lagoon/refs/{org}/{owner}/{branch}/{ms}-{nonce}  branch reference markers (docs/rfcs/0007-branches.md)
    _lagoon/operations/{org}/{ns}/{token}.json  an asynchronous operation (docs/formats/operations.md)

Org names match ``[a-z0-9][a-z0-9-]{0,62}`` so they never collide with ``_lagoon/``; namespace
names match ``[A-Za-z0-9-_.]{1,128}`` and are not ``.`` or ``..``. Nothing else concatenates keys.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lagoon.errors import InvalidRequest

ORG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
NAMESPACE_RE = re.compile(r"^[A-Za-z0-9\-_.]{1,128}$")
DEFAULT_ORG = "default"
CLUSTER_PREFIX = "_lagoon/"
_WAL_RE = re.compile(r"/wal/(\d{20})\.wal$")
_MANIFEST_RE = re.compile(r"/manifest/(\d{20})\.json$")


def check_namespace(name: str) -> str:
    if not isinstance(name, str) or not NAMESPACE_RE.fullmatch(name) or name in (".", ".."):
        raise InvalidRequest(
            f"invalid namespace name {name!r:.140}: use 1-128 characters from A-Z a-z 0-9 - _ . "
            "(not '.' or '..')"
        )
    return name


def check_org(org: str) -> str:
    """``org`` if it is a valid org name (``ORG_RE``: it is the first part of every key)."""
    if not ORG_RE.fullmatch(org):
        raise InvalidRequest(
            f"invalid org {org!r}: 1-63 lowercase letters, digits or '-', starting with a letter or digit"
        )
    return org


@dataclass(frozen=True, slots=True)
class NamespaceKeys:
    """Keys of one namespace; construct with validated org and namespace names."""

    org: str
    namespace: str

    @staticmethod
    def of(org: str, namespace: str) -> NamespaceKeys:
        return NamespaceKeys(check_org(org), check_namespace(namespace))

    @property
    def root(self) -> str:
        return f"{self.org}/{self.namespace}/"

    @property
    def wal_prefix(self) -> str:
        return f"{self.root}wal/"

    def wal(self, seq: int) -> str:
        return f"{self.root}wal/{seq:020d}.wal"

    @property
    def manifest_prefix(self) -> str:
        return f"{self.root}manifest/"

    def manifest(self, version: int) -> str:
        return f"{self.root}manifest/{version:020d}.json"

    @property
    def current(self) -> str:
        return f"{self.root}manifest/CURRENT"

    @property
    def segment_prefix(self) -> str:
        return f"{self.root}seg/"

    def segment_file(self, segment_id: str, name: str) -> str:
        return f"{self.root}seg/{segment_id}/{name}"

    def sibling(self, namespace: str | None) -> NamespaceKeys:
        """The keys of ``namespace`` in the same org (None: this namespace): where a branch finds
        the segments and WAL entries its manifest says another namespace owns."""
        if namespace is None or namespace == self.namespace:
            return self
        return NamespaceKeys(self.org, namespace)


def org_prefix(org: str) -> str:
    return f"{check_org(org)}/"


def parse_wal_seq(key: str) -> int | None:
    m = _WAL_RE.search(key)
    return int(m.group(1)) if m else None


def parse_manifest_version(key: str) -> int | None:
    m = _MANIFEST_RE.search(key)
    return int(m.group(1)) if m else None


def namespace_from_prefix(prefix: str) -> str:
    """'default/docs/' -> 'docs'."""
    return prefix.rstrip("/").rsplit("/", 1)[-1]


def queue_key() -> str:
    return f"{CLUSTER_PREFIX}queue/indexing.json"


CATALOG_PREFIX = f"{CLUSTER_PREFIX}catalog/"


def catalog_markers_prefix(org: str) -> str:
    """``_lagoon/catalog/{org}/ns/``: one marker object per existing namespace of ``org``."""
    return f"{CATALOG_PREFIX}{check_org(org)}/ns/"


def catalog_marker(org: str, namespace: str) -> str:
    return f"{catalog_markers_prefix(org)}{check_namespace(namespace)}"


def catalog_org(org: str) -> str:
    """``_lagoon/catalog/{org}/count.json``: the org's namespace count and completeness."""
    return f"{CATALOG_PREFIX}{check_org(org)}/count.json"


def namespace_from_marker(key: str) -> str:
    """'_lagoon/catalog/default/ns/docs' -> 'docs'."""
    return key.rsplit("/", 1)[-1]


QUARANTINE_PREFIX = f"{CLUSTER_PREFIX}quarantine/"


def quarantine_key(keys: NamespaceKeys, relative: str, stamp_ms: int) -> str:
    """``_lagoon/quarantine/{org}/{ns}/{stamp_ms}/{relative}``: where ``lagoon repair`` moves a
    damaged or stray object of a namespace (``relative``: its key below the namespace root)."""
    return f"{QUARANTINE_PREFIX}{keys.org}/{keys.namespace}/{stamp_ms:013d}/{relative}"


REFS_PREFIX = f"{CLUSTER_PREFIX}refs/"


def refs_prefix(keys: NamespaceKeys) -> str:
    """``_lagoon/refs/{org}/{owner}/``: the reference markers of the branches that may read the
    objects of ``keys``'s namespace (its GC re-reads them before deleting; docs/rfcs/0007)."""
    return f"{REFS_PREFIX}{keys.org}/{keys.namespace}/"


def ref_marker(owner: NamespaceKeys, branch: str, stamp_ms: int, nonce: str) -> str:
    """One branch creation's marker in ``owner``: unique per attempt, so a GC that judged an old
    marker stale can never delete a newer creation's marker."""
    return f"{refs_prefix(owner)}{check_namespace(branch)}/{stamp_ms:013d}-{nonce}"


def parse_ref_marker(owner: NamespaceKeys, key: str) -> tuple[str, int] | None:
    """(branch namespace, stamp ms) of a marker key under ``refs_prefix(owner)``, or None."""
    rest = key[len(refs_prefix(owner)) :] if key.startswith(refs_prefix(owner)) else ""
    branch, _, name = rest.partition("/")
    stamp = name.split("-", 1)[0]
    if not branch or not stamp.isdigit() or not NAMESPACE_RE.fullmatch(branch):
        return None
    return branch, int(stamp)


OPERATIONS_PREFIX = f"{CLUSTER_PREFIX}operations/"
OPERATION_TOKEN_RE = re.compile(r"^[0-9a-f]{32}$")


def operation_key(org: str, namespace: str, token: str) -> str:
    """``_lagoon/operations/{org}/{ns}/{token}.json``: one asynchronous operation (a copy) whose
    destination is ``namespace``; ``token`` is 32 lowercase hex digits (``OPERATION_TOKEN_RE``)."""
    if not OPERATION_TOKEN_RE.fullmatch(token):
        raise InvalidRequest(f"invalid operation token {token!r:.80}")
    return f"{OPERATIONS_PREFIX}{check_org(org)}/{check_namespace(namespace)}/{token}.json"
