"""keelson.transport: member-to-member raft messages, requests and snapshot streaming.

``Transport`` (transport.py) moves frames over asyncio TCP/TLS connections; ``codec`` is the
binary encoding of raft messages and ``frames`` the connection's framing and handshake;
``discovery`` asks a running member for the cluster id and member list (joining members).
"""

from keelson.transport.codec import CodecError, decode_message, encode_message
from keelson.transport.discovery import DiscoveryError, DiscoveryInfo, discover
from keelson.transport.transport import (
    PeerRejected,
    PeerStats,
    RequestHandler,
    Transport,
    TransportError,
)

__all__ = [
    "CodecError",
    "DiscoveryError",
    "DiscoveryInfo",
    "PeerRejected",
    "PeerStats",
    "RequestHandler",
    "Transport",
    "TransportError",
    "decode_message",
    "discover",
    "encode_message",
]
