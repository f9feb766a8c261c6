"""The values of the key space: KeyValue, Event and their compact on-disk encoding.

Theory of operation. A ``KeyValue`` is what etcd's ``mvccpb.KeyValue`` holds: the key, its
value, the revision that created its current generation, the revision of this change, the
version inside the generation (1 on creation) and the lease id (0: none). The ``key`` bucket
stores one encoded KeyValue per revision; a tombstone stores only the key (every other field
zero), as etcd does. The encoding is protobuf's wire format for mvccpb.KeyValue, written by
hand for this one message (no generated code on the apply path); it never executes or
unpickles anything.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

_U64 = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: bytes
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0
    value: bytes = b""
    lease: int = 0


def _varint(n: int, out: bytearray) -> None:
    n &= _U64  # int64 fields: negative values take ten bytes, as protobuf encodes them
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def encode_kv(kv: KeyValue) -> bytes:
    """The protobuf encoding of etcd's ``mvccpb.KeyValue`` (fields in number order, zero
    values left out), byte for byte what etcd stores, so HashKV agrees with etcd's."""
    out = bytearray()
    if kv.key:
        out.append(0x0A)
        _varint(len(kv.key), out)
        out += kv.key
    for tag, number in ((0x10, kv.create_revision), (0x18, kv.mod_revision),
                        (0x20, kv.version)):
        if number:
            out.append(tag)
            _varint(number, out)
    if kv.value:
        out.append(0x2A)
        _varint(len(kv.value), out)
        out += kv.value
    if kv.lease:
        out.append(0x30)
        _varint(kv.lease, out)
    return bytes(out)


def _read_varint(raw: bytes, pos: int) -> tuple[int, int]:
    shift = 0
    n = 0
    while True:
        if pos >= len(raw) or shift > 63:
            raise ValueError("bad KeyValue record: truncated varint")
        b = raw[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            break
        shift += 7
    n &= _U64
    return (n - (1 << 64) if n >> 63 else n), pos


def decode_kv(raw: bytes) -> KeyValue:
    """Decode ``encode_kv``'s output (or etcd's own record); ValueError if malformed."""
    fields: dict[int, int | bytes] = {}
    pos = 0
    while pos < len(raw):
        tag, pos = _read_varint(raw, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            fields[number], pos = _read_varint(raw, pos)
        elif wire == 2:
            length, pos = _read_varint(raw, pos)
            if length < 0 or pos + length > len(raw):
                raise ValueError("bad KeyValue record: field runs past the end")
            fields[number] = bytes(raw[pos : pos + length])
            pos += length
        else:
            raise ValueError(f"bad KeyValue record: wire type {wire}")

    def num(n: int) -> int:
        v = fields.get(n, 0)
        if not isinstance(v, int):
            raise ValueError(f"bad KeyValue record: field {n} is not a number")
        return v

    def data(n: int) -> bytes:
        v = fields.get(n, b"")
        if not isinstance(v, bytes):
            raise ValueError(f"bad KeyValue record: field {n} is not bytes")
        return v

    return KeyValue(key=data(1), create_revision=num(2), mod_revision=num(3),
                    version=num(4), value=data(5), lease=num(6))


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
