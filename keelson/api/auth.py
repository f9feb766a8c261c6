"""The Auth service, as a member without an auth store answers it.

Authentication is not built yet (a later issue). Until the server provides an auth
method, this servicer answers as etcd 3.4 does with auth disabled and no users:
``Authenticate`` fails with ``etcdserver: authentication is not enabled``,
``AuthEnable`` fails with ``etcdserver: root user does not exist`` and ``AuthDisable``
succeeds. User and role management answers UNIMPLEMENTED. When the server object gains a
method named ``auth_<snake_case_method>`` (e.g. ``auth_user_add``), the call is passed to
it instead, with the caller's token as ``token=`` when one was sent.
"""

from __future__ import annotations

import re
from typing import Any

import grpc
import grpc.aio

from keelson.api._status import abort_with, identity_kwargs, unary
from keelson.proto import errors
from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.proto.etcdserverpb import rpc_pb2_grpc as pbg


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class AuthServicer(pbg.AuthServicer):
    def __init__(self, server: Any) -> None:
        self._server = server

    async def _dispatch(self, method: str, request: Any, context: Any) -> Any:
        attr = "auth_" + _snake(method).removeprefix("auth_")
        target = getattr(self._server, attr, None)
        if target is not None:
            kw = identity_kwargs(context)
            return await unary(method, context, lambda: target(request, **kw))
        if method == "Authenticate":
            await abort_with(context, errors.AUTH_NOT_ENABLED)
        if method == "AuthEnable":
            await abort_with(context, errors.ROOT_USER_NOT_EXIST)
        if method == "AuthDisable":
            return pb.AuthDisableResponse(header=self._server.header())
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED, f"keelson: {method} is not implemented yet"
        )


def _make(method: str) -> Any:
    async def handler(self: AuthServicer, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._dispatch(method, request, context)

    handler.__name__ = method
    return handler


for _method in pb.DESCRIPTOR.services_by_name["Auth"].methods:
    setattr(AuthServicer, _method.name, _make(_method.name))
