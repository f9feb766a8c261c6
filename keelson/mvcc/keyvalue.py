"""The values of the key space: KeyValue, Event and their compact on-disk encoding.

Theory of operation. A ``KeyValue`` is what etcd's ``mvccpb.KeyValue`` holds: the key, its
value, the revision that created its current generation, the revision of this change, the
version inside the generation (1 on creation) and the lease id (0: none). The ``key`` bucket
stores one encoded KeyValue per revision; a tombstone stores only the key (every other field
zero), as etcd does. The encoding is a fixed header of five big-endian integers followed by
the key and the value; it never executes or unpickles anything.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

_HEADER = struct.Struct(">qqqqI")


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: bytes
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0
    value: bytes = b""
    lease: int = 0


def encode_kv(kv: KeyValue) -> bytes:
    header = _HEADER.pack(kv.create_revision, kv.mod_revision, kv.version, kv.lease, len(kv.key))
    return b"".join((header, kv.key, kv.value))


def decode_kv(raw: bytes) -> KeyValue:
    if len(raw) < _HEADER.size:
        raise ValueError(f"bad KeyValue record of {len(raw)} bytes")
    create, mod, version, lease, key_len = _HEADER.unpack_from(raw)
    end = _HEADER.size + key_len
    if end > len(raw):
        raise ValueError("bad KeyValue record: key runs past the end")
    return KeyValue(
        key=raw[_HEADER.size : end],
        create_revision=create,
        mod_revision=mod,
        version=version,
        value=raw[end:],
        lease=lease,
    )


class EventType(enum.IntEnum):
    """etcd's mvccpb.Event.EventType numbering."""

    PUT = 0
    DELETE = 1


@dataclass(frozen=True, slots=True)
class Event:
    """A change of one key. For DELETE, ``kv`` holds only the key and the deleting
    revision as ``mod_revision`` (as etcd sends it)."""

    type: EventType
    kv: KeyValue
    prev_kv: KeyValue | None = None

    def is_create(self) -> bool:
        """A PUT that started a new generation of its key."""
        return self.type == EventType.PUT and self.kv.version == 1
