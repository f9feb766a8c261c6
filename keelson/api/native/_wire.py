"""gRPC over HTTP/2 framing, without I/O: length-prefixed messages, timeouts, status trailers.

Owns the byte-level rules of the gRPC HTTP/2 protocol (grpc/grpc ``PROTOCOL-HTTP2.md``)
that sit above HTTP/2 itself:

* a message on the wire is ``compressed-flag (1 byte) | length (4 bytes, big endian) |
  payload``; one DATA frame may carry several messages and one message may span several
  frames. :class:`MessageReader` reassembles them; it refuses a declared length above its
  limit *before* buffering the payload, so a peer cannot make it hold more than
  ``max_message_bytes + 5`` bytes of an incomplete message;
* ``grpc-timeout`` is ``1..8 digits`` + a unit (``H M S m u n``): :func:`parse_timeout`;
* ``grpc-message`` is percent-encoded UTF-8 (every byte outside ``0x20..0x7E`` and ``%``
  itself): :func:`encode_grpc_message`;
* the response header and OK trailer blocks never change, so they are ``HeaderBlock.static``
  instances shared by every connection.

Error texts are grpc-go's (etcd's server is grpc-go), so clients see what etcd would send.
"""

from __future__ import annotations

from dataclasses import dataclass

from keelson.http2 import HeaderBlock

#: ``:status 200`` + ``content-type: application/grpc``: every gRPC response starts with it.
RESPONSE_HEADERS = HeaderBlock.static(
    ((b":status", b"200"), (b"content-type", b"application/grpc"))
)
#: ``grpc-status: 0``: the trailers of every successful call.
TRAILERS_OK = HeaderBlock.static(((b"grpc-status", b"0"),), trailers=True)

_PREFIX = 5
_TIMEOUT_UNITS = {
    ord("H"): 3600.0, ord("M"): 60.0, ord("S"): 1.0,
    ord("m"): 1e-3, ord("u"): 1e-6, ord("n"): 1e-9,
}
_UNRESERVED = frozenset(range(0x20, 0x7F)) - {ord("%")}


class WireError(Exception):
    """The peer broke a gRPC framing rule; ``code`` (a gRPC status number) and ``message``
    are what the call must end with."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(slots=True)
class Message:
    """One complete request message and the flow-controlled bytes to return once consumed."""

    payload: bytes
    acknowledge: int = 0


class MessageReader:
    """Reassembles length-prefixed gRPC messages from DATA payloads.

    Invariant: ``_buffer`` never holds more than one incomplete message, and that message's
    declared length is <= ``max_message_bytes`` (checked as soon as the prefix is known).
    """

    __slots__ = ("_buffer", "_max", "_encoding")

    def __init__(self, max_message_bytes: int, encoding: bytes | None = None) -> None:
        self._buffer = bytearray()
        self._max = max_message_bytes
        self._encoding = encoding  # the request's grpc-encoding; we decompress nothing

    @property
    def partial(self) -> bool:
        """Bytes of an incomplete message are buffered (a stream ending now is truncated)."""
        return bool(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data``; return the payloads it completed, in order. Raises ``WireError``."""
        buf = self._buffer
        if not buf and len(data) >= _PREFIX:
            # Fast path: the whole DATA payload is exactly one message (the unary case).
            length = int.from_bytes(data[1:5], "big")
            if len(data) == _PREFIX + length:
                self._check(data[0], length)
                return [data[_PREFIX:]]
        buf += data
        out: list[bytes] = []
        while len(buf) >= _PREFIX:
            length = int.from_bytes(buf[1:5], "big")
            self._check(buf[0], length)
            end = _PREFIX + length
            if len(buf) < end:
                break
            out.append(bytes(buf[_PREFIX:end]))
            del buf[:end]
        return out

    def _check(self, flag: int, length: int) -> None:
        if flag == 1:
            if self._encoding in (None, b"identity"):
                raise WireError(13, "grpc: compressed flag set with identity or empty encoding")
            name = self._encoding.decode("ascii", "replace")
            raise WireError(12, f'grpc: Decompressor is not installed for grpc-encoding "{name}"')
        if flag > 1:
            raise WireError(13, f"grpc: received unexpected payload format {flag}")
        if length > self._max:
            raise WireError(
                8, f"grpc: received message larger than max ({length} vs. {self._max})"
            )


def frame_message(payload: bytes) -> bytes:
    """``payload`` with the uncompressed-message prefix."""
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


def parse_timeout(value: bytes) -> float:
    """Seconds in a ``grpc-timeout`` value; ValueError if it is not 1-8 digits and a unit."""
    if not 2 <= len(value) <= 9 or not value[:-1].isdigit():
        raise ValueError(f"malformed grpc-timeout {value[:16]!r}")
    unit = _TIMEOUT_UNITS.get(value[-1])
    if unit is None:
        raise ValueError(f"malformed grpc-timeout {value[:16]!r}")
    return int(value[:-1]) * unit


def encode_grpc_message(message: str) -> bytes:
    """Percent-encode ``message`` as gRPC's ``grpc-message`` trailer requires."""
    raw = message.encode("utf-8", "replace")
    if all(b in _UNRESERVED for b in raw):
        return raw
    return b"".join(bytes((b,)) if b in _UNRESERVED else b"%%%02X" % b for b in raw)


def decode_grpc_message(value: bytes) -> str:
    """The inverse of :func:`encode_grpc_message` (lenient: a bad escape stays as is)."""
    out = bytearray()
    i = 0
    while i < len(value):
        b = value[i]
        if b == 0x25 and i + 2 < len(value) and _is_hex(value[i + 1 : i + 3]):
            out.append(int(value[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(b)
            i += 1
    return out.decode("utf-8", "replace")


def _is_hex(pair: bytes) -> bool:
    return len(pair) == 2 and all(c in b"0123456789abcdefABCDEF" for c in pair)


def status_trailers(code: int, message: str) -> list[tuple[bytes, bytes]]:
    """The trailer fields of a call ending with ``code`` and ``message``."""
    fields = [(b"grpc-status", b"%d" % code)]
    if message:
        fields.append((b"grpc-message", encode_grpc_message(message)))
    return fields


def trailers_only(code: int, message: str) -> list[tuple[bytes, bytes]]:
    """A Trailers-Only response (headers and status in one block, with END_STREAM)."""
    return [*RESPONSE_HEADERS.headers, *status_trailers(code, message)]

