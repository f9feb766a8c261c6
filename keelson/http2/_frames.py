"""HTTP/2 frame layout (RFC 9113 section 4 and 6): parse bytes into frames, build frames.

This module knows the wire layout only: the 9-octet header, the per-type payload shapes,
padding and the frame-size limit. It has no idea what a frame means for a stream or the
connection (that is ``_receive``) and keeps no state except ``FrameReader``'s buffer.

Invariants:
* ``FrameReader`` holds at most one incomplete frame: once ``next_frame()`` returns None its
  buffer is shorter than ``9 + max_frame_size`` bytes, whatever was fed. A header announcing a
  longer frame is refused (FRAME_SIZE_ERROR) before its payload is buffered.
* Builders never emit a payload longer than 2**24-1; splitting to the peer's
  SETTINGS_MAX_FRAME_SIZE is the caller's job (``header_block_frames`` does it for blocks).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from keelson.http2.errors import ErrorCode, ProtocolError

# Frame types (RFC 9113 section 6).
DATA = 0x0
HEADERS = 0x1
PRIORITY = 0x2
RST_STREAM = 0x3
SETTINGS = 0x4
PUSH_PROMISE = 0x5
PING = 0x6
GOAWAY = 0x7
WINDOW_UPDATE = 0x8
CONTINUATION = 0x9

# Flags.
FLAG_END_STREAM = 0x1
FLAG_ACK = 0x1
FLAG_END_HEADERS = 0x4
FLAG_PADDED = 0x8
FLAG_PRIORITY = 0x20

FRAME_HEADER_SIZE = 9
MAX_PAYLOAD = (1 << 24) - 1
STREAM_ID_MASK = 0x7FFFFFFF

CONNECTION_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# length<<8 | type (4 octets), flags (1), R + stream id (4).
_HEADER = struct.Struct(">IBL")
_U32 = struct.Struct(">L")
_U32_PAIR = struct.Struct(">LL")
_SETTING = struct.Struct(">HL")


class Frame(NamedTuple):
    """One received frame: its type, flags, stream id (reserved bit cleared) and payload."""

    type: int
    flags: int
    stream_id: int
    payload: bytes


class FrameReader:
    """Cuts a byte stream into frames, refusing any frame longer than ``max_frame_size``."""

    __slots__ = ("_buffer", "_pos", "max_frame_size")

    def __init__(self, max_frame_size: int) -> None:
        self._buffer = bytearray()
        self._pos = 0  # start of the first unconsumed byte (consumed bytes are cut lazily)
        self.max_frame_size = max_frame_size

    @property
    def buffered(self) -> int:
        """Bytes held back as the start of an incomplete frame."""
        return len(self._buffer) - self._pos

    def feed(self, data: bytes) -> None:
        """Append received bytes (call ``next_frame()`` until None to consume them)."""
        self._buffer += data

    def next_frame(self) -> Frame | None:
        """Return the next complete frame, or None when the buffer holds only a partial one.

        Raises ``ProtocolError(FRAME_SIZE_ERROR)`` when a header announces a frame longer
        than ``max_frame_size``; nothing of that frame is consumed. Consumed bytes are cut
        from the buffer once per batch (when None is returned), not once per frame, so a
        large read costs one copy rather than one memmove per frame.
        """
        buf = self._buffer
        pos = self._pos
        if len(buf) - pos >= FRAME_HEADER_SIZE:
            length_type, flags, stream_id = _HEADER.unpack_from(buf, pos)
            length = length_type >> 8
            if length > self.max_frame_size:
                raise ProtocolError(
                    ErrorCode.FRAME_SIZE_ERROR,
                    f"frame of {length} bytes exceeds SETTINGS_MAX_FRAME_SIZE "
                    f"{self.max_frame_size}",
                )
            start = pos + FRAME_HEADER_SIZE
            end = start + length
            if len(buf) >= end:
                self._pos = end
                return Frame(
                    length_type & 0xFF, flags, stream_id & STREAM_ID_MASK, bytes(buf[start:end])
                )
        if pos:
            del buf[:pos]
            self._pos = 0
        return None

    def take(self, n: int) -> bytes:
        """Remove and return the first ``n`` unconsumed bytes (used for the preface)."""
        head = self.peek()[:n]
        del self._buffer[: self._pos + n]
        self._pos = 0
        return head

    def peek(self) -> bytes:
        """The unconsumed bytes (used to recognise the preface or HTTP/1.x)."""
        return bytes(self._buffer[self._pos :])


# ---------------------------------------------------------------------------- payloads


def strip_padding(frame: Frame) -> bytes:
    """The payload of a DATA or HEADERS frame without its padding (PADDED flag).

    RFC 9113 section 6.1/6.2: padding length >= remaining payload is a PROTOCOL_ERROR.
    """
    payload = frame.payload
    if not frame.flags & FLAG_PADDED:
        return payload
    if not payload:
        raise ProtocolError(ErrorCode.PROTOCOL_ERROR, "PADDED frame without a pad length")
    pad = payload[0]
    if pad >= len(payload):
        raise ProtocolError(ErrorCode.PROTOCOL_ERROR, "padding exceeds the frame payload")
    return payload[1 : len(payload) - pad]


def parse_priority(fields: bytes) -> tuple[int, bool, int]:
    """Decode the 5-octet priority fields: (dependency stream id, exclusive, weight)."""
    (dep,) = _U32.unpack_from(fields, 0)
    return dep & STREAM_ID_MASK, bool(dep >> 31), fields[4] + 1


def parse_settings(payload: bytes) -> list[tuple[int, int]]:
    """Decode a SETTINGS payload into (identifier, value) pairs, in wire order."""
    if len(payload) % 6:
        raise ProtocolError(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS length not a multiple of 6")
    return [_SETTING.unpack_from(payload, i) for i in range(0, len(payload), 6)]


def parse_u32(payload: bytes) -> int:
    """The first 32-bit big-endian word of ``payload`` (RST_STREAM code, WINDOW_UPDATE)."""
    value: int = _U32.unpack_from(payload, 0)[0]
    return value


def parse_goaway(payload: bytes) -> tuple[int, int, bytes]:
    """Decode a GOAWAY payload: (last stream id, error code, debug data)."""
    last, code = _U32_PAIR.unpack_from(payload, 0)
    return last & STREAM_ID_MASK, code, payload[8:]


# ---------------------------------------------------------------------------- builders


def frame(frame_type: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """Serialize one frame."""
    return _HEADER.pack((len(payload) << 8) | frame_type, flags, stream_id) + payload


def data_frame(stream_id: int, data: bytes, end_stream: bool = False, pad: int = -1) -> bytes:
    """A DATA frame; ``pad >= 0`` adds the PADDED flag with that many zero octets."""
    flags = FLAG_END_STREAM if end_stream else 0
    if pad >= 0:
        return frame(DATA, flags | FLAG_PADDED, stream_id, bytes([pad]) + data + bytes(pad))
    return frame(DATA, flags, stream_id, data)


def headers_frame(
    stream_id: int,
    block: bytes,
    *,
    end_stream: bool = False,
    end_headers: bool = True,
    pad: int = -1,
    priority: tuple[int, bool, int] | None = None,
) -> bytes:
    """A single HEADERS frame (optionally PADDED and/or with PRIORITY fields)."""
    flags = (FLAG_END_STREAM if end_stream else 0) | (FLAG_END_HEADERS if end_headers else 0)
    payload = block
    if priority is not None:
        dep, exclusive, weight = priority
        payload = _U32.pack(dep | (0x80000000 if exclusive else 0)) + bytes([weight - 1]) + payload
        flags |= FLAG_PRIORITY
    if pad >= 0:
        payload = bytes([pad]) + payload + bytes(pad)
        flags |= FLAG_PADDED
    return frame(HEADERS, flags, stream_id, payload)


def header_block_frames(
    stream_id: int, block: bytes, end_stream: bool, max_frame_size: int
) -> bytes:
    """HEADERS followed by as many CONTINUATION frames as ``max_frame_size`` requires."""
    end_flag = FLAG_END_STREAM if end_stream else 0
    if len(block) <= max_frame_size:
        return frame(HEADERS, end_flag | FLAG_END_HEADERS, stream_id, block)
    parts = [frame(HEADERS, end_flag, stream_id, block[:max_frame_size])]
    offset = max_frame_size
    while offset < len(block):
        chunk = block[offset : offset + max_frame_size]
        offset += max_frame_size
        last = offset >= len(block)
        parts.append(frame(CONTINUATION, FLAG_END_HEADERS if last else 0, stream_id, chunk))
    return b"".join(parts)


def continuation_frame(stream_id: int, block: bytes, end_headers: bool = True) -> bytes:
    """A CONTINUATION frame."""
    return frame(CONTINUATION, FLAG_END_HEADERS if end_headers else 0, stream_id, block)


def priority_frame(
    stream_id: int, depends_on: int, weight: int = 16, exclusive: bool = False
) -> bytes:
    """A PRIORITY frame (RFC 9113 keeps the frame, deprecates its meaning)."""
    dep = depends_on | (0x80000000 if exclusive else 0)
    return frame(PRIORITY, 0, stream_id, _U32.pack(dep) + bytes([weight - 1]))


def rst_stream_frame(stream_id: int, code: int) -> bytes:
    """A RST_STREAM frame."""
    return frame(RST_STREAM, 0, stream_id, _U32.pack(code))


def settings_frame(settings: list[tuple[int, int]] | None = None, ack: bool = False) -> bytes:
    """A SETTINGS frame with the given (identifier, value) pairs, or an empty ACK."""
    payload = b"".join(_SETTING.pack(k, v) for k, v in settings or ())
    return frame(SETTINGS, FLAG_ACK if ack else 0, 0, payload)


def ping_frame(data: bytes, ack: bool = False) -> bytes:
    """A PING frame (``data`` must be 8 octets)."""
    return frame(PING, FLAG_ACK if ack else 0, 0, data)


def goaway_frame(last_stream_id: int, code: int, debug: bytes = b"") -> bytes:
    """A GOAWAY frame."""
    return frame(GOAWAY, 0, 0, _U32_PAIR.pack(last_stream_id, code) + debug)


def window_update_frame(stream_id: int, increment: int) -> bytes:
    """A WINDOW_UPDATE frame."""
    return frame(WINDOW_UPDATE, 0, stream_id, _U32.pack(increment))
