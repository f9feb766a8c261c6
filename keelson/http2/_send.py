"""What the application's calls do: the send side of ``H2Connection``.

``send_headers``, ``send_data`` and ``send_trailers`` answer a stream; ``reset_stream``,
``acknowledge_received_data``, ``ping`` and ``goaway`` act on streams or the connection.
Each checks the call against the stream's state and the API's order (headers, then DATA,
then trailers or END_STREAM) and raises ``LocalProtocolError`` / ``StreamClosedError`` /
``ConnectionClosedError`` for a misuse, before changing anything. Output goes through
``_outbound`` (HPACK in wire order) or, for frames that carry no header block, straight onto
the output buffer. DATA the send windows do not allow yet waits in the stream's queue and is
flushed by ``_state``'s ``_flush_stream`` — here when it is queued, and by ``_receive`` when
the peer opens a window.

A mixin (see ``_state`` for why): ``Sender`` has no fields of its own.
"""

from __future__ import annotations

from collections.abc import Sequence

from keelson.http2 import _frames as fr
from keelson.http2._events import Headers
from keelson.http2._headers import HeaderBlock, validate_response
from keelson.http2._state import ConnectionState
from keelson.http2._stream import Stream
from keelson.http2.errors import (
    ConnectionClosedError,
    ErrorCode,
    LocalProtocolError,
    StreamClosedError,
)

HeadersArg = Sequence[tuple[bytes, bytes]] | HeaderBlock


class Sender(ConnectionState):
    """The application's side of ``H2Connection``: responses, resets, acks, PING, GOAWAY."""

    # ------------------------------------------------------------------ responses

    def _sendable(self, stream_id: int) -> Stream:
        """The stream, if the application may still queue output on it; else raise."""
        if self._terminated:
            raise ConnectionClosedError("the connection was terminated")
        stream = self._streams.get(stream_id)
        if stream is None or not stream.local_open:
            raise StreamClosedError(stream_id, f"stream {stream_id} cannot send")
        return stream

    @staticmethod
    def _checked(headers: HeadersArg, trailers: bool) -> Headers | HeaderBlock:
        """Validate a response header list (or a cached block's kind) before queueing."""
        if isinstance(headers, HeaderBlock):
            if headers.trailers != trailers:
                raise LocalProtocolError("HeaderBlock built for the other kind of header list")
            return headers
        checked = tuple(headers)
        try:
            validate_response(checked, trailers)
        except ValueError as err:
            raise LocalProtocolError(str(err)) from err
        return checked

    def send_headers(self, stream_id: int, headers: HeadersArg, end_stream: bool = False) -> None:
        """Queue the response header section (``:status`` first) of a stream.

        ``headers`` is a list of (name, value) byte pairs, or a ``HeaderBlock`` whose cached
        encoding is reused. HEADERS are not flow-controlled, so they are queued at once.
        """
        stream = self._sendable(stream_id)
        if stream.headers_sent:
            raise LocalProtocolError("response headers already sent (use send_trailers)")
        checked = self._checked(headers, trailers=False)
        stream.headers_sent = True
        self._idle.refund()  # a client's pings after our answers are not a flood
        self._output.header_block(stream_id, checked, end_stream)
        if end_stream:
            stream.local_end_queued = True
            self._end_local(stream)

    def send_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        """Queue response body bytes; what the send windows do not allow yet waits here.

        The wait is unbounded by design — the application is the one deciding what to send;
        it can watch ``queued_bytes``/``send_window`` and ``WindowUpdated`` for backpressure.
        """
        stream = self._sendable(stream_id)
        if not stream.headers_sent:
            raise LocalProtocolError("send_headers must come before send_data")
        self._idle.refund()
        if data:
            stream.queue.append(bytes(data))
            stream.queued_bytes += len(data)
        if end_stream:
            stream.local_end_queued = True
        if stream.queue or end_stream:
            self._flush_stream(stream)

    def send_trailers(self, stream_id: int, headers: HeadersArg) -> None:
        """End the stream with a trailer section, sent after all queued DATA."""
        stream = self._sendable(stream_id)
        if not stream.headers_sent:
            raise LocalProtocolError("send_headers must come before send_trailers")
        stream.trailers = self._checked(headers, trailers=True)
        stream.local_end_queued = True
        self._flush_stream(stream)

    def send_response(
        self, stream_id: int, headers: HeaderBlock, data: bytes, trailers: HeaderBlock
    ) -> None:
        """The whole answer of a stream: ``send_headers``, ``send_data`` and
        ``send_trailers`` in one call. When the windows take ``data`` in one frame and
        nothing is queued (a unary gRPC answer, almost always), the three frames are written
        at once, without the queue; otherwise it is exactly the three calls."""
        stream = self._sendable(stream_id)
        out = self._output
        window = out.window
        n = len(data)
        if (
            stream.headers_sent or stream.queue or headers.trailers or not trailers.trailers
            or n > window.size or n > stream.outbound.size or n > out.max_frame_size
        ):  # (a stream waiting for a window has DATA queued: ``stream.queue`` covers it)
            self.send_headers(stream_id, headers)
            self.send_data(stream_id, data)
            self.send_trailers(stream_id, trailers)
            return
        stream.headers_sent = True
        self._idle.refund()
        out.header_block(stream_id, headers, False)
        if n:
            window.size -= n
            stream.outbound.size -= n
            out.buffer += fr.data_frame(stream_id, data, end_stream=False)
        out.header_block(stream_id, trailers, True)
        stream.local_end_queued = True
        self._end_local(stream)

    # ------------------------------------------------------------------ streams and connection

    def reset_stream(self, stream_id: int, code: ErrorCode = ErrorCode.CANCEL) -> None:
        """Abort a stream with RST_STREAM ``code``; queued output for it is dropped.

        A no-op for a stream that is already closed (the application may race the client).
        """
        if self._terminated:
            raise ConnectionClosedError("the connection was terminated")
        stream = self._streams.get(stream_id)
        if stream is None:
            if self._is_idle(stream_id):
                raise LocalProtocolError(f"stream {stream_id} was never opened")
            return
        stream.reset()
        self._forget(stream, by_us=True)
        self._out += fr.rst_stream_frame(stream_id, code)

    def acknowledge_received_data(self, stream_id: int, n: int) -> None:
        """The application consumed ``n`` flow-controlled bytes of ``stream_id``.

        Call it with each ``DataReceived.flow_controlled_length`` — also after the stream was
        reset, as those bytes still count against the connection window. WINDOW_UPDATEs are
        batched (see ``_flow``).
        """
        if self._terminated:
            return
        if n > self._conn_in.outstanding:
            raise LocalProtocolError(f"acknowledged {n} bytes, more than were received")
        stream = self._streams.get(stream_id)
        stream_increment = 0
        if stream is not None:
            stream_increment = stream.inbound.acknowledge(n)  # raises before any change
        self._ack_connection(n)
        if stream_increment and stream is not None and stream.remote_open:
            self._out += fr.window_update_frame(stream_id, stream_increment)

    def ping(self, data: bytes) -> None:
        """Queue a PING with 8 octets of opaque data (answered by a ``PingAck`` event)."""
        if self._terminated:
            raise ConnectionClosedError("the connection was terminated")
        if len(data) != 8:
            raise LocalProtocolError("PING data must be 8 octets")
        self._out += fr.ping_frame(data)

    def goaway(
        self, code: ErrorCode = ErrorCode.NO_ERROR, last_stream_id: int | None = None,
        debug: bytes = b"",
    ) -> None:
        """Queue GOAWAY. NO_ERROR starts a graceful drain, any other code ends the connection.

        ``last_stream_id`` defaults to the highest stream handed to the application; streams
        above it are ignored from now on. Repeated calls may only lower it (RFC 9113 6.8),
        which allows the two-step drain: ``goaway(last_stream_id=2**31-1)``, a PING round
        trip, then ``goaway()``. Once ``drained`` is true the transport may be closed.
        """
        if self._terminated:
            raise ConnectionClosedError("the connection was terminated")
        last = self._last_processed if last_stream_id is None else last_stream_id
        if self._goaway_last is not None:
            last = min(last, self._goaway_last)
        self._goaway_last = last
        self._out += fr.goaway_frame(last, code, debug)
        if code != ErrorCode.NO_ERROR:
            self._terminated = True
            self._streams.clear()
            self._blocked.clear()
