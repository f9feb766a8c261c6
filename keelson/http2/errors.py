"""Errors of keelson.http2: the RFC 9113 error codes and the exceptions the API raises.

Two kinds of failure exist and they never mix:

* **The peer broke the protocol.** ``H2Connection.receive_data`` never raises for that: it
  answers on the wire (RST_STREAM for a stream error, GOAWAY for a connection error) and
  reports it as an event (``StreamReset(remote=False)`` / ``ConnectionTerminated``).
  ``ProtocolError`` / ``StreamError`` are the internal carriers of those decisions; they do
  not escape the connection object.
* **The caller broke the API** (sending on a stream that cannot send, acknowledging more data
  than was received, sending after the connection closed): ``LocalProtocolError`` and its
  subclasses are raised by the sending methods and nothing is queued.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.IntEnum):
    """RFC 9113 section 7 error codes, as carried by RST_STREAM and GOAWAY."""

    NO_ERROR = 0x0
    PROTOCOL_ERROR = 0x1
    INTERNAL_ERROR = 0x2
    FLOW_CONTROL_ERROR = 0x3
    SETTINGS_TIMEOUT = 0x4
    STREAM_CLOSED = 0x5
    FRAME_SIZE_ERROR = 0x6
    REFUSED_STREAM = 0x7
    CANCEL = 0x8
    COMPRESSION_ERROR = 0x9
    CONNECT_ERROR = 0xA
    ENHANCE_YOUR_CALM = 0xB
    INADEQUATE_SECURITY = 0xC
    HTTP_1_1_REQUIRED = 0xD


def error_code(value: int) -> ErrorCode | int:
    """Return ``value`` as an ``ErrorCode`` when it is a known code, else the plain int.

    RFC 9113 section 7: unknown codes must not trigger special behaviour, so they are kept
    as they arrived rather than refused.
    """
    try:
        return ErrorCode(value)
    except ValueError:
        return value


class H2Error(Exception):
    """Base class of every exception keelson.http2 defines."""


class ProtocolError(H2Error):
    """The peer broke RFC 9113 in a way that ends the connection (sent as GOAWAY ``code``)."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class StreamError(H2Error):
    """The peer broke RFC 9113 on one stream only (sent as RST_STREAM ``code``)."""

    def __init__(self, stream_id: int, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.stream_id = stream_id
        self.code = code
        self.message = message


class LocalProtocolError(H2Error):
    """The caller asked for something the protocol or the connection's state forbids."""


class StreamClosedError(LocalProtocolError):
    """The caller sent on a stream that can no longer send (ended, reset or never opened).

    A handler racing a client's RST_STREAM gets this; it is the normal way to learn the
    client went away, so callers catch it around their sends.
    """

    def __init__(self, stream_id: int, message: str) -> None:
        super().__init__(message)
        self.stream_id = stream_id


class ConnectionClosedError(LocalProtocolError):
    """The caller sent after the connection was terminated (by either side)."""
