"""The Cluster service: membership calls passed straight to the server."""

from __future__ import annotations

from typing import Any

import grpc.aio

from keelson.api._status import identity_kwargs, unary
from keelson.proto.etcdserverpb import rpc_pb2_grpc as pbg


class ClusterServicer(pbg.ClusterServicer):
    def __init__(self, server: Any) -> None:
        self._server = server

    async def _call(self, method: str, attr: str, request: Any, context: Any) -> Any:
        kw = identity_kwargs(context)
        return await unary(method, context, lambda: getattr(self._server, attr)(request, **kw))

    async def MemberAdd(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._call("MemberAdd", "member_add", request, context)

    async def MemberRemove(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._call("MemberRemove", "member_remove", request, context)

    async def MemberUpdate(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._call("MemberUpdate", "member_update", request, context)

    async def MemberList(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._call("MemberList", "member_list", request, context)

    async def MemberPromote(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._call("MemberPromote", "member_promote", request, context)
