"""Damage an object of an fs bucket by hand, as an operator's storage incident would (the
damage tests of tests/engine share these)."""

from __future__ import annotations

from pathlib import Path


def truncated(p: Path) -> None:
    """Cut the file to half its size (a torn write)."""
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def flipped(p: Path) -> None:
    """Flip one bit in the middle of the file (a checksum must catch it)."""
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x10
    p.write_bytes(bytes(data))
