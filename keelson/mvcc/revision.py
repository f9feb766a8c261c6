"""Revisions and their on-disk encoding.

Theory of operation. A revision is (main, sub): every write transaction takes the next main
revision, each key it changes the next sub revision inside it. The ``key`` bucket is keyed by
17 bytes, ``main`` (8 bytes big-endian) ``_`` ``sub`` (8 bytes big-endian), so byte order is
revision order; a tombstone (a deletion) has one more byte, ``t``. Since every main revision
has at most one entry per sub revision, ``rev`` and ``rev + "t"`` never both exist.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

KEY_BUCKET = b"key"
"""Bucket of the key space's history: revision key -> encoded KeyValue."""

REV_BYTES_LEN = 17
_REV = struct.Struct(">QcQ")
_TOMBSTONE = b"t"


class Revision(NamedTuple):
    """(main, sub); compares as a tuple, so revision order is tuple order."""

    main: int
    sub: int = 0


def rev_to_bytes(rev: Revision, *, tombstone: bool = False) -> bytes:
    """The bucket key of ``rev`` (with the tombstone mark when it records a deletion)."""
    raw = _REV.pack(rev.main, b"_", rev.sub)
    return raw + _TOMBSTONE if tombstone else raw


def rev_key(main: int, sub: int) -> bytes:
    """``rev_to_bytes(Revision(main, sub))`` without building the Revision (the put path)."""
    return _REV.pack(main, b"_", sub)


def bytes_to_rev(raw: bytes) -> Revision:
    """Decode a bucket key; the tombstone byte, if any, is ignored."""
    if len(raw) not in (REV_BYTES_LEN, REV_BYTES_LEN + 1):
        raise ValueError(f"bad revision key of {len(raw)} bytes")
    main, _, sub = _REV.unpack_from(raw)
    return Revision(main, sub)


def is_tombstone(raw: bytes) -> bool:
    """True when the bucket key ``raw`` records a deletion."""
    return len(raw) == REV_BYTES_LEN + 1 and raw[-1:] == _TOMBSTONE


def main_rev_start(main: int) -> bytes:
    """The smallest bucket key of main revision ``main`` (for range scans)."""
    return _REV.pack(main, b"_", 0)
