"""TLS for the client-facing listeners, in the two forms the two gRPC front ends need.

Theory of operation. ``keelson serve`` turns the client-side TLS flags into one
:class:`ServingTLS` (``keelson.cli.tls`` reads and checks the files; the api layer never
reads a flag): the PEM bytes grpcio's ``grpc.ssl_server_credentials`` wants, and the
``ssl.SSLContext`` (ALPN ``h2``) the native front end wraps its asyncio server in. Both
forms come from the same files and the same client-certificate rule, so the two front
ends accept exactly the same clients: with ``require_client_auth`` a client must present
a certificate that chains to ``root_certificates`` (etcd 3.4 requires one when
``--client-cert-auth`` *or* ``--trusted-ca-file`` is given).

``addresses`` are the ``host:port`` listen addresses served with TLS (the ``https://``
client URLs); every other client address is plain text, as etcd serves a mix of ``http://``
and ``https://`` listen URLs. ``http_context`` is the same certificate without ALPN ``h2``,
for ``https://`` ``--listen-metrics-urls`` (``/health``, ``/metrics`` over HTTP/1.1).

Invariant: ``require_client_auth`` implies ``root_certificates`` (grpcio refuses the
opposite; :meth:`ServingTLS.__post_init__` checks it under ``-O`` too).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field

__all__ = ["ServingTLS"]


@dataclass(frozen=True)
class ServingTLS:
    """One member's client-side TLS: the same certificate for every TLS address."""

    certificate_chain: bytes
    private_key: bytes = field(repr=False)
    root_certificates: bytes | None
    require_client_auth: bool
    context: ssl.SSLContext
    addresses: frozenset[str]
    http_context: ssl.SSLContext | None = None

    def __post_init__(self) -> None:
        if self.require_client_auth and not self.root_certificates:
            raise ValueError("require_client_auth needs root_certificates (the trusted CA)")

    def serves(self, address: str) -> bool:
        """Whether ``address`` (``host:port``) is one of the TLS addresses."""
        return address in self.addresses
