"""``NativeServer``: the gRPC services of a member on keelson's own HTTP/2 (no grpcio).

Theory of operation. The routing table maps each request path
(``/etcdserverpb.KV/Put`` ...) to the bound method of the *same* servicer objects the
grpcio front end registers (``keelson.api.kv`` and friends) plus its shape (unary, server
streaming, bidirectional) and request parser, read from the protobuf service descriptors -
so the two front ends cannot disagree on which methods exist. Each accepted TCP connection
gets a :class:`~._protocol.GrpcProtocol`.

The interface is the part of ``grpc.aio.Server`` the member uses: ``add_insecure_port``
(binds at once and returns the port, so port 0 works), ``start()``, ``stop(grace)``; plus
``add_tls_port(address, context)`` for a TLS listener (an ``ssl.SSLContext`` offering ALPN
``h2``; connections that do not negotiate it are closed, see ``_protocol``).
``stop`` sends GOAWAY on every connection, lets open calls finish for up to ``grace``
seconds, then ends the rest with UNAVAILABLE and closes the connections (``grace`` None:
no wait, as grpc.aio).

Limits: a request message may be up to ``max_request_bytes`` + 512 KiB (etcd's gRPC
headroom, see ``keelson.api.grpc_server``); larger ones end the call with
RESOURCE_EXHAUSTED before their bytes are buffered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Sequence
from typing import Any

from keelson.api.auth import AuthServicer
from keelson.api.cluster import ClusterServicer
from keelson.api.grpc_server import DEFAULT_MAX_REQUEST_BYTES, GRPC_OVERHEAD_BYTES
from keelson.api.kv import KVServicer
from keelson.api.lease import LeaseServicer
from keelson.api.maintenance import MaintenanceServicer
from keelson.api.native._call import Kind, Route
from keelson.api.native._protocol import GrpcProtocol
from keelson.api.serving_tls import ServingTLS
from keelson.api.watch import WatchServicer
from keelson.http2 import H2Config
from keelson.proto.etcdserverpb import rpc_pb2 as pb

_log = logging.getLogger("keelson.api.native")

#: Concurrent streams one connection may open (grpc-go's server default is unlimited;
#: etcd's clients multiplex every call of a process onto one connection).
MAX_CONCURRENT_STREAMS = 1000
_KINDS = {
    (False, False): Kind.UNARY_UNARY,
    (False, True): Kind.UNARY_STREAM,
    (True, False): Kind.STREAM_UNARY,
    (True, True): Kind.STREAM_STREAM,
}


def build_routes(servicers: dict[str, Any]) -> dict[bytes, Route]:
    """``{b"/etcdserverpb.<Service>/<Method>": Route}`` for every method of every service.

    ``servicers`` maps a service name of ``rpc.proto`` (``"KV"``) to its servicer object.
    """
    routes: dict[bytes, Route] = {}
    for name, servicer in servicers.items():
        service = pb.DESCRIPTOR.services_by_name[name]
        for method in service.methods:
            request_class = getattr(pb, method.input_type.name)
            if request_class.DESCRIPTOR.full_name != method.input_type.full_name:
                raise TypeError(f"{method.full_name}: request type not in rpc_pb2")
            path = f"/{service.full_name}/{method.name}".encode()
            routes[path] = Route(
                path=path,
                kind=_KINDS[(method.client_streaming, method.server_streaming)],
                handler=getattr(servicer, method.name),
                parse=request_class.FromString,
            )
    return routes


class NativeServer:
    """etcd's gRPC API (KV, Watch, Lease, Cluster, Maintenance, Auth) over ``keelson.http2``."""

    def __init__(self, server: Any, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES) -> None:
        if max_request_bytes <= 0:
            raise ValueError(f"max_request_bytes must be positive, got {max_request_bytes}")
        servicers = {
            "KV": KVServicer(server),
            "Watch": WatchServicer(server),
            "Lease": LeaseServicer(server),
            "Cluster": ClusterServicer(server),
            "Maintenance": MaintenanceServicer(server),
            "Auth": AuthServicer(server),
        }
        self.routes = build_routes(servicers)
        self.services = frozenset(
            pb.DESCRIPTOR.services_by_name[name].full_name for name in servicers
        )
        self.max_receive_bytes = max_request_bytes + GRPC_OVERHEAD_BYTES
        self.h2_config = H2Config(max_concurrent_streams=MAX_CONCURRENT_STREAMS)
        self._sockets: list[tuple[socket.socket, ssl.SSLContext | None]] = []
        self._listeners: list[asyncio.AbstractServer] = []
        self._connections: set[GrpcProtocol] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    def add_insecure_port(self, address: str) -> int:
        """Bind ``host:port`` now (port 0: the OS picks); return the bound port."""
        return self._bind(address, None)

    def add_tls_port(self, address: str, context: ssl.SSLContext) -> int:
        """Bind ``host:port`` now for TLS connections made with ``context`` (which must offer
        ALPN ``h2``); return the bound port."""
        return self._bind(address, context)

    def _bind(self, address: str, context: ssl.SSLContext | None) -> int:
        host, _, port = address.rpartition(":")
        host = host.strip("[]") or "0.0.0.0"
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
        family, kind, proto, _, sockaddr = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
            sock.listen(1024)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise RuntimeError(f"cannot listen on {address}") from None
        self._sockets.append((sock, context))
        bound: int = sock.getsockname()[1]
        return bound

    async def start(self) -> None:
        """Accept connections on every bound address."""
        loop = asyncio.get_running_loop()
        for sock, context in self._sockets:
            listener = await loop.create_server(
                lambda: GrpcProtocol(self), sock=sock, ssl=context
            )
            self._listeners.append(listener)

    async def stop(self, grace: float | None) -> None:
        """Stop accepting, GOAWAY every connection, drain calls for ``grace`` s, close."""
        for listener in self._listeners:
            listener.close()
        self._listeners.clear()
        self._sockets.clear()
        for conn in list(self._connections):
            conn.shutdown()
        if grace:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), grace)
        for conn in list(self._connections):
            conn.cancel_calls()
        if self._connections:  # give the UNAVAILABLE answers a moment to be written
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), 1.0)
        for conn in list(self._connections):
            conn.abort()

    # ------------------------------------------------------------ used by connections

    def connection_opened(self, conn: GrpcProtocol) -> None:
        self._connections.add(conn)
        self._idle.clear()

    def connection_closed(self, conn: GrpcProtocol) -> None:
        self._connections.discard(conn)
        if not self._connections:
            self._idle.set()


def build_native_server(
    server: Any,
    listen_addresses: Sequence[str],
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    tls: ServingTLS | None = None,
) -> NativeServer:
    """The native client-facing server bound to every ``host:port`` (with TLS where ``tls``
    says so; not yet started)."""
    srv = NativeServer(server, max_request_bytes)
    for address in listen_addresses:
        if tls is not None and tls.serves(address):
            srv.add_tls_port(address, tls.context)
        else:
            srv.add_insecure_port(address)
    return srv
