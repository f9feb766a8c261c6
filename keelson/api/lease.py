"""The Lease service, including the LeaseKeepAlive stream.

As etcd's v3rpc LeaseServer: TimeToLive of an unknown lease answers TTL -1 (not an
error); a keep-alive of an unknown lease answers TTL 0 on the stream (not an error). The
response header is taken *before* the renewal, so a client never sees a keep-alive at a
revision later than a revocation of the same lease.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc.aio

from keelson.api._status import abort_with, identity_kwargs, unary
from keelson.proto import errors
from keelson.proto.errors import EtcdError
from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.proto.etcdserverpb import rpc_pb2_grpc as pbg

_log = logging.getLogger("keelson.api.lease")


class LeaseServicer(pbg.LeaseServicer):
    def __init__(self, server: Any) -> None:
        self._server = server

    async def LeaseGrant(
        self, request: pb.LeaseGrantRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        kw = identity_kwargs(context)
        return await unary("LeaseGrant", context, lambda: self._server.lease_grant(request, **kw))

    async def LeaseRevoke(
        self, request: pb.LeaseRevokeRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        kw = identity_kwargs(context)
        return await unary("LeaseRevoke", context, lambda: self._server.lease_revoke(request, **kw))

    async def LeaseTimeToLive(
        self, request: pb.LeaseTimeToLiveRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        kw = identity_kwargs(context)

        async def call() -> pb.LeaseTimeToLiveResponse:
            try:
                resp: pb.LeaseTimeToLiveResponse = await self._server.lease_time_to_live(
                    request, **kw
                )
                return resp
            except EtcdError as err:
                if err != errors.LEASE_NOT_FOUND:
                    raise
                return pb.LeaseTimeToLiveResponse(
                    header=self._server.header(), ID=request.ID, TTL=-1
                )

        return await unary("LeaseTimeToLive", context, call)

    async def LeaseLeases(
        self, request: pb.LeaseLeasesRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        kw = identity_kwargs(context)
        return await unary("LeaseLeases", context, lambda: self._server.lease_leases(request, **kw))

    async def LeaseKeepAlive(
        self,
        request_iterator: AsyncIterator[pb.LeaseKeepAliveRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.LeaseKeepAliveResponse]:
        kw = identity_kwargs(context)
        async for req in request_iterator:
            header = self._server.header()
            try:
                ttl = await self._server.lease_renew(req.ID, **kw)
            except EtcdError as err:
                if err != errors.LEASE_NOT_FOUND:
                    await abort_with(context, err)
                    return
                ttl = 0
            except Exception:
                _log.exception("LeaseKeepAlive of lease %d failed", req.ID)
                await context.abort(grpc.StatusCode.UNAVAILABLE, "keelson: keep-alive failed")
                return
            yield pb.LeaseKeepAliveResponse(header=header, ID=req.ID, TTL=ttl)
