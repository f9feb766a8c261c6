"""The gRPC front end tests build in-process, chosen by ``KEELSON_GRPC_SERVER``.

Members started as processes (``keelson serve``) read ``KEELSON_GRPC_SERVER`` themselves
(``keelson.cli.config``: the default of ``--grpc-server``); tests that serve the api layer
in-process (against :class:`~keelson.testing.fake_server.FakeServer`) call
:func:`serve_grpc` so that the same variable switches them too. Unset or empty: grpcio.
"""

from __future__ import annotations

import os
from typing import Any

from keelson.api.grpc_server import DEFAULT_MAX_REQUEST_BYTES, bind, create_grpc_server
from keelson.api.native import NativeServer

#: Same name and values as ``keelson.cli.config.GRPC_SERVER_ENV``.
ENV = "KEELSON_GRPC_SERVER"


def grpc_server_kind() -> str:
    """``"grpcio"`` or ``"native"``, from the environment (ValueError on anything else)."""
    kind = os.environ.get(ENV, "") or "native"
    if kind not in ("grpcio", "native"):
        raise ValueError(f"{ENV}={kind!r}: want grpcio or native")
    return kind


def serve_grpc(
    server: Any, address: str = "127.0.0.1:0", max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
) -> tuple[Any, int]:
    """An unstarted front end for ``server`` bound to ``address``, and its port.

    The object has ``start()`` and ``stop(grace)`` (a ``grpc.aio.Server`` or a
    ``NativeServer``); call from inside the event loop that will run it.
    """
    if grpc_server_kind() == "native":
        native = NativeServer(server, max_request_bytes)
        return native, native.add_insecure_port(address)
    srv = create_grpc_server(server, max_request_bytes)
    return srv, bind(srv, address)
