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

__all__ = ["CodecError", "decode_message", "encode_message", "encode_message_frame"]


class CodecError(ValueError):
    """The bytes are not a valid encoded message (or the value cannot be encoded)."""


_HEADER = struct.Struct(">BBQQQQQQQII")
_ENTRY = struct.Struct(">QQBI")
_SNAP_HEAD = struct.Struct(">QQII")
_U64 = struct.Struct(">Q")
_FRAMED_HEADER = struct.Struct(">IB" + _HEADER.format[1:])
"""A MESSAGE frame's length and kind (see ``frames``) fused with the message header, so an
empty message is framed by one ``pack``."""
_FRAMED_ONE_ENTRY = struct.Struct(_FRAMED_HEADER.format + _ENTRY.format[1:])
"""The same followed by one entry's header: a 1-client put's MsgApp is one pack and a concat."""
_FRAME_PREFIX = struct.Struct(">IB")
_MESSAGE_FRAME_KIND = 3  # frames.FrameKind.MESSAGE; frames imports this module, not the reverse

_HEADER_SIZE = _HEADER.size
_ENTRY_SIZE = _ENTRY.size
_unpack_header = _HEADER.unpack_from
_unpack_entry = _ENTRY.unpack_from

_FLAG_REJECT = 0x01
_FLAG_SNAPSHOT = 0x02
_KNOWN_FLAGS = _FLAG_REJECT | _FLAG_SNAPSHOT

_MESSAGE_TYPES: dict[int, MessageType] = {int(t): t for t in MessageType}
_ENTRY_TYPES: dict[int, EntryType] = {int(t): t for t in EntryType}
_ENCODE_ERRORS = (struct.error, OverflowError, TypeError, ValueError)


def encode_message(m: Message) -> bytes:
    """Encode ``m``; the result decodes to an equal ``Message``."""
    try:
        return _encode(m)
    except _ENCODE_ERRORS as exc:
        raise CodecError(f"cannot encode message: {exc}") from exc


def encode_message_frame(m: Message) -> bytes:
    """``frames.frame(FrameKind.MESSAGE, encode_message(m))`` built in one go (the send path
    frames every raft message); same bytes, same ``CodecError``."""
    try:
        if not m.entries and not m.context and m.snapshot is None:
            return _FRAMED_HEADER.pack(
                _HEADER_SIZE + 1,
                _MESSAGE_FRAME_KIND,
                m.type,
                _FLAG_REJECT if m.reject else 0,
                m.to,
                m.frm,
                m.term,
                m.log_term,
                m.index,
                m.commit,
                m.reject_hint,
                0,
                0,
            )
        if len(m.entries) == 1 and not m.context and m.snapshot is None:
            (e,) = m.entries
            data = e.data if type(e.data) is bytes else bytes(e.data)
            return (
                _FRAMED_ONE_ENTRY.pack(
                    _HEADER_SIZE + _ENTRY_SIZE + len(data) + 1,
                    _MESSAGE_FRAME_KIND,
                    m.type,
                    _FLAG_REJECT if m.reject else 0,
                    m.to,
                    m.frm,
                    m.term,
                    m.log_term,
                    m.index,
                    m.commit,
                    m.reject_hint,
                    0,
                    1,
                    e.term,
                    e.index,
                    e.type,
                    len(data),
                )
                + data
            )
        body = _encode(m)
        return _FRAME_PREFIX.pack(len(body) + 1, _MESSAGE_FRAME_KIND) + body
    except _ENCODE_ERRORS as exc:
        raise CodecError(f"cannot encode message: {exc}") from exc


def _encode(m: Message) -> bytes:
    flags = (_FLAG_REJECT if m.reject else 0) | (_FLAG_SNAPSHOT if m.snapshot is not None else 0)
    entries = m.entries
    header = _HEADER.pack(
        m.type,
        flags,
        m.to,
        m.frm,
        m.term,
        m.log_term,
        m.index,
        m.commit,
        m.reject_hint,
        len(m.context),
        len(entries),
    )
    if not entries and not m.context and m.snapshot is None:
        return header
    parts: list[bytes] = [header, bytes(m.context)]
    pack_entry = _ENTRY.pack
    for e in entries:
        data = e.data
        parts.append(pack_entry(e.term, e.index, e.type, len(data)))
        parts.append(data if type(data) is bytes else bytes(data))
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


def decode_message(buf: bytes | bytearray | memoryview) -> Message:
    """Decode one message that occupies all of ``buf``; raises ``CodecError`` if malformed.

    One ``unpack_from`` reads the whole header; every length is compared with the bytes left
    before it is sliced, so a hostile length never allocates more than the input's size."""
    if type(buf) is not bytes:
        buf = bytes(buf)
    n = len(buf)
    if n < _HEADER_SIZE:
        raise CodecError(f"truncated: need {_HEADER_SIZE} bytes at offset 0")
    (mtype, flags, to, frm, term, log_term, index, commit, reject_hint, ctx_len, n_entries) = (
        _unpack_header(buf)
    )
    message_type = _MESSAGE_TYPES.get(mtype)
    if message_type is None:
        raise CodecError(f"unknown message type {mtype}")
    if flags & ~_KNOWN_FLAGS:
        raise CodecError(f"unknown flag bits {flags:#x}")
    pos = _HEADER_SIZE
    context = b""
    if ctx_len:
        if ctx_len > n - pos:
            raise CodecError(
                f"context length {ctx_len} exceeds the {n - pos} bytes left at offset {pos}"
            )
        context = buf[pos : pos + ctx_len]
        pos += ctx_len
    entries: tuple[Entry, ...] = ()
    if n_entries:
        if n_entries * _ENTRY_SIZE > n - pos:
            raise CodecError(f"entry count {n_entries} exceeds the bytes left")
        decoded: list[Entry] = []
        append = decoded.append
        entry_types = _ENTRY_TYPES
        for _ in range(n_entries):
            if _ENTRY_SIZE > n - pos:
                raise CodecError(f"truncated: need {_ENTRY_SIZE} bytes at offset {pos}")
            e_term, e_index, e_type, e_len = _unpack_entry(buf, pos)
            pos += _ENTRY_SIZE
            entry_type = entry_types.get(e_type)
            if entry_type is None:
                raise CodecError(f"unknown entry type {e_type}")
            if e_len > n - pos:
                raise CodecError(
                    f"entry data length {e_len} exceeds the {n - pos} bytes left at offset {pos}"
                )
            append(Entry(e_term, e_index, entry_type, buf[pos : pos + e_len]))
            pos += e_len
        entries = tuple(decoded)
    snapshot: Snapshot | None = None
    if flags & _FLAG_SNAPSHOT:
        snapshot, pos = _decode_snapshot(buf, pos)
    if pos != n:
        raise CodecError(f"{n - pos} trailing bytes after message")
    return Message(  # positional, in field order (cheaper); test_round_trip guards the order
        message_type,
        to,
        frm,
        term,
        log_term,
        index,
        entries,
        commit,
        snapshot,
        bool(flags & _FLAG_REJECT),
        reject_hint,
        context,
    )


def _decode_snapshot(buf: bytes, pos: int) -> tuple[Snapshot, int]:
    """The snapshot part that starts at ``pos``, and the offset after it."""
    n = len(buf)
    if _SNAP_HEAD.size > n - pos:
        raise CodecError(f"truncated: need {_SNAP_HEAD.size} bytes at offset {pos}")
    s_index, s_term, n_voters, n_learners = _SNAP_HEAD.unpack_from(buf, pos)
    pos += _SNAP_HEAD.size
    ids: list[tuple[int, ...]] = []
    for count, what in ((n_voters, "voters"), (n_learners, "learners")):
        size = count * _U64.size
        if size > n - pos:
            raise CodecError(
                f"{what} length {size} exceeds the {n - pos} bytes left at offset {pos}"
            )
        ids.append(struct.unpack_from(f">{count}Q", buf, pos))
        pos += size
    if _U64.size > n - pos:
        raise CodecError(f"truncated: need {_U64.size} bytes at offset {pos}")
    (data_len,) = _U64.unpack_from(buf, pos)
    pos += _U64.size
    if data_len > n - pos:
        raise CodecError(
            f"snapshot data length {data_len} exceeds the {n - pos} bytes left at offset {pos}"
        )
    data = buf[pos : pos + data_len]
    pos += data_len
    metadata = SnapshotMetadata(s_index, s_term, ConfState(ids[0], ids[1]))
    return Snapshot(metadata, data), pos
