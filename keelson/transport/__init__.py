"""keelson.transport: member-to-member raft messages, requests and snapshot streaming.

``Transport`` (transport.py) moves frames over asyncio TCP/TLS connections; ``codec`` is the
binary encoding of raft messages and ``frames`` the connection's framing and handshake.
"""

from keelson.transport.codec import CodecError, decode_message, encode_message
from keelson.transport.transport import PeerStats, RequestHandler, Transport, TransportError

__all__ = [
    "CodecError",
    "PeerStats",
    "RequestHandler",
    "Transport",
    "TransportError",
    "decode_message",
    "encode_message",
]
