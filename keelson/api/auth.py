"""The Auth service: etcd's user, role and authentication calls, passed to the member.

Theory of operation. A member's auth logic is its ``auth`` attribute
(:class:`keelson.server.auth.MemberAuth`); each RPC ``FooBar`` is passed to its method
``foo_bar`` (``AuthEnable`` -> ``auth_enable``, ``UserAdd`` -> ``user_add``) with the
caller's token as ``identity=`` when one was sent in the ``token`` metadata, and errors
become etcd's status and message through :func:`~keelson.api._status.unary`.
``Authenticate`` gets the client's address instead of a token (it is what the password
back-off counts failures against). Nothing here looks at passwords or tokens.

A server object without ``auth`` (the test fakes) is answered as etcd 3.4 answers with
auth disabled and no users: ``Authenticate`` fails with ``etcdserver: authentication is
not enabled``, ``AuthEnable`` with ``etcdserver: root user does not exist``,
``AuthDisable`` succeeds, and the rest is UNIMPLEMENTED.
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


def peer_host(peer: str | None) -> str | None:
    """The client's address without the port, from gRPC's ``context.peer()``
    (``ipv4:127.0.0.1:5000`` -> ``127.0.0.1``, ``ipv6:[::1]:5000`` -> ``[::1]``); the port
    changes with every connection, so failures are counted per host."""
    if not peer:
        return None
    kind, _, address = peer.partition(":")
    if kind in ("ipv4", "ipv6") and address:
        host, sep, port = address.rpartition(":")
        if sep and port.isdigit():
            return host
        return address
    return peer


class AuthServicer(pbg.AuthServicer):
    def __init__(self, server: Any) -> None:
        self._server = server

    async def _dispatch(self, method: str, request: Any, context: Any) -> Any:
        auth = getattr(self._server, "auth", None)
        if auth is None:
            return await self._without_auth(method, context)
        if method == "Authenticate":
            peer = peer_host(context.peer())
            return await unary(method, context, lambda: auth.authenticate(request, peer=peer))
        target = getattr(auth, _snake(method))
        kw = identity_kwargs(context)
        return await unary(method, context, lambda: target(request, **kw))

    async def _without_auth(self, method: str, context: Any) -> Any:
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
