"""The record encoding of WAL segments: compact, struct-based, chained CRC32C.

Every record on disk is one frame::

    length  u32 LE   bytes of payload
    type    u8       a RecordType
    payload length bytes
    crc     u32 LE   crc32c(length|type|payload), seeded with the previous record's crc

Because each crc is seeded with the one before it, a record verifies only in its place in
the chain: a reordered, dropped or duplicated record breaks every record after it. The crc
sits at the *end* of the frame, so the chain value a record starts from is always the four
bytes just before it; the reader uses that to look past damage (see ``_segment``). A zero
type never occurs in a valid frame, so the zero-filled, preallocated tail of a segment reads
as "end of records".

This module is pure: bytes in, values out. Payload decoders raise ``ValueError`` on any
malformed payload; callers turn that into a ``WALCorruptError`` naming file and offset.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

import crc32c as _crc32c

from keelson.raft.types import Entry, EntryType, HardState


class RecordType(enum.IntEnum):
    CRC = 1  # first record of a segment: payload is the chain value carried over
    METADATA = 2  # second record of a segment: the caller's identity bytes
    ENTRY = 3
    HARD_STATE = 4
    SNAPSHOT = 5  # a snapshot marker: (index, term)


@dataclass(frozen=True, slots=True, order=True)
class SnapshotMarker:
    """The WAL's record that a snapshot at ``index`` (of ``term``) exists; entries at or
    below ``index`` are no longer needed from the log."""

    index: int = 0
    term: int = 0


HEADER = struct.Struct("<IB")
TRAILER = struct.Struct("<I")
FRAME_OVERHEAD = HEADER.size + TRAILER.size
MAX_PAYLOAD = 1 << 31  # a larger length field is damage, not data

_ENTRY_HEAD = struct.Struct("<IBQQB")  # frame header + entry term, index, type
_ENTRY_FIELDS = struct.Struct("<QQB")
_HARD_STATE = struct.Struct("<QQQ")
_MARKER = struct.Struct("<QQ")
_CRC_PAYLOAD = struct.Struct("<I")
_VALID_TYPES = frozenset(int(t) for t in RecordType)
_ENTRY_TYPES = frozenset(int(t) for t in EntryType)


def crc(data: bytes | memoryview, prev: int) -> int:
    """crc32c of ``data`` continuing from ``prev``."""
    return int(_crc32c.crc32c(data, value=prev))


def is_record_type(value: int) -> bool:
    return value in _VALID_TYPES


class Encoder:
    """Turns values into frames, carrying the crc chain from one frame to the next.

    ``prev_crc`` is the chain value after the last frame produced (or carried over from the
    previous segment). Frames come out as lists of byte strings so large entry data is
    never copied before the single ``write`` of a batch.
    """

    __slots__ = ("prev_crc",)

    def __init__(self, prev_crc: int) -> None:
        self.prev_crc = prev_crc

    def frame(self, rtype: RecordType, payload: bytes, out: list[bytes]) -> None:
        head = HEADER.pack(len(payload), rtype)
        c = crc(payload, crc(head, self.prev_crc))
        out.append(head)
        out.append(payload)
        out.append(TRAILER.pack(c))
        self.prev_crc = c

    def entry(self, e: Entry, out: list[bytes]) -> None:
        data = e.data
        head = _ENTRY_HEAD.pack(
            _ENTRY_FIELDS.size + len(data), RecordType.ENTRY, e.term, e.index, e.type
        )
        c = crc(data, crc(head, self.prev_crc))
        out.append(head)
        out.append(data)
        out.append(TRAILER.pack(c))
        self.prev_crc = c

    def hard_state(self, hs: HardState, out: list[bytes]) -> None:
        self.frame(RecordType.HARD_STATE, _HARD_STATE.pack(hs.term, hs.vote, hs.commit), out)

    def snapshot_marker(self, marker: SnapshotMarker, out: list[bytes]) -> None:
        self.frame(RecordType.SNAPSHOT, _MARKER.pack(marker.index, marker.term), out)

    def frame_metadata(self, metadata: bytes, out: list[bytes]) -> None:
        self.frame(RecordType.METADATA, metadata, out)

    def crc_record(self, out: list[bytes]) -> None:
        """The segment-opening record: states the chain value it continues from."""
        self.frame(RecordType.CRC, _CRC_PAYLOAD.pack(self.prev_crc), out)


def decode_entry(payload: memoryview) -> Entry:
    if len(payload) < _ENTRY_FIELDS.size:
        raise ValueError(f"entry record too short ({len(payload)} bytes)")
    term, index, etype = _ENTRY_FIELDS.unpack_from(payload)
    if etype not in _ENTRY_TYPES:
        raise ValueError(f"unknown entry type {etype}")
    return Entry(term, index, EntryType(etype), bytes(payload[_ENTRY_FIELDS.size :]))


def decode_hard_state(payload: memoryview) -> HardState:
    if len(payload) != _HARD_STATE.size:
        raise ValueError(f"hard state record has {len(payload)} bytes, want {_HARD_STATE.size}")
    term, vote, commit = _HARD_STATE.unpack(payload)
    return HardState(term, vote, commit)


def decode_snapshot_marker(payload: memoryview) -> SnapshotMarker:
    if len(payload) != _MARKER.size:
        raise ValueError(f"snapshot record has {len(payload)} bytes, want {_MARKER.size}")
    index, term = _MARKER.unpack(payload)
    return SnapshotMarker(index, term)


def decode_crc(payload: memoryview) -> int:
    if len(payload) != _CRC_PAYLOAD.size:
        raise ValueError(f"crc record has {len(payload)} bytes, want {_CRC_PAYLOAD.size}")
    value: int = _CRC_PAYLOAD.unpack(payload)[0]
    return value
