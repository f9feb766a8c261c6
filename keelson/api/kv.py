"""The KV service: Range, Put, DeleteRange, Txn, Compact, passed straight to the server
(through ``_status.forward``: the caller's identity, etcd's errors as gRPC status)."""

from __future__ import annotations

from typing import Any

import grpc.aio

from keelson.api._status import forward
from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.proto.etcdserverpb import rpc_pb2_grpc as pbg


class KVServicer(pbg.KVServicer):
    def __init__(self, server: Any) -> None:
        self._server = server

    async def Range(self, request: pb.RangeRequest, context: grpc.aio.ServicerContext) -> Any:
        return await forward("Range", context, self._server, "range", request)

    async def Put(self, request: pb.PutRequest, context: grpc.aio.ServicerContext) -> Any:
        return await forward("Put", context, self._server, "put", request)

    async def DeleteRange(
        self, request: pb.DeleteRangeRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        return await forward("DeleteRange", context, self._server, "delete_range", request)

    async def Txn(self, request: pb.TxnRequest, context: grpc.aio.ServicerContext) -> Any:
        return await forward("Txn", context, self._server, "txn", request)

    async def Compact(
        self, request: pb.CompactionRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        return await forward("Compact", context, self._server, "compact", request)
