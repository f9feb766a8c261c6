"""One gRPC call on the native front end, and the ``ServicerContext`` its handler sees.

Theory of operation. The connection (``_protocol``) creates a :class:`Call` per request
stream and feeds it what the peer sent (``on_data``/``on_end``/``on_reset``); the call runs
the servicer method in its own task and answers through the connection's ``H2Connection``.
A ``Call`` *is* the context object handed to keelson's servicers: it implements the part
of ``grpc.aio.ServicerContext`` they use (``abort``, ``invocation_metadata``, ``peer``,
``auth_context``, ``write``, ``time_remaining``, ``cancelled``, ``done``,
``add_done_callback``, ``set_code``/``set_details``), so the grpcio and native front
ends share one translation layer (``keelson.api.kv`` and friends).

Invariants:
* The status is sent at most once (``_closed``); nothing is sent after it, and a send
  after the stream was reset raises :class:`StreamGone` in the handler.
* Flow control: request bytes of a message the handler has not consumed yet stay
  unacknowledged (they keep the peer's window closed), so a slow handler slows the peer
  instead of growing a queue; bytes of an incomplete message are acknowledged at once
  (the reader bounds them by the message size limit), so a message larger than the stream
  window still arrives. When the call ends, every unconsumed byte is acknowledged.
* ``write`` returns only once the stream has at most ``WRITE_HIGH_WATER`` bytes waiting
  for the peer's window and the transport is not paused: a streaming handler is paced by
  the client's reading, never buffered without bound. keelson's own extensions for
  messages already serialized keep that: ``write_encoded`` waits the same way, and
  ``send_encoded_nowait`` (which never waits) answers False once the backlog is over the
  mark, after which its caller must go through ``write_encoded``.
* Cancellation: a client RST_STREAM (or the connection's loss) cancels the handler task;
  a ``grpc-timeout`` cancels it too and ends the call with DEADLINE_EXCEEDED.
* Cleanup (done callbacks run, the connection forgets the call) happens exactly once:
  at the end of the handler task (``_run``'s ``finally``, no done callback per call), for
  a task cancelled before it ever ran as that task's done callback, and for a call ended
  without a task at once.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, NoReturn

import grpc
import grpc.aio
from google.protobuf.message import DecodeError

from keelson.api.native._wire import (
    RESPONSE_HEADERS,
    TRAILERS_OK,
    Message,
    MessageReader,
    WireError,
    frame_message,
    status_trailers,
    trailers_only,
)
from keelson.http2 import ErrorCode, H2Error

if TYPE_CHECKING:
    from keelson.api.native._protocol import GrpcProtocol

_log = logging.getLogger("keelson.api.native")

#: A streaming ``write`` waits while more than this many response bytes of its stream are
#: queued behind the peer's flow-control window.
WRITE_HIGH_WATER = 256 * 1024

OK, CANCELLED, UNKNOWN, DEADLINE_EXCEEDED, INTERNAL, UNAVAILABLE = 0, 1, 2, 4, 13, 14

_HIDDEN_METADATA = frozenset(
    {b"content-type", b"te", b"grpc-timeout", b"grpc-encoding", b"grpc-accept-encoding"}
)


#: ``invocation_metadata()``: (key, value) pairs, ``-bin`` values as bytes, others as str.
Metadata = tuple[tuple[str, str | bytes], ...]


def metadata_of(headers: tuple[tuple[bytes, bytes], ...]) -> Metadata:
    """The gRPC metadata of a request header list: regular headers minus gRPC's reserved
    ones; ``-bin`` values base64-decoded to bytes (dropped if undecodable), others as str.

    A pure function of ``headers`` (immutable), so its result may be shared by every call
    whose header list is the same object (see ``GrpcProtocol.metadata_of``)."""
    items: list[tuple[str, str | bytes]] = []
    for name, value in headers:
        if name[:1] == b":" or name in _HIDDEN_METADATA:
            continue
        key = name.decode("ascii", "replace")
        if key.endswith("-bin"):
            padded = value + b"=" * (-len(value) % 4)
            try:
                items.append((key, base64.b64decode(padded)))
            except ValueError:
                continue
        else:
            items.append((key, value.decode("latin-1")))
    return tuple(items)


class Kind(Enum):
    """The four gRPC method shapes."""

    UNARY_UNARY = "unary_unary"
    UNARY_STREAM = "unary_stream"
    STREAM_UNARY = "stream_unary"
    STREAM_STREAM = "stream_stream"


@dataclass(frozen=True, slots=True)
class Route:
    """What a request path is served by: the servicer's bound method and message parser."""

    path: bytes
    kind: Kind
    handler: Callable[..., Any]
    parse: Callable[[bytes], Any]
    #: Derived from ``kind`` once (read on every call): the request is one message, and
    #: so is the response.
    unary_request: bool = field(init=False)
    unary_unary: bool = field(init=False)

    def __post_init__(self) -> None:
        unary_request = self.kind in (Kind.UNARY_UNARY, Kind.UNARY_STREAM)
        object.__setattr__(self, "unary_request", unary_request)
        object.__setattr__(self, "unary_unary", self.kind is Kind.UNARY_UNARY)


class CallAborted(grpc.aio.AbortError):  # type: ignore[misc]
    """Raised by ``Call.abort``: ends the handler, then the call with ``code``/``details``.

    A subclass of grpc.aio's ``AbortError`` so servicer code that lets that exception pass
    (``keelson.api._status.unary``, the Watch loop) treats both front ends alike.
    """

    def __init__(self, code: int, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class StreamGone(Exception):  # noqa: N818 - a state, not a failure of ours
    """The handler wrote to a call whose stream is closed (reset, or already answered)."""


def _code_number(code: grpc.StatusCode | int) -> int:
    return code if isinstance(code, int) else int(code.value[0])


class Call:
    """One request stream: its input queue, handler task and the context the handler sees."""

    __slots__ = (
        "_protocol", "stream_id", "route", "_headers", "_deadline", "_reader", "_messages",
        "_input_ended", "_read_waiter", "_write_waiter", "task", "_headers_sent", "_closed",
        "_cancelled", "_done", "_callbacks", "_code", "_details", "_shutting_down",
        "_entered", "_cleanup_scheduled",
    )

    def __init__(
        self,
        protocol: GrpcProtocol,
        stream_id: int,
        route: Route,
        headers: tuple[tuple[bytes, bytes], ...],
        deadline: float | None,
        reader: MessageReader,
    ) -> None:
        self._protocol = protocol
        self.stream_id = stream_id
        self.route = route
        self._headers = headers
        self._deadline = deadline
        self._reader = reader
        self._messages: deque[Message] = deque()
        self._input_ended = False
        self._read_waiter: asyncio.Future[None] | None = None
        self._write_waiter: asyncio.Future[None] | None = None
        self.task: asyncio.Task[None] | None = None
        self._headers_sent = False
        self._closed = False  # status sent, or the stream is gone
        self._cancelled = False
        self._done = False
        self._callbacks: list[Callable[[Any], None]] | None = None  # made by the first add
        self._code: int | None = None
        self._details = ""
        self._shutting_down = False
        self._entered = False  # the handler task has begun running _run
        self._cleanup_scheduled = False  # _task_done is the task's done callback

    # ------------------------------------------------------------ fed by the connection

    def start(self, first: bytes | None) -> None:
        """Run the handler in a task (``first``: the request of a unary-request method)."""
        self.task = self._protocol.loop.create_task(self._run(first))

    def _task_done(self) -> None:
        """The handler task ended: the cleanup of every call that had a task. Runs once:
        in ``_run``'s ``finally``, or - for a task cancelled before its first step, which
        never enters ``_run`` - as the task's done callback (see ``_cancel_task``)."""
        if self._shutting_down:
            self._send_status(UNAVAILABLE, "grpc: the server has been stopped")
        self._finish_callbacks()
        self._protocol.call_done(self)

    def _cancel_task(self, task: asyncio.Task[None]) -> None:
        """Cancel the handler task; one not yet entered never will be (a task cancelled
        before its first step does not run its coroutine), so it gets ``_task_done`` as a
        done callback instead of ``_run``'s ``finally``."""
        if not self._entered and not self._cleanup_scheduled:
            self._cleanup_scheduled = True
            task.add_done_callback(lambda _: self._task_done())
        task.cancel()

    def on_data(self, data: bytes, flow_controlled: int) -> None:
        """Request bytes arrived; complete messages queue up (or start a unary call)."""
        if self._closed:
            self._protocol.acknowledge(self.stream_id, flow_controlled)
            return
        try:
            payloads = self._reader.feed(data)
        except WireError as err:
            self._protocol.acknowledge(self.stream_id, flow_controlled)
            self.fail(err.code, err.message)
            return
        messages = self._messages
        if self.task is None and len(payloads) == 1 and not messages:
            # The usual unary request, whole in one DATA frame: what the general path below
            # does (queue it, pop it, acknowledge its bytes, start), without the queue.
            self._protocol.acknowledge(self.stream_id, flow_controlled)
            self.start(payloads[0])
            return
        for payload in payloads:
            messages.append(Message(payload))
        if messages:
            messages[-1].acknowledge += flow_controlled
        else:
            self._protocol.acknowledge(self.stream_id, flow_controlled)
        if self.task is None:
            if messages:  # the first message of a unary request: start the handler
                message = messages.popleft()
                self._protocol.acknowledge(self.stream_id, message.acknowledge)
                self.start(message.payload)
        elif payloads:
            self._wake_reader()

    def on_end(self) -> None:
        """The client half-closed: no more request messages."""
        self._input_ended = True
        if self.task is None and not self._closed:
            what = "truncated" if self._reader.partial else "no"
            self.fail(INTERNAL, f"grpc: the client sent {what} request message")
            return
        self._wake_reader()

    def on_reset(self) -> None:
        """The stream is gone (client RST_STREAM, connection lost): cancel the handler."""
        self._closed = True
        self._cancelled = True
        self._release_input()
        self._wake_reader()
        self._wake_writer()
        if self.task is not None:
            self._cancel_task(self.task)
        else:
            self._finish_callbacks()

    def on_shutdown(self) -> None:
        """The server stops and its grace ran out: end the call with UNAVAILABLE."""
        self._shutting_down = True
        if self.task is not None:
            self._cancel_task(self.task)
        else:
            self.fail(UNAVAILABLE, "grpc: the server has been stopped")

    def wake_writer(self) -> None:
        """The stream's or connection's window grew, or the transport resumed."""
        self._wake_writer()

    def fail(self, code: int, message: str) -> None:
        """End the call now with ``code`` (the handler task, if any, is cancelled)."""
        self._send_status(code, message)
        if self.task is not None:
            self._cancel_task(self.task)
        else:
            self._finish_callbacks()
            self._protocol.call_done(self)

    # ------------------------------------------------------------ the handler's task

    async def _run(self, first: bytes | None) -> None:
        self._entered = True
        deadline: asyncio.Timeout | None = None
        try:
            if self._deadline is not None:
                async with asyncio.timeout_at(self._deadline) as deadline:
                    await self._serve(first)
            elif first is not None and self.route.unary_unary:
                # _serve's unary-unary path, without a coroutine of its own (the hot path).
                route = self.route
                response = await route.handler(self._parse(first), self)
                if self._code is None and not self._details:
                    self._send_ok(response.SerializeToString())
                else:
                    self._send_message(response)
            else:
                await self._serve(first)
        except CallAborted as err:
            self._send_status(err.code, err.details)
        except TimeoutError as err:
            # Whether the client's deadline fired, asked of the timeout itself: comparing
            # the clock with the deadline misses by up to a millisecond (the loop's timers
            # are rounded to milliseconds), which answered a deadline as a handler error.
            if deadline is not None and deadline.expired():
                self._cancelled = True
                self._send_status(DEADLINE_EXCEEDED, "context deadline exceeded")
            else:  # a timeout inside the handler, not the client's deadline
                self._failed(err)
        except asyncio.CancelledError:
            pass  # reset by the client, failed by us, or the server stops (see _task_done)
        except StreamGone:
            pass
        except Exception as err:
            self._failed(err)
        else:
            self._send_status(self._code or OK, self._details)
        finally:
            self._task_done()

    def _failed(self, err: Exception) -> None:
        """The handler raised something other than an abort: a bug, answered UNKNOWN."""
        if self._code is not None and self._code != OK:  # set_code, then raise (grpcio)
            self._send_status(self._code, self._details)
            return
        _log.error("%s failed", self.route.path.decode(), exc_info=err)
        self._send_status(UNKNOWN, f"unexpected {type(err).__name__} in the handler")

    async def _serve(self, first: bytes | None) -> None:
        route = self.route
        if route.unary_request:
            assert first is not None
            request = self._parse(first)
            if route.unary_unary:
                self._send_message(await route.handler(request, self))
                return
            result = route.handler(request, self)
        else:
            result = route.handler(_Requests(self), self)
        if inspect.isasyncgen(result):
            async for response in result:
                await self.write(response)
        else:
            response = await result
            if route.kind is Kind.STREAM_UNARY:
                self._send_message(response)

    def _parse(self, payload: bytes) -> Any:
        try:
            return self.route.parse(payload)
        except DecodeError as err:
            raise CallAborted(INTERNAL, f"grpc: error unmarshalling request: {err}") from None

    async def read_message(self) -> bytes | None:
        """The next request message (None once the client half-closed or the call ended)."""
        messages = self._messages
        while not messages:
            if self._input_ended or self._closed:
                return None
            waiter = self._read_waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._read_waiter = None
        message = messages.popleft()
        if message.acknowledge:
            self._protocol.acknowledge(self.stream_id, message.acknowledge)
        return message.payload

    # ------------------------------------------------------------ sending

    def _send_message(self, response: Any) -> None:
        self._send_payload(response.SerializeToString())

    def _send_payload(self, payload: bytes) -> None:
        """Queue one serialized response message on the stream (headers first if needed)."""
        if self._closed:
            raise StreamGone(f"stream {self.stream_id} is closed")
        data = frame_message(payload)
        h2 = self._protocol.h2
        try:
            if not self._headers_sent:
                self._headers_sent = True
                h2.send_headers(self.stream_id, RESPONSE_HEADERS)
            h2.send_data(self.stream_id, data)
        except H2Error as err:
            self._closed = True
            raise StreamGone(str(err)) from None
        self._protocol.schedule_flush()

    def _send_ok(self, payload: bytes) -> None:
        """A unary call's whole answer, queued in one ``send_response``: what
        ``_send_payload`` then ``_send_status(OK, "")`` queue (bench.native_unary: a put call
        37 → 30 µs of CPU)."""
        if self._closed:
            raise StreamGone(f"stream {self.stream_id} is closed")
        if self._headers_sent:
            self._send_payload(payload)
            self._send_status(OK, "")
            return
        self._closed = self._headers_sent = True
        self._release_input()
        h2 = self._protocol.h2
        sid = self.stream_id
        try:
            h2.send_response(sid, RESPONSE_HEADERS, frame_message(payload), TRAILERS_OK)
            if not self._input_ended and h2.queued_bytes(sid) == 0:
                h2.reset_stream(sid, ErrorCode.NO_ERROR)  # as _send_status does
        except H2Error as err:
            raise StreamGone(str(err)) from None
        finally:
            self._protocol.schedule_flush()

    def _send_status(self, code: int, message: str) -> None:
        """Send the status (once); then reset the stream if the client is still sending."""
        if self._closed:
            return
        self._closed = True
        self._release_input()
        h2 = self._protocol.h2
        sid = self.stream_id
        try:
            if not self._headers_sent:
                h2.send_headers(sid, trailers_only(code, message), end_stream=True)
            elif code == OK and not message:
                h2.send_trailers(sid, TRAILERS_OK)
            else:
                h2.send_trailers(sid, status_trailers(code, message))
            if not self._input_ended and h2.queued_bytes(sid) == 0:
                # The status is on the wire; tell a client still sending to stop.
                h2.reset_stream(sid, ErrorCode.NO_ERROR)
        except H2Error:
            pass  # the stream or the connection went away first: nobody to tell
        self._protocol.schedule_flush()

    def _release_input(self) -> None:
        """Acknowledge every queued, unconsumed request byte (the call will not read them)."""
        if not self._messages:
            return
        pending = sum(m.acknowledge for m in self._messages)
        self._messages.clear()
        if pending:
            self._protocol.acknowledge(self.stream_id, pending)

    def _wake_reader(self) -> None:
        waiter = self._read_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake_writer(self) -> None:
        waiter = self._write_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _finish_callbacks(self) -> None:
        if self._done:
            return
        self._done = True
        callbacks, self._callbacks = self._callbacks, None
        for callback in callbacks or ():
            try:
                callback(self)
            except Exception:
                _log.exception("done callback of %s failed", self.route.path.decode())

    # ------------------------------------------------------------ grpc.aio.ServicerContext

    async def write(self, message: Any) -> None:
        """Send one response message; return once the stream's backlog is small again."""
        await self.write_encoded(message.SerializeToString())

    def send_encoded_nowait(self, payload: bytes) -> bool:
        """Queue one serialized response message without waiting (keelson's extension, for
        the Watch service's pushed responses). Returns whether more may be queued now:
        False once the stream's backlog is above ``WRITE_HIGH_WATER`` or the transport is
        paused (the caller then goes through ``write_encoded``, which waits), or when the
        stream is gone (nothing was queued; ``write_encoded`` raises ``StreamGone``)."""
        try:
            self._send_payload(payload)
        except StreamGone:
            return False
        protocol = self._protocol
        return not (
            protocol.writing_paused
            or protocol.h2.queued_bytes(self.stream_id) > WRITE_HIGH_WATER
        )

    async def write_encoded(self, payload: bytes) -> None:
        """``write`` of a message the handler has already serialized (keelson's own
        extension of the context, not grpc.aio's: the Watch service encodes the events of
        one write once for every watcher, see ``keelson.server.watch``)."""
        self._send_payload(payload)
        protocol = self._protocol
        h2 = protocol.h2
        while not self._closed and (
            protocol.writing_paused or h2.queued_bytes(self.stream_id) > WRITE_HIGH_WATER
        ):
            waiter = self._write_waiter = asyncio.get_running_loop().create_future()
            protocol.wait_for_window(self)
            try:
                await waiter
            finally:
                self._write_waiter = None
        if self._closed and self._cancelled:
            raise StreamGone(f"stream {self.stream_id} was reset")

    async def read(self) -> Any:
        """The next request message of a streaming-request call (grpc.aio's EOF at the end)."""
        payload = await self.read_message()
        return grpc.aio.EOF if payload is None else self._parse(payload)

    async def abort(
        self,
        code: grpc.StatusCode,
        details: str = "",
        trailing_metadata: Any = (),
    ) -> NoReturn:
        """End the call with ``code`` and ``details`` (raises, as grpc.aio's does)."""
        raise CallAborted(_code_number(code), details)

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = _code_number(code)

    def set_details(self, details: str) -> None:
        self._details = details

    def invocation_metadata(self) -> Metadata:
        """The client's metadata: regular request headers minus gRPC's reserved ones;
        ``-bin`` values base64-decoded to bytes, others as str (see :func:`metadata_of`)."""
        return self._protocol.metadata_of(self._headers)

    def peer(self) -> str:
        """``ipv4:host:port`` / ``ipv6:[host]:port``, as gRPC spells the client's address."""
        return self._protocol.peer

    def auth_context(self) -> dict[str, list[bytes]]:
        """The connection's security, in grpcio's shape (``x509_common_name`` of a verified
        client certificate on TLS)."""
        return self._protocol.auth_context

    def time_remaining(self) -> float | None:
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - self._protocol.now())

    def cancelled(self) -> bool:
        return self._cancelled

    def done(self) -> bool:
        return self._done

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        if self._done:
            callback(self)
        elif self._callbacks is None:
            self._callbacks = [callback]
        else:
            self._callbacks.append(callback)


class _Requests:
    """The request iterator of a streaming-request handler, fed by DATA frames."""

    __slots__ = ("_call",)

    def __init__(self, call: Call) -> None:
        self._call = call

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        payload = await self._call.read_message()
        if payload is None:
            raise StopAsyncIteration
        return self._call._parse(payload)
