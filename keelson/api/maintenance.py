"""The Maintenance service, including the Snapshot stream.

Snapshot: the server yields the bytes of one consistent backend snapshot (a bbolt file, the
format etcd's snapshots have and etcdctl's ``snapshot status/restore`` read) in chunks; each
chunk is sent as a SnapshotResponse whose ``remaining_bytes`` counts what is still to
come after it (the last data chunk says 0), then one final message carries the SHA-256
of all the data (32 bytes), which etcdctl checks, as etcd 3.4 does. etcdctl
finds that checksum only when the data is a multiple of 512 bytes (true of bbolt and
LMDB files). The server's chunk iterator does not announce the total size, so the chunks
are collected before the first is sent: memory use is the size of the snapshot (a known
limitation until the server exposes the size).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio

from keelson.api._status import abort_with, identity_kwargs, unary
from keelson.proto.errors import EtcdError
from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.proto.etcdserverpb import rpc_pb2_grpc as pbg

_log = logging.getLogger("keelson.api.maintenance")


class MaintenanceServicer(pbg.MaintenanceServicer):
    def __init__(self, server: Any) -> None:
        self._server = server

    async def _call(self, method: str, attr: str, request: Any, context: Any) -> Any:
        kw = identity_kwargs(context)
        return await unary(method, context, lambda: getattr(self._server, attr)(request, **kw))

    async def Alarm(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._call("Alarm", "alarm", request, context)

    async def Status(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._call("Status", "status", request, context)

    async def Defragment(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._call("Defragment", "defragment", request, context)

    async def Hash(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._call("Hash", "hash", request, context)

    async def HashKV(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._call("HashKV", "hash_kv", request, context)

    async def MoveLeader(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._call("MoveLeader", "move_leader", request, context)

    async def Snapshot(
        self, request: pb.SnapshotRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.SnapshotResponse]:
        kw = identity_kwargs(context)
        try:
            chunks = [c async for c in self._server.snapshot(**kw)]
        except EtcdError as err:
            await abort_with(context, err)
            return
        except Exception:
            _log.exception("snapshot failed")
            await context.abort(grpc.StatusCode.UNAVAILABLE, "keelson: snapshot failed")
            return
        remaining = sum(len(c) for c in chunks)
        digest = hashlib.sha256()
        for chunk in chunks:
            remaining -= len(chunk)
            digest.update(chunk)
            yield pb.SnapshotResponse(remaining_bytes=remaining, blob=chunk)
        yield pb.SnapshotResponse(remaining_bytes=0, blob=digest.digest())
