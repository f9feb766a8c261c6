"""Binary encoding of raft ``Message`` values for the wire between members.

Theory of operation: a message is a fixed header followed by its variable parts, all
big-endian and length-prefixed, so a decoder never has to guess where a field ends::

    header   type u8 | flags u8 | to, frm, term, log_term, index, commit, reject_hint u64
             | context length u32 | entry count u32
    context  bytes
    entries  per entry: term u64 | index u64 | type u8 | data length u32 | data
    snapshot (only if flags has HAS_SNAPSHOT)
             index u64 | term u64 | voter count u32 | learner count u32
             | voters u64... | learners u64... | data length u64 | data

``flags`` bit 0 is ``reject``, bit 1 says a snapshot follows; other bits must be zero.

The decoder treats its input as hostile (it comes from a peer): every count and length is
checked against the bytes that remain *before* anything is allocated, enum values are
validated, and trailing bytes are an error. Anything malformed raises ``CodecError`` and
nothing else. Encoding a value that cannot be represented (a negative id, an int that does not
fit in 64 bits) also raises ``CodecError``. Nothing is ever unpickled.
"""

from __future__ import annotations

import struct

from keelson.raft.types import (
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
)

__all__ = ["CodecError", "decode_message", "encode_message"]


class CodecError(ValueError):
    """The bytes are not a valid encoded message (or the value cannot be encoded)."""


_HEADER = struct.Struct(">BBQQQQQQQII")
_ENTRY = struct.Struct(">QQBI")
_SNAP_HEAD = struct.Struct(">QQII")
_U64 = struct.Struct(">Q")

_FLAG_REJECT = 0x01
_FLAG_SNAPSHOT = 0x02
_KNOWN_FLAGS = _FLAG_REJECT | _FLAG_SNAPSHOT

_MESSAGE_TYPES = frozenset(int(t) for t in MessageType)
_ENTRY_TYPES = frozenset(int(t) for t in EntryType)


def encode_message(m: Message) -> bytes:
    """Encode ``m``; the result decodes to an equal ``Message``."""
    try:
        return _encode(m)
    except (struct.error, OverflowError, TypeError, ValueError) as exc:
        raise CodecError(f"cannot encode message: {exc}") from exc


def _encode(m: Message) -> bytes:
    flags = (_FLAG_REJECT if m.reject else 0) | (_FLAG_SNAPSHOT if m.snapshot is not None else 0)
    parts: list[bytes] = [
        _HEADER.pack(
            int(m.type),
            flags,
            m.to,
            m.frm,
            m.term,
            m.log_term,
            m.index,
            m.commit,
            m.reject_hint,
            len(m.context),
            len(m.entries),
        ),
        bytes(m.context),
    ]
    for e in m.entries:
        parts.append(_ENTRY.pack(e.term, e.index, int(e.type), len(e.data)))
        parts.append(bytes(e.data))
    if m.snapshot is not None:
        md = m.snapshot.metadata
        voters = md.conf_state.voters
        learners = md.conf_state.learners
        parts.append(_SNAP_HEAD.pack(md.index, md.term, len(voters), len(learners)))
        parts.append(struct.pack(f">{len(voters)}Q", *voters))
        parts.append(struct.pack(f">{len(learners)}Q", *learners))
        parts.append(_U64.pack(len(m.snapshot.data)))
        parts.append(bytes(m.snapshot.data))
    return b"".join(parts)


class _Reader:
    """A cursor over the input that refuses to read past its end."""

    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes | bytearray | memoryview) -> None:
        self.buf = memoryview(buf).cast("B")
        self.pos = 0

    def remaining(self) -> int:
        return len(self.buf) - self.pos

    def unpack(self, s: struct.Struct) -> tuple[int, ...]:
        if self.remaining() < s.size:
            raise CodecError(f"truncated: need {s.size} bytes at offset {self.pos}")
        values = s.unpack_from(self.buf, self.pos)
        self.pos += s.size
        return tuple(values)

    def take(self, n: int, what: str) -> bytes:
        if n > self.remaining():
            raise CodecError(
                f"{what} length {n} exceeds the {self.remaining()} bytes left at offset {self.pos}"
            )
        data = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return data

    def ids(self, count: int, what: str) -> tuple[int, ...]:
        raw = self.take(count * _U64.size, what)
        return tuple(struct.unpack(f">{count}Q", raw))


def decode_message(buf: bytes | bytearray | memoryview) -> Message:
    """Decode one message that occupies all of ``buf``; raises ``CodecError`` if malformed."""
    r = _Reader(buf)
    (mtype, flags, to, frm, term, log_term, index, commit, reject_hint, ctx_len, n_entries) = (
        r.unpack(_HEADER)
    )
    if mtype not in _MESSAGE_TYPES:
        raise CodecError(f"unknown message type {mtype}")
    if flags & ~_KNOWN_FLAGS:
        raise CodecError(f"unknown flag bits {flags:#x}")
    context = r.take(ctx_len, "context")
    if n_entries * _ENTRY.size > r.remaining():
        raise CodecError(f"entry count {n_entries} exceeds the bytes left")
    entries: list[Entry] = []
    for _ in range(n_entries):
        e_term, e_index, e_type, e_len = r.unpack(_ENTRY)
        if e_type not in _ENTRY_TYPES:
            raise CodecError(f"unknown entry type {e_type}")
        entries.append(Entry(e_term, e_index, EntryType(e_type), r.take(e_len, "entry data")))
    snapshot: Snapshot | None = None
    if flags & _FLAG_SNAPSHOT:
        s_index, s_term, n_voters, n_learners = r.unpack(_SNAP_HEAD)
        voters = r.ids(n_voters, "voters")
        learners = r.ids(n_learners, "learners")
        (data_len,) = r.unpack(_U64)
        data = r.take(data_len, "snapshot data")
        snapshot = Snapshot(SnapshotMetadata(s_index, s_term, ConfState(voters, learners)), data)
    if r.remaining():
        raise CodecError(f"{r.remaining()} trailing bytes after message")
    return Message(
        type=MessageType(mtype),
        to=to,
        frm=frm,
        term=term,
        log_term=log_term,
        index=index,
        entries=tuple(entries),
        commit=commit,
        snapshot=snapshot,
        reject=bool(flags & _FLAG_REJECT),
        reject_hint=reject_hint,
        context=context,
    )
