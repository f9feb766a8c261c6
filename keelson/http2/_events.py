"""Events ``H2Connection.receive_data`` returns: what the peer did, in wire order.

Every event is a frozen, slotted dataclass: plain data, safe to keep, compare and log.
Header lists are tuples of ``(name, value)`` byte pairs exactly as decoded (names are
lowercase — anything else was refused as malformed before an event was made).

Guarantees:
* A stream's events begin with ``RequestReceived`` and nothing follows its ``StreamEnded``
  except ``StreamReset``/``WindowUpdated``; after ``StreamReset`` nothing more for it.
* Streams the application never saw (refused, malformed request headers, ignored after our
  GOAWAY) produce no events at all.
* ``ConnectionTerminated(remote=False)`` is the last event the connection ever produces.
"""

from __future__ import annotations

from dataclasses import dataclass

from keelson.http2.errors import ErrorCode

Headers = tuple[tuple[bytes, bytes], ...]


class Event:
    """Base class of every event."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class RequestReceived(Event):
    """A new stream opened with a valid request header list."""

    stream_id: int
    headers: Headers


@dataclass(frozen=True, slots=True)
class TrailersReceived(Event):
    """The client ended its side of the stream with a trailer section."""

    stream_id: int
    headers: Headers


@dataclass(frozen=True, slots=True)
class DataReceived(Event):
    """Request body bytes arrived.

    ``flow_controlled_length`` (``len(data)`` plus any padding) is what the application must
    hand back with ``acknowledge_received_data`` once it has consumed ``data``; until then
    those bytes keep the stream's and the connection's windows closed.
    """

    stream_id: int
    data: bytes
    flow_controlled_length: int


@dataclass(frozen=True, slots=True)
class StreamEnded(Event):
    """The client finished sending on the stream (END_STREAM); responses may continue."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamReset(Event):
    """The stream is gone: reset by the client (``remote``) or by us for its fault."""

    stream_id: int
    error_code: ErrorCode | int
    remote: bool


@dataclass(frozen=True, slots=True)
class WindowUpdated(Event):
    """Our send window grew (``stream_id`` 0: the connection's window)."""

    stream_id: int
    delta: int


@dataclass(frozen=True, slots=True)
class RemoteSettingsChanged(Event):
    """The client's SETTINGS changed these values: ``(code, old, new)`` triples."""

    changes: tuple[tuple[int, int, int], ...]


@dataclass(frozen=True, slots=True)
class SettingsAcknowledged(Event):
    """The client acknowledged our SETTINGS; the listed values now bind it."""

    settings: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class PingReceived(Event):
    """The client pinged us; the PING ACK is already queued."""

    data: bytes


@dataclass(frozen=True, slots=True)
class PingAck(Event):
    """The client answered one of our pings."""

    data: bytes


@dataclass(frozen=True, slots=True)
class ConnectionTerminated(Event):
    """GOAWAY: sent by the client (``remote``) or by us because the client broke the protocol.

    ``remote=True``: the client will open no more streams; streams up to now continue.
    ``remote=False``: we sent GOAWAY with ``error_code``; the connection is dead, flush
    ``data_to_send()`` and close the transport.
    """

    error_code: ErrorCode | int
    last_stream_id: int
    additional_data: bytes
    remote: bool
