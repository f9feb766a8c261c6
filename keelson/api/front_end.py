"""A member's whole client-facing side: the gRPC services plus the HTTP endpoints.

``keelson.server.member.run_member`` takes a factory ``(server, client addresses,
max_request_bytes) -> object with start() / stop(grace)``; :func:`front_end_factory` makes
one that serves etcd's gRPC API on the client addresses and, when ``--listen-metrics-urls``
is set, ``/health``, ``/version`` and ``/metrics`` on those addresses. Both start and stop
together. ``--grpc-server`` picks the gRPC implementation: ``grpcio`` (grpc.aio) or
``native`` (``keelson.api.native``, on keelson's own HTTP/2); both serve the same servicers.
With a :class:`~keelson.api.serving_tls.ServingTLS`, the client addresses it lists are
served over TLS by either implementation (and the HTTP endpoints stay on their own URLs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from keelson.api.grpc_server import DEFAULT_MAX_REQUEST_BYTES, build_grpc_server
from keelson.api.http import HttpEndpoints
from keelson.api.native import build_native_server
from keelson.api.serving_tls import ServingTLS

GRPC_SERVERS = ("grpcio", "native")


class FrontEnd:
    """The gRPC server and the optional HTTP endpoints of one member."""

    def __init__(self, grpc_server: Any, http: HttpEndpoints | None) -> None:
        self.grpc = grpc_server
        self.http = http

    async def start(self) -> None:
        await self.grpc.start()
        if self.http is not None:
            await self.http.start()

    async def stop(self, grace: float | None) -> None:
        if self.http is not None:
            await self.http.stop()
        await self.grpc.stop(grace)


def front_end_factory(
    metrics_addresses: Sequence[tuple[str, int]],
    request_timeout: float,
    grpc_server: str = "native",
    tls: ServingTLS | None = None,
    metrics_tls: Sequence[tuple[str, int]] = (),
) -> Callable[..., FrontEnd]:
    """The ``client_server`` factory ``keelson serve`` hands to the member.

    ``grpc_server``: ``"grpcio"`` or ``"native"`` (ValueError otherwise). ``tls``: the
    client-side TLS (its ``addresses`` are served with it). ``metrics_tls``: the metrics
    addresses that are ``https://`` (served with ``tls.http_context``).
    """
    if grpc_server not in GRPC_SERVERS:
        raise ValueError(f"unknown gRPC server {grpc_server!r} (want grpcio or native)")
    build_grpc = build_native_server if grpc_server == "native" else build_grpc_server

    def build(
        server: Any,
        listen_addresses: Sequence[str],
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    ) -> FrontEnd:
        grpc = build_grpc(server, listen_addresses, max_request_bytes, tls)
        http = (
            HttpEndpoints(
                server,
                metrics_addresses,
                request_timeout,
                ssl_context=tls.http_context if tls is not None else None,
                tls_addresses=metrics_tls,
            )
            if metrics_addresses
            else None
        )
        return FrontEnd(grpc, http)

    return build
