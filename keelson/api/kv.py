"""The KV service: Range, Put, DeleteRange, Txn, Compact, passed straight to the server."""

from __future__ import annotations

from typing import Any

import grpc.aio

from keelson.api._status import identity_kwargs, unary
from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.proto.etcdserverpb import rpc_pb2_grpc as pbg


class KVServicer(pbg.KVServicer):
    def __init__(self, server: Any) -> None:
        self._server = server

    async def Range(self, request: pb.RangeRequest, context: grpc.aio.ServicerContext) -> Any:
        kw = identity_kwargs(context)
        return await unary("Range", context, lambda: self._server.range(request, **kw))

    async def Put(self, request: pb.PutRequest, context: grpc.aio.ServicerContext) -> Any:
        kw = identity_kwargs(context)
        return await unary("Put", context, lambda: self._server.put(request, **kw))

    async def DeleteRange(
        self, request: pb.DeleteRangeRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        kw = identity_kwargs(context)
        return await unary("DeleteRange", context, lambda: self._server.delete_range(request, **kw))

    async def Txn(self, request: pb.TxnRequest, context: grpc.aio.ServicerContext) -> Any:
        kw = identity_kwargs(context)
        return await unary("Txn", context, lambda: self._server.txn(request, **kw))

    async def Compact(
        self, request: pb.CompactionRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        kw = identity_kwargs(context)
        return await unary("Compact", context, lambda: self._server.compact(request, **kw))
