"""keelson.http2: a sans-I/O HTTP/2 server connection (RFC 9113) sized for gRPC.

In the h11 style: an ``H2Connection`` is fed the bytes a socket received
(``receive_data``) and returns events; the application answers through ``send_headers``,
``send_data``, ``send_trailers``, ``reset_stream``, ``ping``, ``goaway`` and
``acknowledge_received_data``; ``data_to_send()`` returns the bytes to write. It owns no
socket, no task and no clock (an optional caller-supplied clock only meters rapid resets),
so every behaviour is testable with byte strings.

Invariants the package guarantees (details in ``_connection``):
* nothing the peer sends makes ``receive_data`` raise; protocol violations are answered on
  the wire (RST_STREAM / GOAWAY with RFC 9113's code) and reported as events;
* memory held per connection is bounded by ``H2Config``, never by the peer;
* send windows are never exceeded, and HPACK blocks are encoded in wire order;
* ``HeaderBlock.static`` encodings are state-free, so one instance serves every connection
  (proof in ``_headers``); repeated request header blocks are decoded once while the HPACK
  table is unchanged (proof in ``_decoding``).

Layering: stdlib and ``hpack`` only; no asyncio (the protocol around it lives elsewhere).
"""

from keelson.http2._config import H2Config
from keelson.http2._connection import H2Connection
from keelson.http2._events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    Headers,
    PingAck,
    PingReceived,
    RemoteSettingsChanged,
    RequestReceived,
    SettingsAcknowledged,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from keelson.http2._headers import HeaderBlock
from keelson.http2._settings import SettingCode
from keelson.http2.errors import (
    ConnectionClosedError,
    ErrorCode,
    H2Error,
    LocalProtocolError,
    StreamClosedError,
)

__all__ = [
    "ConnectionClosedError",
    "ConnectionTerminated",
    "DataReceived",
    "ErrorCode",
    "Event",
    "H2Config",
    "H2Connection",
    "H2Error",
    "HeaderBlock",
    "Headers",
    "LocalProtocolError",
    "PingAck",
    "PingReceived",
    "RemoteSettingsChanged",
    "RequestReceived",
    "SettingCode",
    "SettingsAcknowledged",
    "StreamClosedError",
    "StreamEnded",
    "StreamReset",
    "TrailersReceived",
    "WindowUpdated",
]
