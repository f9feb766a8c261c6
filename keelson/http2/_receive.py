"""What the client's frames do: one ``_on_<frame>`` handler per frame type (RFC 9113 §6).

``H2Connection.receive_data`` (``_connection``) cuts the input into frames, enforces the
frame-order rules that span frames (the preface's SETTINGS, CONTINUATION right after its
HEADERS) and calls the handler for each frame type through its table of bound methods. A
handler checks its frame, changes the state declared in ``_state`` and appends the events
the application must see. It raises ``ProtocolError`` for a connection error (the caller
answers with GOAWAY) and ``StreamError`` for a stream error (the caller resets the stream);
it never writes anything for the application.

Owned here: DATA and inbound flow-control accounting; header blocks — HEADERS, their
CONTINUATIONs, HPACK decoding (every block, even on streams we then ignore, so the dynamic
table stays in sync), request validation, opening streams, the 431 refusal, trailers; the
client's END_STREAM; PRIORITY, RST_STREAM, SETTINGS and their ACK, PUSH_PROMISE (refused),
PING, GOAWAY and WINDOW_UPDATE, which releases DATA queued by ``_send``.

A mixin (see ``_state`` for why): ``FrameHandlers`` has no fields of its own.
"""

from __future__ import annotations

from hpack import HPACKError, OversizedHeaderListError

from keelson.http2 import _frames as fr
from keelson.http2._events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    Headers,
    PingAck,
    PingReceived,
    RemoteSettingsChanged,
    RequestReceived,
    SettingsAcknowledged,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from keelson.http2._headers import (
    HeaderBlock,
    MalformedHeaders,
    validate_request,
    validate_trailers,
)
from keelson.http2._settings import SettingCode
from keelson.http2._state import ConnectionState
from keelson.http2._stream import Stream, StreamState
from keelson.http2.errors import ErrorCode, ProtocolError, StreamError, error_code

_HEADERS_TOO_LARGE = HeaderBlock.static(((b":status", b"431"),))


class FrameHandlers(ConnectionState):
    """The receive side of ``H2Connection``: one handler per frame type, and their steps."""

    # ------------------------------------------------------------------ DATA

    def _on_data(self, frame: fr.Frame, events: list[Event]) -> None:
        sid = frame.stream_id
        if sid == 0:
            raise ProtocolError(ErrorCode.PROTOCOL_ERROR, "DATA on stream 0")
        flow_len = len(frame.payload)
        data = fr.strip_padding(frame)
        if not data and not frame.flags & fr.FLAG_END_STREAM:
            self._idle_frame()
        if not self._conn_in.consume(flow_len):
            raise ProtocolError(ErrorCode.FLOW_CONTROL_ERROR, "DATA exceeds the connection window")
        stream = self._streams.get(sid)
        if stream is None or not stream.remote_open:
            # Nobody will acknowledge these bytes: give the connection window back now.
            self._ack_connection(flow_len)
            if stream is None:
                if self._is_idle(sid):
                    raise ProtocolError(ErrorCode.PROTOCOL_ERROR, f"DATA on idle stream {sid}")
                if self._closed.get(sid):
                    self._idle_frame()
                    return  # we reset it; frames in flight are ignored (RFC 9113 5.1)
            raise StreamError(sid, ErrorCode.STREAM_CLOSED, f"DATA on closed stream {sid}")
        if not stream.inbound.consume(flow_len):
            self._ack_connection(flow_len)
            raise StreamError(sid, ErrorCode.FLOW_CONTROL_ERROR, "DATA exceeds the stream window")
        end = bool(frame.flags & fr.FLAG_END_STREAM)
        if stream.content_length is not None:
            stream.received_length += len(data)
            if stream.received_length > stream.content_length or (
                end and stream.received_length != stream.content_length
            ):
                self._ack_connection(flow_len)
                raise StreamError(sid, ErrorCode.PROTOCOL_ERROR, "body and content-length differ")
        if flow_len:
            events.append(DataReceived(sid, data, flow_len))
        if end:
            self._end_remote(stream, events)

    def _end_remote(self, stream: Stream, events: list[Event]) -> None:
        """The client's END_STREAM arrived (on DATA, HEADERS or trailers)."""
        stream.end_remote()
        events.append(StreamEnded(stream.stream_id))
        if stream.state is StreamState.CLOSED:
            self._forget(stream, by_us=False)

    # ------------------------------------------------------------------ header blocks

    def _on_headers(self, frame: fr.Frame, events: list[Event]) -> None:
        sid = frame.stream_id
        if sid == 0:
            raise ProtocolError(ErrorCode.PROTOCOL_ERROR, "HEADERS on stream 0")
        payload = fr.strip_padding(frame)
        self_dependent = False
        if frame.flags & fr.FLAG_PRIORITY:
            if len(payload) < 5:
                raise ProtocolError(ErrorCode.FRAME_SIZE_ERROR, "HEADERS too short for PRIORITY")
            self_dependent = fr.parse_priority(payload)[0] == sid
            payload = payload[5:]
        end_stream = bool(frame.flags & fr.FLAG_END_STREAM)
        if frame.flags & fr.FLAG_END_HEADERS:
            self._on_header_block(sid, payload, end_stream, self_dependent, events)
            return
        if len(payload) > self.config.max_header_block_size:
            raise ProtocolError(ErrorCode.ENHANCE_YOUR_CALM, "header block too large")
        self._block = bytearray(payload)
        self._block_stream = sid
        self._block_end_stream = end_stream
        self._block_self_dependent = self_dependent

    def _on_continuation(self, frame: fr.Frame, events: list[Event]) -> None:
        block = self._block
        if block is None:
            raise ProtocolError(ErrorCode.PROTOCOL_ERROR, "CONTINUATION without a header block")
        block += frame.payload
        if len(block) > self.config.max_header_block_size:
            raise ProtocolError(ErrorCode.ENHANCE_YOUR_CALM, "header block too large")
        if not frame.flags & fr.FLAG_END_HEADERS:
            self._idle_frame()  # bounded in bytes above, in count here
        else:
            self._block = None
            self._on_header_block(
                self._block_stream,
                bytes(block),
                self._block_end_stream,
                self._block_self_dependent,
                events,
            )

    def _decode(self, block: bytes) -> Headers:
        """HPACK-decode a complete block; a failure is a connection error."""
        try:
            return self._headers.decode(block)
        except OversizedHeaderListError as err:
            raise ProtocolError(ErrorCode.ENHANCE_YOUR_CALM, "header list too large") from err
        except HPACKError as err:
            raise ProtocolError(ErrorCode.COMPRESSION_ERROR, f"bad HPACK block: {err}") from err

    def _on_header_block(
        self, sid: int, block: bytes, end_stream: bool, self_dependent: bool, events: list[Event]
    ) -> None:
        """A complete header block: a new request, trailers, or one to ignore/refuse."""
        # Decode first, whatever happens to the stream: the dynamic table must stay in sync.
        headers = self._decode(block)
        if not sid & 1:
            raise ProtocolError(ErrorCode.PROTOCOL_ERROR, f"HEADERS on even stream {sid}")
        stream = self._streams.get(sid)
        if stream is not None:
            self._on_trailers(stream, headers, end_stream, self_dependent, events)
            return
        if sid <= self._highest_stream_id:
            by_us = self._closed.get(sid)
            if by_us:
                self._idle_frame()
                return  # in flight when we reset it
            if by_us is None:
                raise ProtocolError(ErrorCode.PROTOCOL_ERROR, f"stream id {sid} is not increasing")
            raise ProtocolError(ErrorCode.STREAM_CLOSED, f"HEADERS on closed stream {sid}")
        self._highest_stream_id = sid
        if self._goaway_last is not None and sid > self._goaway_last:
            self._remember_closed(sid, by_us=True)  # after our GOAWAY: ignored
            self._idle_frame()
            return
        if self_dependent:
            raise StreamError(sid, ErrorCode.PROTOCOL_ERROR, "stream depends on itself")
        validated = self._validated
        if validated is not None and validated[0] is headers:
            # The decoder hands back the same tuple for a repeated block (see _decoding),
            # and the check is a pure function of the list: a client's next call is free.
            content_length, list_size = validated[1]
        else:
            try:
                content_length, list_size = validate_request(headers, self._known_good)
            except MalformedHeaders as err:
                raise StreamError(sid, ErrorCode.PROTOCOL_ERROR, str(err)) from err
            self._validated = (headers, (content_length, list_size))
        if end_stream and content_length:
            raise StreamError(sid, ErrorCode.PROTOCOL_ERROR, "content-length but no body")
        if len(self._streams) >= self.config.max_concurrent_streams:
            raise StreamError(sid, ErrorCode.REFUSED_STREAM, "too many concurrent streams")
        if list_size > self.config.max_header_list_size:
            self._refuse_too_large(sid, end_stream)
            return
        stream = Stream(sid, self._recv_initial, self._send_initial)
        stream.content_length = content_length
        self._streams[sid] = stream
        self._last_processed = sid
        events.append(RequestReceived(sid, headers))
        if end_stream:
            self._end_remote(stream, events)

    def _refuse_too_large(self, sid: int, end_stream: bool) -> None:
        """RFC 9113 section 10.5.1: answer 431 without involving the application."""
        self._output.header_block(sid, _HEADERS_TOO_LARGE, True, control=True)
        if not end_stream:
            self._output.control(fr.rst_stream_frame(sid, ErrorCode.NO_ERROR))
        self._remember_closed(sid, by_us=True)
        self._spend_budget()

    def _on_trailers(
        self, stream: Stream, headers: Headers, end_stream: bool, self_dependent: bool,
        events: list[Event],
    ) -> None:
        """A second header block on an open stream: the request's trailers."""
        sid = stream.stream_id
        if not stream.remote_open:
            raise StreamError(sid, ErrorCode.STREAM_CLOSED, "HEADERS after END_STREAM")
        if self_dependent:
            raise StreamError(sid, ErrorCode.PROTOCOL_ERROR, "stream depends on itself")
        if not end_stream:
            raise StreamError(sid, ErrorCode.PROTOCOL_ERROR, "trailers without END_STREAM")
        try:
            validate_trailers(headers)
        except MalformedHeaders as err:
            raise StreamError(sid, ErrorCode.PROTOCOL_ERROR, str(err)) from err
        if stream.content_length is not None and stream.received_length != stream.content_length:
            raise StreamError(sid, ErrorCode.PROTOCOL_ERROR, "body does not match content-length")
        events.append(TrailersReceived(sid, headers))
        self._end_remote(stream, events)

    # ------------------------------------------------------------------ other frames

    def _on_priority(self, frame: fr.Frame, events: list[Event]) -> None:
        sid = frame.stream_id
        if sid == 0:
            raise ProtocolError(ErrorCode.PROTOCOL_ERROR, "PRIORITY on stream 0")
        if len(frame.payload) != 5:
            raise StreamError(sid, ErrorCode.FRAME_SIZE_ERROR, "PRIORITY length is not 5")
        if fr.parse_priority(frame.payload)[0] == sid:
            raise StreamError(sid, ErrorCode.PROTOCOL_ERROR, "stream depends on itself")
        # Otherwise ignored: RFC 9113 deprecates the priority scheme.
        self._idle_frame()

    def _on_rst_stream(self, frame: fr.Frame, events: list[Event]) -> None:
        sid = frame.stream_id
        if sid == 0:
            raise ProtocolError(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if len(frame.payload) != 4:
            raise ProtocolError(ErrorCode.FRAME_SIZE_ERROR, "RST_STREAM length is not 4")
        stream = self._streams.get(sid)
        if stream is None:
            if self._is_idle(sid):
                raise ProtocolError(ErrorCode.PROTOCOL_ERROR, f"RST_STREAM on idle stream {sid}")
            self._idle_frame()  # already closed: nothing to do
            return
        stream.reset()
        self._forget(stream, by_us=False)
        events.append(StreamReset(sid, error_code(fr.parse_u32(frame.payload)), remote=True))
        self._spend_budget()

    def _on_settings(self, frame: fr.Frame, events: list[Event]) -> None:
        if frame.stream_id != 0:
            raise ProtocolError(ErrorCode.PROTOCOL_ERROR, "SETTINGS on a stream")
        if frame.flags & fr.FLAG_ACK:
            if frame.payload:
                raise ProtocolError(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            applied = self._local.acknowledged()
            if applied is None:
                self._idle_frame()  # acknowledges nothing we sent
            else:
                self._reader.max_frame_size = self._local.enforced(SettingCode.MAX_FRAME_SIZE)
                self._recv_initial = self._local.enforced(SettingCode.INITIAL_WINDOW_SIZE)
                self._decoder.max_allowed_table_size = self._local.enforced(
                    SettingCode.HEADER_TABLE_SIZE
                )
                events.append(SettingsAcknowledged(tuple(sorted(applied.items()))))
            return
        self._idle_frame()
        changes = self._remote.apply(fr.parse_settings(frame.payload))
        self._output.control(fr.settings_frame(ack=True))
        self._send_initial = self._remote[SettingCode.INITIAL_WINDOW_SIZE]
        self._output.max_frame_size = self._remote[SettingCode.MAX_FRAME_SIZE]
        if SettingCode.HEADER_TABLE_SIZE in changes:
            self._output.peer_table_size(changes[SettingCode.HEADER_TABLE_SIZE][1])
        if SettingCode.INITIAL_WINDOW_SIZE in changes:
            old, new = changes[SettingCode.INITIAL_WINDOW_SIZE]
            for stream in self._streams.values():
                if not stream.outbound.shift(new - old):
                    raise ProtocolError(
                        ErrorCode.FLOW_CONTROL_ERROR, "INITIAL_WINDOW_SIZE overflows a window"
                    )
            if new > old:
                self._flush_blocked()
        if changes:
            events.append(
                RemoteSettingsChanged(tuple((c, o, n) for c, (o, n) in sorted(changes.items())))
            )

    def _on_push_promise(self, frame: fr.Frame, events: list[Event]) -> None:
        raise ProtocolError(ErrorCode.PROTOCOL_ERROR, "clients cannot push")

    def _on_ping(self, frame: fr.Frame, events: list[Event]) -> None:
        if frame.stream_id != 0:
            raise ProtocolError(ErrorCode.PROTOCOL_ERROR, "PING on a stream")
        if len(frame.payload) != 8:
            raise ProtocolError(ErrorCode.FRAME_SIZE_ERROR, "PING length is not 8")
        self._idle_frame()
        if frame.flags & fr.FLAG_ACK:
            events.append(PingAck(frame.payload))
        else:
            self._output.control(fr.ping_frame(frame.payload, ack=True))
            events.append(PingReceived(frame.payload))

    def _on_goaway(self, frame: fr.Frame, events: list[Event]) -> None:
        if frame.stream_id != 0:
            raise ProtocolError(ErrorCode.PROTOCOL_ERROR, "GOAWAY on a stream")
        if len(frame.payload) < 8:
            raise ProtocolError(ErrorCode.FRAME_SIZE_ERROR, "GOAWAY shorter than 8 octets")
        last, code, debug = fr.parse_goaway(frame.payload)
        events.append(ConnectionTerminated(error_code(code), last, debug, remote=True))

    def _on_window_update(self, frame: fr.Frame, events: list[Event]) -> None:
        if len(frame.payload) != 4:
            raise ProtocolError(ErrorCode.FRAME_SIZE_ERROR, "WINDOW_UPDATE length is not 4")
        increment = fr.parse_u32(frame.payload) & fr.STREAM_ID_MASK
        sid = frame.stream_id
        if sid == 0:
            if increment == 0:
                raise ProtocolError(ErrorCode.PROTOCOL_ERROR, "connection WINDOW_UPDATE of 0")
            if not self._conn_out.increase(increment):
                raise ProtocolError(ErrorCode.FLOW_CONTROL_ERROR, "connection window above 2^31-1")
            events.append(WindowUpdated(0, increment))
            self._flush_blocked()
            return
        stream = self._streams.get(sid)
        if stream is None:
            if self._is_idle(sid):
                raise ProtocolError(ErrorCode.PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {sid}")
            return  # closed: allowed for a while (RFC 9113 section 5.1), ignored
        if increment == 0:
            raise StreamError(sid, ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
        if not stream.outbound.increase(increment):
            raise StreamError(sid, ErrorCode.FLOW_CONTROL_ERROR, "stream window above 2^31-1")
        events.append(WindowUpdated(sid, increment))
        if stream.queue or stream.local_end_queued:
            self._flush_stream(stream)
