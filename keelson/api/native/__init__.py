"""keelson's own gRPC front end: etcd's services over ``keelson.http2`` on asyncio/uvloop.

Selected with ``keelson serve --grpc-server=native`` (the default is grpcio). It serves the
same servicers as ``keelson.api.grpc_server`` - only the transport differs:

* ``_wire``: gRPC's message framing, ``grpc-timeout``, status trailers (pure functions);
* ``_call``: one call - the handler task, its request queue and the ServicerContext subset
  keelson's servicers use;
* ``_protocol``: the asyncio Protocol of one connection around ``H2Connection``;
* ``_server``: routing table, listening sockets, graceful stop.
"""

from keelson.api.native._server import NativeServer, build_native_server, build_routes

__all__ = ["NativeServer", "build_native_server", "build_routes"]
