"""The asyncio Protocol of one client connection: bytes <-> ``H2Connection`` <-> calls.

Theory of operation. ``data_received`` feeds the socket's bytes to the sans-I/O
``H2Connection`` and routes its events: a request opens a :class:`~._call.Call` (or is
answered at once: unknown method, bad content-type, malformed ``grpc-timeout``), DATA and
END_STREAM feed it, RST_STREAM cancels it, WINDOW_UPDATE wakes its writer. PINGs and
SETTINGS are answered by the core itself.

Invariants:
* Output is batched per event-loop turn: whatever queues bytes calls ``schedule_flush``,
  which arranges one ``transport.write`` of ``data_to_send()`` via ``loop.call_soon`` - so
  the answers of every call finishing in one turn leave in one write.
* Backpressure both ways: while the transport's write buffer is above its high-water mark
  (``pause_writing``) we stop reading the socket, so a client that does not read cannot
  make us parse (and answer) more requests; request bytes are acknowledged only as calls
  consume them (see ``_call``), so a slow handler closes the client's window.
* A request header list the HPACK decoder hands out again (the same immutable tuple: a
  repeated, fully indexed block) is routed once: its route, ``grpc-timeout`` and
  ``grpc-encoding`` and its metadata are memoized for the last list seen, matched by
  identity; the deadline is still computed per call.
* ``data_received`` never raises: the core answers protocol errors on the wire, and an
  unexpected failure here closes this connection only.
* TLS (a listener wrapped in ``ServingTLS.context``): ``connection_made`` runs after the
  handshake; a client that did not negotiate ``h2`` by ALPN is closed at once (gRPC over
  TLS requires it), and the verified client certificate, if any, is kept as
  :attr:`GrpcProtocol.auth_context` in grpcio's shape (``x509_common_name``), so calls
  name their caller the same way on both front ends.
* ``shutdown`` drains in two steps, as RFC 9113 section 6.8 advises: GOAWAY with the
  largest stream id plus a PING, then - when the PING's ACK arrives (or after
  ``GOAWAY_PING_TIMEOUT``, or when the server gives up waiting) - GOAWAY with the last stream
  id really handed to a call. Requests the client sent before it saw the first GOAWAY are
  thus served, not silently dropped. The transport closes once the final GOAWAY is out and
  no call is left; after ``ConnectionTerminated(remote=False)`` it closes after the final
  flush.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import TYPE_CHECKING, Any, cast

from keelson.api.native._call import INTERNAL, Call, Metadata, Route, metadata_of
from keelson.api.native._wire import MessageReader, parse_timeout, trailers_only
from keelson.http2 import (
    ConnectionTerminated,
    DataReceived,
    H2Connection,
    H2Error,
    Headers,
    PingAck,
    RequestReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)

if TYPE_CHECKING:
    from keelson.api.native._server import NativeServer

_log = logging.getLogger("keelson.api.native")

UNIMPLEMENTED = 12
#: Transport write-buffer marks: above HIGH we stop reading until it drains below LOW.
WRITE_BUFFER_HIGH = 1 << 20
WRITE_BUFFER_LOW = 256 * 1024
#: The PING of the two-step GOAWAY, and how long its ACK is awaited (grpc-go: a minute; our
#: callers stop with a grace of seconds, and a client that does not answer is not waited for).
SHUTDOWN_PING = b"keelson\x00"
GOAWAY_PING_TIMEOUT = 1.0
MAX_STREAM_ID = (1 << 31) - 1


class GrpcProtocol(asyncio.Protocol):
    """One client connection of the native gRPC server."""

    def __init__(self, server: NativeServer) -> None:
        self._server = server
        self.loop = asyncio.get_running_loop()
        self.h2 = H2Connection(server.h2_config)
        self.transport: asyncio.Transport | None = None
        self.peer = "unknown"
        self.auth_context: dict[str, list[bytes]] = _PLAINTEXT
        self.writing_paused = False
        self._calls: dict[int, Call] = {}
        self._window_waiters: set[Call] = set()
        self._flush_scheduled = False
        self._closing = False  # the transport is closing or closed
        self._draining = False  # our GOAWAY went out; close once the calls are done
        self._final_goaway = False  # the GOAWAY naming the real last stream id went out
        self._goaway_timer: asyncio.TimerHandle | None = None
        # Memos of the last request header list (an immutable tuple; the HPACK decoder hands
        # out the same object for a repeated block): what routing made of it, and its
        # metadata. Kept with a reference to the list, so an ``is`` match is exact.
        self._routed: tuple[Headers, Route, bytes | None, bytes | None] | None = None
        self._metadata: tuple[Headers, Metadata] | None = None

    # ------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH, low=WRITE_BUFFER_LOW)
        self.peer = _peer_name(transport.get_extra_info("peername"))
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            if ssl_object.selected_alpn_protocol() != "h2":
                _log.info("closing the TLS connection from %s: no ALPN h2 negotiated", self.peer)
                self._closing = True
                transport.close()
                return
            self.auth_context = tls_auth_context(ssl_object)
        self._server.connection_opened(self)
        # Our preface (SETTINGS + WINDOW_UPDATE) waits for the client's first bytes: an
        # HTTP/1.1 client then gets a readable 505 instead of binary frames.

    def data_received(self, data: bytes) -> None:
        try:
            self._handle(self.h2.receive_data(data))
        except Exception:
            _log.exception("closing the connection from %s after an unexpected error", self.peer)
            self._close()
            return
        self.schedule_flush()

    def eof_received(self) -> bool | None:
        return False  # the client will send nothing more: close (calls are cancelled)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if self._goaway_timer is not None:
            self._goaway_timer.cancel()
        for call in list(self._calls.values()):
            call.on_reset()
        self._calls.clear()
        self._server.connection_closed(self)

    def pause_writing(self) -> None:
        self.writing_paused = True
        if self.transport is not None and not self._closing:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.transport is not None and not self._closing:
            self.transport.resume_reading()
        self._wake_writers()

    # ------------------------------------------------------------ events

    def _handle(self, events: list[Any]) -> None:
        calls = self._calls
        for event in events:
            kind = type(event)
            if kind is DataReceived:
                call = calls.get(event.stream_id)
                if call is None:
                    self.acknowledge(event.stream_id, event.flow_controlled_length)
                else:
                    call.on_data(event.data, event.flow_controlled_length)
            elif kind is RequestReceived:
                self._on_request(event)
            elif kind is StreamEnded or kind is TrailersReceived:
                call = calls.get(event.stream_id)
                if call is not None:
                    call.on_end()
            elif kind is WindowUpdated:
                self._wake_writers()
            elif kind is StreamReset:
                call = calls.pop(event.stream_id, None)
                if call is not None:
                    call.on_reset()
            elif kind is PingAck:
                if event.data == SHUTDOWN_PING and self._draining:
                    self._send_final_goaway()
            elif kind is ConnectionTerminated:
                if not event.remote:  # we ended it for the client's fault: flush and close
                    self._draining = self._final_goaway = True
                    for call in list(calls.values()):
                        call.on_reset()
                    calls.clear()

    def _on_request(self, event: RequestReceived) -> None:
        sid = event.stream_id
        headers = event.headers
        routed = self._routed
        if routed is not None and routed[0] is headers:  # the same request header list again
            _, route, timeout, encoding = routed
        else:
            routed = self._route(sid, headers)
            if routed is None:
                return  # answered
            self._routed = routed
            _, route, timeout, encoding = routed
        deadline = None
        if timeout is not None:
            try:
                deadline = self.loop.time() + parse_timeout(timeout)
            except ValueError as err:
                message = f"malformed grpc-timeout: {err}"
                self.h2.send_headers(sid, trailers_only(INTERNAL, message), end_stream=True)
                return
        reader = MessageReader(self._server.max_receive_bytes, encoding)
        call = Call(self, sid, route, headers, deadline, reader)
        self._calls[sid] = call
        if not route.unary_request:
            call.start(None)

    def _route(
        self, sid: int, headers: Headers
    ) -> tuple[Headers, Route, bytes | None, bytes | None] | None:
        """The route, ``grpc-timeout`` and ``grpc-encoding`` of a request header list; None
        if the request was answered here instead (bad method or content-type, no route).

        Depends on ``headers`` and the routing table only, so its result holds for every
        request with the same header list."""
        path = method = content_type = timeout = encoding = None
        for name, value in headers:
            if name == b":path":
                path = value
            elif name == b":method":
                method = value
            elif name == b"content-type":
                content_type = value
            elif name == b"grpc-timeout":
                timeout = value
            elif name == b"grpc-encoding":
                encoding = value
        h2 = self.h2
        if method != b"POST":
            h2.send_headers(sid, ((b":status", b"405"),), end_stream=True)
            return None
        if content_type is None or not (
            content_type == b"application/grpc" or content_type.startswith(b"application/grpc+")
            or content_type.startswith(b"application/grpc;")
        ):
            h2.send_headers(sid, ((b":status", b"415"),), end_stream=True)
            return None
        route = self._server.routes.get(path or b"")
        if route is None:
            message = _unknown(path or b"", self._server.services)
            h2.send_headers(sid, trailers_only(UNIMPLEMENTED, message), end_stream=True)
            return None
        return headers, route, timeout, encoding

    # ------------------------------------------------------------ used by calls

    def metadata_of(self, headers: Headers) -> Metadata:
        """``invocation_metadata()`` of a call with request header list ``headers``,
        computed once for a run of calls sharing the list (see ``_call.metadata_of``)."""
        memo = self._metadata
        if memo is not None and memo[0] is headers:
            return memo[1]
        metadata = metadata_of(headers)
        self._metadata = (headers, metadata)
        return metadata

    def now(self) -> float:
        """The event loop's clock (deadlines are in it)."""
        return self.loop.time()

    def acknowledge(self, stream_id: int, n: int) -> None:
        """Return ``n`` consumed request bytes to the client's windows."""
        if n and not self._closing:
            try:
                self.h2.acknowledge_received_data(stream_id, n)
            except H2Error:
                _log.exception("acknowledging %d bytes on stream %d", n, stream_id)
            self.schedule_flush()

    def call_done(self, call: Call) -> None:
        """A call sent its status (or lost its stream): forget it."""
        if self._calls.get(call.stream_id) is call:
            del self._calls[call.stream_id]
        if self._window_waiters:
            self._window_waiters.discard(call)
        if self._draining and self._final_goaway and not self._calls:
            self.schedule_flush()

    def wait_for_window(self, call: Call) -> None:
        """``call`` waits in ``write`` until a window grows or the transport resumes."""
        self._window_waiters.add(call)

    def _wake_writers(self) -> None:
        waiters, self._window_waiters = self._window_waiters, set()
        for call in waiters:
            call.wake_writer()

    def schedule_flush(self) -> None:
        """Write out everything queued, once, at the end of this event-loop turn."""
        if not self._flush_scheduled and not self._closing:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._closing or self.transport is None:
            return
        data = self.h2.data_to_send()
        if data:
            self.transport.write(data)
        if self.h2.terminated or (self._draining and self._final_goaway and not self._calls):
            self._close()

    def _close(self) -> None:
        if not self._closing and self.transport is not None:
            self._closing = True
            self.transport.close()

    # ------------------------------------------------------------ used by the server

    @property
    def open_calls(self) -> int:
        return len(self._calls)

    def shutdown(self) -> None:
        """Graceful stop, first step: GOAWAY(2^31-1) + PING; keep serving every call.

        The second step (:meth:`_send_final_goaway`) follows the PING's ACK: by then the
        client has seen the first GOAWAY, so every request it sent before is in.
        """
        if self._closing or self._draining:
            return
        self._draining = True
        if self.h2.terminated:
            self._final_goaway = True
        else:
            try:
                self.h2.goaway(last_stream_id=MAX_STREAM_ID)
                self.h2.ping(SHUTDOWN_PING)
            except H2Error:
                self._final_goaway = True
            else:
                self._goaway_timer = self.loop.call_later(
                    GOAWAY_PING_TIMEOUT, self._send_final_goaway
                )
        self.schedule_flush()

    def _send_final_goaway(self) -> None:
        """Graceful stop, second step: GOAWAY with the last stream id handed to a call."""
        if self._final_goaway:
            return
        self._final_goaway = True
        if self._goaway_timer is not None:
            self._goaway_timer.cancel()
            self._goaway_timer = None
        if not self._closing and not self.h2.terminated:
            try:
                self.h2.goaway()
            except H2Error:
                pass
        self.schedule_flush()

    def cancel_calls(self) -> None:
        """The grace ran out: end every open call with UNAVAILABLE, then close."""
        self._send_final_goaway()
        for call in list(self._calls.values()):
            call.on_shutdown()
        self.schedule_flush()

    def abort(self) -> None:
        """Close the transport now (the last resort of ``stop``)."""
        if self.transport is not None:
            self._closing = True
            self.transport.abort()


_PLAINTEXT: dict[str, list[bytes]] = {"transport_security_type": [b"insecure"]}


def tls_auth_context(ssl_object: ssl.SSLObject) -> dict[str, list[bytes]]:
    """grpcio's ``auth_context()`` for a TLS connection: the verified client certificate
    (``getpeercert()`` is empty when none was verified) as ``x509_pem_cert`` and its
    subject's Common Name(s) as ``x509_common_name``."""
    context: dict[str, list[bytes]] = {"transport_security_type": [b"ssl"]}
    cert = ssl_object.getpeercert()
    if not cert:
        return context
    der = ssl_object.getpeercert(binary_form=True)
    if der:
        context["x509_pem_cert"] = [ssl.DER_cert_to_PEM_cert(der).encode("ascii")]
    names: list[bytes] = []
    for rdn in cert.get("subject", ()):
        for attribute in rdn:
            if attribute[0] == "commonName":
                names.append(str(attribute[1]).encode("utf-8"))
    if names:
        context["x509_common_name"] = names
    return context


def _peer_name(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"ipv6:[{host}]:{port}" if ":" in str(host) else f"ipv4:{host}:{port}"
    return "unknown"


def _unknown(path: bytes, services: frozenset[str]) -> str:
    """grpc-go's text for a path no service serves."""
    text = path.decode("utf-8", "replace")
    service, _, method = text.lstrip("/").rpartition("/")
    if not service:
        return f"malformed method name: {text!r}"
    if service not in services:
        return f"unknown service {service}"
    return f"unknown method {method} for service {service}"
