"""Frames on a member-to-member connection (sans-I/O: bytes in, values out).

Theory of operation: every connection carries length-prefixed frames::

    length u32 (of what follows) | kind u8 | body

The first frame a dialer sends is a HANDSHAKE naming the connection's channel (MESSAGES,
SNAPSHOT or DISCOVERY); the listener answers with HANDSHAKE_OK, or with one REJECTED frame
(reason code + UTF-8 text, e.g. "the sender was removed from the cluster") and closes.
Afterwards:

* MESSAGES channel, dialer -> listener: MESSAGE (an encoded raft message) and REQUEST frames;
  listener -> dialer: RESPONSE frames.
* SNAPSHOT channel, dialer -> listener: one SNAP_BEGIN, SNAP_CHUNK frames, then the listener
  answers one SNAP_DONE and both sides close.
* DISCOVERY channel (a member about to join, which knows neither the cluster id nor its own
  member id): the listener answers one DISCOVERY_INFO frame instead of HANDSHAKE_OK --
  format version, cluster id, the listener's member id and an opaque member list supplied by
  the server -- and closes. The handshake's cluster and member ids are ignored on this
  channel; a body of an unknown format version is refused by the decoder.

Every decoder here raises ``FrameError`` (a ``CodecError``) on malformed bodies.
``read_frame`` is the one function that touches a stream: it reads a single frame and
refuses a length of zero or above the caller's cap before reading the body. ``FrameBuffer``
does the same for a stream read in chunks of any size (the MESSAGES receive path, which
reads whatever has arrived and handles every frame in it).
"""

from __future__ import annotations

import asyncio
import enum
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from keelson.transport.codec import CodecError

MAGIC = b"KLSN"
PROTOCOL_VERSION = 1

LENGTH = struct.Struct(">I")
_unpack_length = LENGTH.unpack_from
_HANDSHAKE = struct.Struct(">4sHBQQQ")
_REQUEST_HEAD = struct.Struct(">QB")
_RESPONSE_HEAD = struct.Struct(">QB")
_SNAP_BEGIN_HEAD = struct.Struct(">Q")
_DISCOVERY_HEAD = struct.Struct(">BQQ")
_REJECTED_HEAD = struct.Struct(">B")
DISCOVERY_FORMAT = 1
MAX_DISCOVERY_BYTES = 4 * 1024 * 1024
"""Cap on a DISCOVERY_INFO frame: a member list is small; anything larger is refused."""


class FrameError(CodecError):
    """A frame body is malformed."""


class FrameKind(enum.IntEnum):
    HANDSHAKE = 1
    HANDSHAKE_OK = 2
    MESSAGE = 3
    REQUEST = 4
    RESPONSE = 5
    SNAP_BEGIN = 6
    SNAP_CHUNK = 7
    SNAP_DONE = 8
    DISCOVERY_INFO = 9
    REJECTED = 10


class Channel(enum.IntEnum):
    MESSAGES = 0
    SNAPSHOT = 1
    DISCOVERY = 2


class RejectReason(enum.IntEnum):
    """Why a listener refused a handshake (the REJECTED frame's first byte)."""

    MISMATCH = 0  # wrong cluster, receiver, magic, version or channel
    REMOVED = 1  # the sender was removed from the cluster: it must stop (etcd's 410 Gone)


@dataclass(frozen=True, slots=True)
class Handshake:
    magic: bytes
    version: int
    channel: int
    cluster_id: int
    sender_id: int
    receiver_id: int


@dataclass(frozen=True, slots=True)
class DiscoveryInfo:
    """The listener's answer on the DISCOVERY channel."""

    cluster_id: int
    member_id: int
    members: bytes  # opaque to the transport: the server's encoded member list


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: int  # a RejectReason, or an unknown code from a newer peer
    text: str


@dataclass(frozen=True, slots=True)
class Request:
    request_id: int
    kind: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Response:
    request_id: int
    ok: bool
    payload: bytes  # the handler's answer, or a UTF-8 error message when not ok


def frame(kind: FrameKind, body: bytes = b"") -> bytes:
    """One frame, ready to write."""
    return LENGTH.pack(len(body) + 1) + bytes((kind,)) + body


def encode_handshake(h: Handshake) -> bytes:
    return frame(
        FrameKind.HANDSHAKE,
        _HANDSHAKE.pack(h.magic, h.version, h.channel, h.cluster_id, h.sender_id, h.receiver_id),
    )


def decode_handshake(body: bytes) -> Handshake:
    if len(body) != _HANDSHAKE.size:
        raise FrameError(f"handshake of {len(body)} bytes, want {_HANDSHAKE.size}")
    magic, version, channel, cluster_id, sender, receiver = _HANDSHAKE.unpack(body)
    return Handshake(magic, version, channel, cluster_id, sender, receiver)


def encode_discovery_info(d: DiscoveryInfo) -> bytes:
    return frame(
        FrameKind.DISCOVERY_INFO,
        _DISCOVERY_HEAD.pack(DISCOVERY_FORMAT, d.cluster_id, d.member_id) + d.members,
    )


def decode_discovery_info(body: bytes) -> DiscoveryInfo:
    if len(body) < _DISCOVERY_HEAD.size:
        raise FrameError("discovery answer too short")
    fmt, cluster_id, member_id = _DISCOVERY_HEAD.unpack_from(body)
    if fmt != DISCOVERY_FORMAT:
        raise FrameError(f"discovery answer of format {fmt}, want {DISCOVERY_FORMAT}")
    return DiscoveryInfo(cluster_id, member_id, bytes(body[_DISCOVERY_HEAD.size :]))


def encode_rejection(r: Rejection) -> bytes:
    text = r.text.encode("utf-8", errors="replace")[:1024]
    return frame(FrameKind.REJECTED, _REJECTED_HEAD.pack(r.reason) + text)


def decode_rejection(body: bytes) -> Rejection:
    if len(body) < _REJECTED_HEAD.size:
        raise FrameError("rejection frame too short")
    (reason,) = _REJECTED_HEAD.unpack_from(body)
    return Rejection(reason, body[_REJECTED_HEAD.size :].decode("utf-8", errors="replace"))


def encode_request(r: Request) -> bytes:
    kind = r.kind.encode()
    if len(kind) > 255:
        raise FrameError("request kind longer than 255 bytes")
    return frame(FrameKind.REQUEST, _REQUEST_HEAD.pack(r.request_id, len(kind)) + kind + r.payload)


def decode_request(body: bytes) -> Request:
    if len(body) < _REQUEST_HEAD.size:
        raise FrameError("request frame too short")
    request_id, kind_len = _REQUEST_HEAD.unpack_from(body)
    end = _REQUEST_HEAD.size + kind_len
    if end > len(body):
        raise FrameError("request kind runs past the frame")
    try:
        kind = body[_REQUEST_HEAD.size : end].decode()
    except UnicodeDecodeError as exc:
        raise FrameError("request kind is not UTF-8") from exc
    return Request(request_id, kind, bytes(body[end:]))


def encode_response(r: Response) -> bytes:
    return frame(FrameKind.RESPONSE, _RESPONSE_HEAD.pack(r.request_id, int(r.ok)) + r.payload)


def decode_response(body: bytes) -> Response:
    if len(body) < _RESPONSE_HEAD.size:
        raise FrameError("response frame too short")
    request_id, ok = _RESPONSE_HEAD.unpack_from(body)
    if ok not in (0, 1):
        raise FrameError(f"bad response status {ok}")
    return Response(request_id, ok == 1, bytes(body[_RESPONSE_HEAD.size :]))


def encode_snap_begin(total: int, header: bytes) -> bytes:
    """SNAP_BEGIN: the snapshot's total data length, then the MsgSnap encoded without data."""
    return frame(FrameKind.SNAP_BEGIN, _SNAP_BEGIN_HEAD.pack(total) + header)


def decode_snap_begin(body: bytes) -> tuple[int, bytes]:
    if len(body) < _SNAP_BEGIN_HEAD.size:
        raise FrameError("snapshot begin frame too short")
    (total,) = _SNAP_BEGIN_HEAD.unpack_from(body)
    return total, bytes(body[_SNAP_BEGIN_HEAD.size :])


class FrameBuffer:
    """Splits a byte stream that arrives in arbitrary chunks into frames (sans-I/O).

    ``feed(chunk)`` yields every frame the bytes received so far complete, in order, as
    ``(kind, body)``; bytes of an incomplete frame are kept for the next chunk. A length of
    zero or above ``cap`` raises ``FrameError`` as soon as its four bytes are in, before any
    of the body is waited for, and after the frames in front of it have been yielded: the
    caller then closes the connection. A caller that stops iterating early (it raised) loses
    the rest of that chunk, and must not feed the buffer again either. The fast case --
    nothing pending and the chunk holding whole frames -- slices bodies straight out of the
    chunk; a frame split over chunks is joined once, when its last byte arrives.
    """

    __slots__ = ("_cap", "_chunks", "_have", "_need")

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._chunks: list[bytes] = []  # the bytes of an incomplete frame
        self._have = 0  # total length of _chunks
        self._need = 0  # bytes _chunks must hold before parsing can progress

    def pending(self) -> bytes:
        """The bytes of the incomplete frame held so far (for an EOF error)."""
        return b"".join(self._chunks)

    def feed(self, chunk: bytes) -> Iterator[tuple[int, bytes]]:
        """Add ``chunk``; yield the ``(kind, body)`` of every frame now complete."""
        if self._chunks:
            self._chunks.append(chunk)
            self._have += len(chunk)
            if self._have < self._need:
                return
            data = b"".join(self._chunks)
            self._chunks = []
            self._have = 0
        else:
            data = chunk
        cap = self._cap
        unpack_length = _unpack_length
        end = len(data)
        pos = 0
        while True:
            left = end - pos
            if left < 4:
                need = 4
                break
            (length,) = unpack_length(data, pos)
            if length == 0 or length > cap:
                raise FrameError(f"frame length {length} outside 1..{cap}")
            if left < 4 + length:
                need = 4 + length
                break
            start = pos + 4
            pos = start + length
            if pos == end:
                yield data[start], data[start + 1 : pos]
                return
            yield data[start], data[start + 1 : pos]
        if pos < end:
            rest = data[pos:] if pos else data
            self._chunks = [rest]
            self._have = len(rest)
            self._need = need


async def read_frame(reader: asyncio.StreamReader, cap: int) -> tuple[int, bytes]:
    """Read one frame; FrameError if its length is zero or above ``cap``."""
    (length,) = LENGTH.unpack(await reader.readexactly(LENGTH.size))
    if length == 0 or length > cap:
        raise FrameError(f"frame length {length} outside 1..{cap}")
    data = await reader.readexactly(length)
    return data[0], data[1:]
