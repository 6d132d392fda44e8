"""Invariants of manifests, as pure predicates: checked before every manifest commit, and by repair.

Each function returns the violations it finds (empty: the invariant holds), so a committer can
refuse to commit (``require``: a violation before a commit is a bug, ``InternalError``) and
``lagoon repair`` can report what it finds in a bucket without stopping.

- ``manifest_problems(m)``: one version on its own — a version and a nonce, segment ids unique, no
  segment both live and pending deletion, seq ranges ordered, file sizes and checksums integers.
- ``successor_problems(base, new)``: a version made from ``base`` — the next version number, the
  parent link, ``indexed_through`` never going back, and a segment pending deletion in ``base``
  never live again (segment ids are never reused: GC relies on it, docs/design.md §5).
"""

from __future__ import annotations

from lagoon.errors import InternalError
from lagoon.format.manifest import Manifest


def manifest_problems(m: Manifest) -> list[str]:
    """What is wrong with ``m`` taken alone (see the module docstring)."""
    out: list[str] = []
    if m.version < 1:
        out.append(f"version {m.version} is not positive")
    if not m.nonce:
        out.append("the nonce is empty")
    if m.indexed_through < 0:
        out.append(f"indexed_through {m.indexed_through} is negative")
    ids = [s.id for s in m.segments]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        out.append(f"segments listed twice: {', '.join(dup)}")
    pending = {sid for r in m.pending_delete if (sid := r.segment_id) is not None}
    both = sorted(set(ids) & pending)
    if both:
        out.append(f"segments both live and pending deletion: {', '.join(both)}")
    for s in m.segments:
        if s.seq_from > s.seq_to:
            out.append(f"segment {s.id}: seq_from {s.seq_from} > seq_to {s.seq_to}")
        if s.rows < 0 or s.bytes < 0 or s.level < 0:
            out.append(f"segment {s.id}: negative rows, bytes or level")
        for name, f in s.files.items():
            if not all(isinstance(f.get(k), int) and f[k] >= 0 for k in ("size", "crc32c")):
                out.append(f"segment {s.id}: file {name} has no valid size and crc32c")
    return out


def successor_problems(base: Manifest | None, new: Manifest) -> list[str]:
    """What is wrong with ``new`` as the version made from ``base`` (None: the first version)."""
    out = manifest_problems(new)
    expected = (base.version if base else 0) + 1
    if new.version != expected:
        out.append(f"version {new.version} does not follow {expected - 1}")
    if base is None:
        return out
    if new.parent_nonce is not None and new.parent_nonce != base.nonce:
        out.append(f"parent nonce {new.parent_nonce[:16]} is not v{base.version}'s {base.nonce[:16]}")
    if new.indexed_through < base.indexed_through:
        out.append(f"indexed_through went back from {base.indexed_through} to {new.indexed_through}")
    was_pending = {sid for r in base.pending_delete if (sid := r.segment_id) is not None}
    revived = sorted(was_pending & {s.id for s in new.segments})
    if revived:
        out.append(f"segments pending deletion in v{base.version} are live again: {', '.join(revived)}")
    return out


def require(problems: list[str], what: str) -> None:
    """Raise ``InternalError`` naming every problem (a manifest that must not be committed)."""
    if problems:
        raise InternalError(f"{what} breaks manifest invariants: " + "; ".join(problems))


__all__ = ["manifest_problems", "require", "successor_problems"]
