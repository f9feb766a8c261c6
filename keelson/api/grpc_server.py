"""Assembling the gRPC server: services, message size limits, listen addresses.

etcd lets a request body be up to ``max_request_bytes`` (default 1.5 MiB) and sets gRPC's
receive limit to that plus 512 KiB of headroom, so a request slightly over the limit
reaches the server and gets etcd's ``etcdserver: request is too large`` (the server's
check) while a grossly oversized one is refused by gRPC with RESOURCE_EXHAUSTED. Sends
are unlimited, as in etcd.

TLS: an address listed in a :class:`~keelson.api.serving_tls.ServingTLS` is bound with
``grpc.ssl_server_credentials`` (the trusted CA as root certificates, a client certificate
required when the member requires one); the others stay plain text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc.aio

from keelson.api.auth import AuthServicer
from keelson.api.cluster import ClusterServicer
from keelson.api.kv import KVServicer
from keelson.api.lease import LeaseServicer
from keelson.api.maintenance import MaintenanceServicer
from keelson.api.serving_tls import ServingTLS
from keelson.api.watch import WatchServicer
from keelson.proto.etcdserverpb import rpc_pb2_grpc as pbg

DEFAULT_MAX_REQUEST_BYTES = 3 * 512 * 1024
GRPC_OVERHEAD_BYTES = 512 * 1024
MAX_CONCURRENT_STREAMS = 2**31 - 1


def grpc_options(max_request_bytes: int) -> list[tuple[str, Any]]:
    """The channel options etcd uses for its client-facing gRPC server."""
    if max_request_bytes <= 0:
        raise ValueError(f"max_request_bytes must be positive, got {max_request_bytes}")
    return [
        ("grpc.max_receive_message_length", max_request_bytes + GRPC_OVERHEAD_BYTES),
        ("grpc.max_send_message_length", 2**31 - 1),
        ("grpc.max_concurrent_streams", MAX_CONCURRENT_STREAMS),
        ("grpc.so_reuseport", 0),
    ]


def create_grpc_server(
    server: Any, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
) -> grpc.aio.Server:
    """A grpc.aio server with etcd's KV, Watch, Lease, Cluster, Maintenance and Auth, unbound."""
    srv = grpc.aio.server(options=grpc_options(max_request_bytes))
    pbg.add_KVServicer_to_server(KVServicer(server), srv)  # type: ignore[no-untyped-call]
    pbg.add_WatchServicer_to_server(WatchServicer(server), srv)  # type: ignore[no-untyped-call]
    pbg.add_LeaseServicer_to_server(LeaseServicer(server), srv)  # type: ignore[no-untyped-call]
    pbg.add_ClusterServicer_to_server(ClusterServicer(server), srv)  # type: ignore[no-untyped-call]
    pbg.add_MaintenanceServicer_to_server(MaintenanceServicer(server), srv)  # type: ignore[no-untyped-call]
    pbg.add_AuthServicer_to_server(AuthServicer(server), srv)  # type: ignore[no-untyped-call]
    return srv


def bind(srv: grpc.aio.Server, address: str) -> int:
    """Listen on ``host:port`` (port 0: the OS picks); return the bound port."""
    port: int = srv.add_insecure_port(address)
    if port == 0:
        raise RuntimeError(f"cannot listen on {address}")
    return port


def bind_tls(srv: grpc.aio.Server, address: str, tls: ServingTLS) -> int:
    """Listen with TLS on ``host:port`` (port 0: the OS picks); return the bound port."""
    credentials = grpc.ssl_server_credentials(
        [(tls.private_key, tls.certificate_chain)],
        root_certificates=tls.root_certificates,
        require_client_auth=tls.require_client_auth,
    )
    port: int = srv.add_secure_port(address, credentials)
    if port == 0:
        raise RuntimeError(f"cannot listen on {address}")
    return port


def build_grpc_server(
    server: Any,
    listen_addresses: Sequence[str],
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    tls: ServingTLS | None = None,
) -> grpc.aio.Server:
    """The client-facing server, bound to every ``host:port`` in ``listen_addresses``
    (with TLS where ``tls`` says so).

    Not yet started: ``await srv.start()``. Raises RuntimeError if an address cannot be
    bound. Use :func:`create_grpc_server` and :func:`bind` to learn OS-assigned ports.
    """
    srv = create_grpc_server(server, max_request_bytes)
    for address in listen_addresses:
        if tls is not None and tls.serves(address):
            bind_tls(srv, address, tls)
        else:
            bind(srv, address)
    return srv
