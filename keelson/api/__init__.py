"""keelson.api: etcd's v3 gRPC services on grpc.aio.

The wire layer translates between gRPC and the member object (``keelson.server``); it has
no logic of its own. Public entry point: :func:`build_grpc_server`.
"""

from keelson.api.grpc_server import bind, build_grpc_server, create_grpc_server, grpc_options

__all__ = ["bind", "build_grpc_server", "create_grpc_server", "grpc_options"]
