"""The Watch service: one bidirectional stream carrying many watchers.

Theory of operation: each gRPC stream gets one server watch stream
(``server.new_watch_stream()``). Two tasks share it: the receive loop turns
create/cancel/progress requests into synchronous calls on the stream object and sends
any immediate answer (the "created" or "canceled" response); the send loop awaits
``stream.next()`` and forwards every batch the server produces, in order. A client
half-close ends the receive loop only; events keep flowing until the client cancels the
RPC (as etcd does). When the RPC ends for any reason the server stream is closed, which
releases all its watchers. Responses are written by one writer at a time (a lock), so a
created response is never interleaved inside another message. On the native front end
(whose context has ``write_encoded``) the send loop takes responses already serialized
(``stream.next_encoded()``), so the events of a write watched by many watchers are encoded
once, not once per watcher, and it lets the server stream push responses through
``send_encoded_nowait`` while the send loop is idle (every stream a write concerns is then
written in one loop turn, without waking a task per stream; see ``keelson.server.watch``).
Pushed messages bypass the lock: each is queued whole, so nothing can interleave inside
one. grpcio gets protobuf messages (``stream.next()``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio

from keelson.api._status import identity_of, status_code
from keelson.proto.errors import EtcdError
from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.proto.etcdserverpb import rpc_pb2_grpc as pbg

_log = logging.getLogger("keelson.api.watch")


class WatchServicer(pbg.WatchServicer):
    def __init__(self, server: Any) -> None:
        self._server = server

    async def Watch(
        self,
        request_iterator: AsyncIterator[pb.WatchRequest],
        context: grpc.aio.ServicerContext,
    ) -> None:
        stream = self._server.new_watch_stream()
        lock = asyncio.Lock()
        auth = getattr(self._server, "auth", None)  # the member's MemberAuth, if it has one
        identity = identity_of(context)

        async def send(resp: pb.WatchResponse) -> None:
            async with lock:
                await context.write(resp)

        # The encoded and pushed paths need both ends to offer them (test doubles of the
        # server stream may offer only ``next``).
        write_encoded = getattr(context, "write_encoded", None)
        if not hasattr(stream, "next_encoded"):
            write_encoded = None
        send_nowait = getattr(context, "send_encoded_nowait", None)
        push_to = getattr(stream, "push_to", None)
        if write_encoded is not None and send_nowait is not None and push_to is not None:
            push_to(send_nowait)

        async def send_loop() -> None:
            if write_encoded is not None:
                while True:
                    data = await stream.next_encoded()
                    if data is None:
                        return
                    async with lock:
                        await write_encoded(data)
            while True:
                resp = await stream.next()
                if resp is None:
                    return
                await send(resp)

        sender = asyncio.create_task(send_loop())
        try:
            async for req in request_iterator:
                which = req.WhichOneof("request_union")
                reply: pb.WatchResponse | None = None
                if which == "create_request":
                    if auth is not None:  # etcd checks read permission per created watcher
                        reply = await auth.watch_denied(identity, req.create_request)
                    if reply is None:
                        reply = stream.create(req.create_request)
                elif which == "cancel_request":
                    reply = stream.cancel(req.cancel_request.watch_id)
                elif which == "progress_request":
                    reply = stream.request_progress()
                if reply is not None:
                    await send(reply)
            # Client half-closed: keep delivering events until the RPC is cancelled or the
            # server stream ends.
            await sender
        except EtcdError as err:
            await context.abort(status_code(err), err.message)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception:
            _log.exception("watch stream failed")
            await context.abort(grpc.StatusCode.UNAVAILABLE, "keelson: watch stream failed")
        finally:
            sender.cancel()
            try:
                await sender
            except BaseException:  # noqa: B036 - the sender's outcome no longer matters
                pass
            stream.close()
