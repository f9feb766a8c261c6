"""``H2Connection``: the server side of one HTTP/2 connection, without I/O (RFC 9113).

Feed it what the socket delivered (``receive_data``) and get events back; call the sending
methods as the application answers; write out ``data_to_send()``. It never blocks, never
reads a clock except the optional ``H2Config.clock`` (flood budgets), and never raises
for anything the peer sends: a peer's stream error becomes RST_STREAM (+ ``StreamReset``
with ``remote=False`` for streams the application knows), a connection error becomes GOAWAY
+ ``ConnectionTerminated(remote=False)``, after which ``receive_data`` returns no events.

Division of labour: this module decides (stream states, id rules, flow-control accounting,
errors); ``_outbound`` writes frames in wire order and owns the HPACK encoder; ``_frames``
cuts and builds frames; ``_decoding`` decodes request headers; ``_headers`` validates them.

Invariants (the ones the fuzzer checks through ``check_invariants`` are marked *):
* (*) Memory per connection is bounded by the config, not by the peer: the frame reader
  holds < 9 + max_frame_size bytes; an incomplete header block <= max_header_block_size;
  unsent control frames answering the peer <= max_unsent_bytes (else ENHANCE_YOUR_CALM); open
  streams <= max_concurrent_streams; remembered closed ids <= closed_streams_remembered.
  DATA is never buffered here: it is handed over as an event, and the application's
  unacknowledged bytes are bounded by the windows we advertised.
* (*) CPU per connection is bounded by work the client asks for: stream resets it causes
  spend the rapid-reset budget, frames that move no request forward (PING, SETTINGS,
  empty DATA/CONTINUATION, frames we drop unread...) spend the idle-frame budget, which our
  HEADERS/DATA replenish (``_budget``); either one empty is GOAWAY ENHANCE_YOUR_CALM.
* HPACK blocks are encoded in exactly the order they are written (``_outbound``; trailers
  queued behind DATA are encoded when they are flushed), and every received block is
  decoded — even on streams we then ignore or refuse — so both dynamic tables stay in sync.
* Send windows are never exceeded: DATA leaves only when min(connection window, stream
  window, peer's max frame size) allows; the rest waits in the stream's queue and is flushed
  on WINDOW_UPDATE or when SETTINGS_INITIAL_WINDOW_SIZE grows.
* (*) Stream ids: client streams are odd and strictly increasing; ``_highest_stream_id``
  only grows; a stream in ``_streams`` is never CLOSED.
* Cached header blocks (``HeaderBlock``) are emitted only after any pending HPACK dynamic
  table size update (see ``_headers`` for the proof that their bytes are state-free);
  received blocks are answered from ``_decoding``'s memo only in the decoder state they
  were decoded in (the proof is there).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import cast

from hpack import HPACKError, OversizedHeaderListError

from keelson.http2 import _frames as fr
from keelson.http2._budget import Budget
from keelson.http2._config import H2Config
from keelson.http2._decoding import HeaderDecoder
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
from keelson.http2._flow import MAX_WINDOW, InboundWindow, check
from keelson.http2._headers import (
    KNOWN_GOOD_LIMIT,
    HeaderBlock,
    MalformedHeaders,
    validate_request,
    validate_response,
    validate_trailers,
)
from keelson.http2._outbound import Flushed, Output
from keelson.http2._settings import DEFAULTS, LocalSettings, RemoteSettings, SettingCode
from keelson.http2._stream import Stream, StreamState
from keelson.http2.errors import (
    ConnectionClosedError,
    ErrorCode,
    LocalProtocolError,
    ProtocolError,
    StreamClosedError,
    StreamError,
    error_code,
)

_PREFACE = fr.CONNECTION_PREFACE
_HTTP1_START = re.compile(rb"(?!PRI )[A-Z]")
_HTTP1_REFUSAL = (
    b"HTTP/1.1 505 HTTP Version Not Supported\r\n"
    b"content-type: text/plain\r\nconnection: close\r\ncontent-length: 36\r\n\r\n"
    b"this server speaks HTTP/2 (h2/h2c)\r\n"
)
_HEADERS_TOO_LARGE = HeaderBlock.static(((b":status", b"431"),))
_OPEN_OR_REMOTE_CLOSED = (StreamState.OPEN, StreamState.HALF_CLOSED_REMOTE)

HeadersArg = Sequence[tuple[bytes, bytes]] | HeaderBlock


class H2Connection:
    """A server-side HTTP/2 connection state machine (bytes in, events out; calls in, bytes out).

    The server preface (SETTINGS, then a connection WINDOW_UPDATE) is queued by the
    constructor, so ``data_to_send()`` has bytes before anything was received.
    """

    def __init__(self, config: H2Config | None = None) -> None:
        self.config = cfg = config or H2Config()
        self._output = Output()
        self._out = self._output.buffer  # the same bytearray, for frames written directly
        self._reader = fr.FrameReader(max(cfg.max_frame_size, DEFAULTS[SettingCode.MAX_FRAME_SIZE]))
        self._awaiting_preface = True
        self._awaiting_settings = True
        self._terminated = False
        self._local = LocalSettings()
        self._remote = RemoteSettings()
        self._streams: dict[int, Stream] = {}
        self._blocked: dict[int, None] = {}  # streams with DATA waiting for a window, FIFO
        self._closed: dict[int, bool] = {}  # recently closed stream id -> reset by us
        self._highest_stream_id = 0  # highest client stream id seen in HEADERS
        self._last_processed = 0  # highest stream id handed to the application
        self._goaway_last: int | None = None  # last stream id of the GOAWAY we sent
        # An incomplete header block: its stream, END_STREAM flag, self-dependency, fragments.
        self._block_stream = 0
        self._block_end_stream = False
        self._block_self_dependent = False
        self._block: bytearray | None = None
        self._headers = HeaderDecoder(max_header_list_size=cfg.max_header_block_size)
        self._decoder = self._headers.decoder
        self._frames = 0  # frames received: the budgets' clock when the config has none
        if cfg.clock is not None:
            self._budget = Budget(cfg.reset_burst, cfg.reset_period_seconds, cfg.clock)
            self._idle = Budget(cfg.idle_frame_burst, cfg.idle_frame_period_seconds, cfg.clock)
        else:
            self._budget = Budget(cfg.reset_burst, cfg.reset_period_frames, self._frame_clock)
            self._idle = Budget(
                cfg.idle_frame_burst, cfg.idle_frame_period_frames, self._frame_clock
            )
        self._conn_in = InboundWindow(DEFAULTS[SettingCode.INITIAL_WINDOW_SIZE])
        self._conn_out = self._output.window
        self._handlers = {
            fr.DATA: self._on_data,
            fr.HEADERS: self._on_headers,
            fr.PRIORITY: self._on_priority,
            fr.RST_STREAM: self._on_rst_stream,
            fr.SETTINGS: self._on_settings,
            fr.PUSH_PROMISE: self._on_push_promise,
            fr.PING: self._on_ping,
            fr.GOAWAY: self._on_goaway,
            fr.WINDOW_UPDATE: self._on_window_update,
            fr.CONTINUATION: self._on_continuation,
        }
        advertised = {
            SettingCode.ENABLE_PUSH: 0,
            SettingCode.MAX_CONCURRENT_STREAMS: cfg.max_concurrent_streams,
            SettingCode.INITIAL_WINDOW_SIZE: cfg.initial_window_size,
            SettingCode.MAX_HEADER_LIST_SIZE: cfg.max_header_list_size,
        }
        if cfg.max_frame_size != DEFAULTS[SettingCode.MAX_FRAME_SIZE]:
            advertised[SettingCode.MAX_FRAME_SIZE] = cfg.max_frame_size
        if cfg.header_table_size != DEFAULTS[SettingCode.HEADER_TABLE_SIZE]:
            advertised[SettingCode.HEADER_TABLE_SIZE] = cfg.header_table_size
        self._out += fr.settings_frame(self._local.propose(cast(dict[int, int], advertised)))
        self._decoder.max_allowed_table_size = self._local.enforced(SettingCode.HEADER_TABLE_SIZE)
        # Hot-path copies of settings (refreshed when SETTINGS or their ACK arrive).
        self._recv_initial = self._local.enforced(SettingCode.INITIAL_WINDOW_SIZE)
        self._send_initial = self._remote[SettingCode.INITIAL_WINDOW_SIZE]
        self._known_good: set[tuple[bytes, bytes]] = set()
        extra = cfg.connection_window_size - DEFAULTS[SettingCode.INITIAL_WINDOW_SIZE]
        if extra > 0:
            self._conn_in.grow(extra)
            self._out += fr.window_update_frame(0, extra)

    # ------------------------------------------------------------------ state queries

    @property
    def terminated(self) -> bool:
        """True once a GOAWAY with an error was sent (by us or on the caller's request)."""
        return self._terminated

    @property
    def open_streams(self) -> int:
        """Streams not yet closed in both directions."""
        return len(self._streams)

    @property
    def drained(self) -> bool:
        """A GOAWAY was sent (or the connection terminated) and no stream is left open."""
        return (self._goaway_last is not None or self._terminated) and not self._streams

    @property
    def highest_stream_id(self) -> int:
        """The highest client stream id handed to the application so far."""
        return self._last_processed

    def remote_setting(self, code: int) -> int:
        """The client's current value for a SETTINGS identifier (RFC default if unsent)."""
        return self._remote[code]

    def send_window(self, stream_id: int) -> int:
        """How many DATA bytes could leave on the stream right now (0 if it cannot send)."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return 0
        return max(0, min(self._conn_out.size, stream.outbound.size))

    def queued_bytes(self, stream_id: int) -> int:
        """DATA bytes accepted by ``send_data`` and still waiting for a window."""
        stream = self._streams.get(stream_id)
        return stream.queued_bytes if stream is not None else 0

    def check_invariants(self) -> None:
        """Raise AssertionError if a documented invariant does not hold (kept under -O).

        Cheap enough for tests and fuzzers to call after every step; production code does
        not need to.
        """
        cfg = self.config
        check(self._reader.buffered < fr.FRAME_HEADER_SIZE + self._reader.max_frame_size,
              "frame reader holds more than one frame")
        check(len(self._streams) <= cfg.max_concurrent_streams, "too many open streams")
        check(len(self._closed) <= cfg.closed_streams_remembered, "closed-stream memory grew")
        check(len(self._known_good) <= KNOWN_GOOD_LIMIT, "validated-field memo grew")
        check(self._output.control_unsent <= cfg.max_unsent_bytes + 2 * cfg.max_frame_size,
              "unsent control frames above the limit")
        check(self._block is None or len(self._block) <= cfg.max_header_block_size,
              "header block above its cap")
        check(all(sid in self._streams for sid in self._blocked), "blocked stream not open")
        check(all(0 <= b.tokens <= b.burst for b in (self._budget, self._idle)),
              "budget tokens out of range")
        check(self._conn_out.size <= MAX_WINDOW and self._conn_in.available <= MAX_WINDOW,
              "connection window above 2^31-1")
        last = 0
        for sid, stream in self._streams.items():
            check(sid & 1 == 1 and sid > last and sid <= self._highest_stream_id,
                  "stream ids not odd and increasing")
            last = sid
            check(stream.state is not StreamState.CLOSED, "closed stream kept open")
            check(stream.queued_bytes == sum(len(c) for c in stream.queue), "queue size drift")
            check(stream.outbound.size <= MAX_WINDOW, "stream window above 2^31-1")
            check(stream.inbound.outstanding >= 0 and stream.inbound.unannounced >= 0,
                  "negative inbound accounting")

    def data_to_send(self) -> bytes:
        """Everything queued for the wire since the last call (may be empty)."""
        return self._output.take()

    # ------------------------------------------------------------------ receiving

    def receive_data(self, data: bytes) -> list[Event]:
        """Process bytes from the client; return the events they produced, in order.

        Never raises for the peer's input. After a connection error (or ``goaway`` with an
        error code) it ignores further input and returns [].
        """
        events: list[Event] = []
        if self._terminated:
            return events
        self._reader.feed(data)
        try:
            if self._awaiting_preface and not self._read_preface(events):
                return events
            reader = self._reader
            handlers = self._handlers
            limit = self.config.max_unsent_bytes
            while True:
                frame = reader.next_frame()
                if frame is None:
                    break
                self._frames += 1
                if self._block is not None:
                    if frame.type != fr.CONTINUATION or frame.stream_id != self._block_stream:
                        raise ProtocolError(
                            ErrorCode.PROTOCOL_ERROR, "header block interrupted by another frame"
                        )
                elif self._awaiting_settings:
                    if frame.type != fr.SETTINGS or frame.flags & fr.FLAG_ACK:
                        raise ProtocolError(
                            ErrorCode.PROTOCOL_ERROR, "the client preface must end in SETTINGS"
                        )
                    self._awaiting_settings = False
                handler = handlers.get(frame.type)
                if handler is None:  # unknown frame types are ignored (RFC 9113 section 4.1)
                    self._idle_frame()
                    continue
                try:
                    handler(frame, events)
                except StreamError as err:
                    self._stream_error(err, events)
                if self._output.control_unsent > limit:
                    raise ProtocolError(
                        ErrorCode.ENHANCE_YOUR_CALM, "the peer does not read what it makes us send"
                    )
        except ProtocolError as err:
            self._terminate(err.code, err.message, events)
        return events

    def _read_preface(self, events: list[Event]) -> bool:
        """Consume the client connection preface; False while it is incomplete or wrong."""
        head = self._reader.peek()[: len(_PREFACE)]
        if _PREFACE.startswith(head):
            if len(head) < len(_PREFACE):
                return False
            self._reader.take(len(_PREFACE))
            self._awaiting_preface = False
            return True
        # Not HTTP/2. RFC 9113 section 3.4: PROTOCOL_ERROR; GOAWAY may be omitted since the
        # peer does not speak HTTP/2. An HTTP/1.x client gets an HTTP/1.1 answer it can read.
        self._out.clear()
        if _HTTP1_START.match(head):
            self._out += _HTTP1_REFUSAL
        else:
            self._out += fr.goaway_frame(0, ErrorCode.PROTOCOL_ERROR, b"invalid connection preface")
        self._shut(events, ErrorCode.PROTOCOL_ERROR, b"invalid connection preface")
        return False

    def _terminate(self, code: ErrorCode, message: str, events: list[Event]) -> None:
        debug = message.encode("utf-8", "replace")[:256]
        self._out += fr.goaway_frame(self._last_processed, code, debug)
        self._goaway_last = self._last_processed
        self._shut(events, code, debug)

    def _shut(self, events: list[Event], code: ErrorCode, debug: bytes) -> None:
        self._terminated = True
        self._streams.clear()
        self._blocked.clear()
        self._block = None
        self._reader = fr.FrameReader(0)
        events.append(ConnectionTerminated(code, self._last_processed, debug, remote=False))

    def _stream_error(self, err: StreamError, events: list[Event]) -> None:
        """Reset the stream for the peer's fault; spend rapid-reset budget."""
        sid = err.stream_id
        stream = self._streams.pop(sid, None)
        if stream is not None:
            stream.reset()
            self._blocked.pop(sid, None)
            events.append(StreamReset(sid, err.code, remote=False))
        self._remember_closed(sid, by_us=True)
        self._output.control(fr.rst_stream_frame(sid, err.code))
        self._spend_budget()

    def _spend_budget(self) -> None:
        if not self._budget.spend():
            raise ProtocolError(ErrorCode.ENHANCE_YOUR_CALM, "too many streams reset or refused")

    def _idle_frame(self) -> None:
        """A frame that moves no request forward arrived: spend the idle-frame budget."""
        if not self._idle.spend():
            raise ProtocolError(ErrorCode.ENHANCE_YOUR_CALM, "too many frames that do no work")

    def _frame_clock(self) -> float:
        return float(self._frames)

    def _remember_closed(self, stream_id: int, by_us: bool) -> None:
        closed = self._closed
        closed[stream_id] = by_us
        if len(closed) > self.config.closed_streams_remembered:
            del closed[next(iter(closed))]

    def _is_idle(self, stream_id: int) -> bool:
        """Never opened by the client: above every id it used, or even (we never push)."""
        return stream_id > self._highest_stream_id or not stream_id & 1

    def _ack_connection(self, n: int) -> None:
        increment = self._conn_in.acknowledge(n)
        if increment:
            self._output.control(fr.window_update_frame(0, increment))

    # ------------------------------------------------------------------ frame handlers

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
        stream.end_remote()
        events.append(StreamEnded(stream.stream_id))
        if stream.state is StreamState.CLOSED:
            self._forget(stream, by_us=False)

    def _forget(self, stream: Stream, by_us: bool) -> None:
        del self._streams[stream.stream_id]
        self._blocked.pop(stream.stream_id, None)
        self._remember_closed(stream.stream_id, by_us)

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
        try:
            return self._headers.decode(block)
        except OversizedHeaderListError as err:
            raise ProtocolError(ErrorCode.ENHANCE_YOUR_CALM, "header list too large") from err
        except HPACKError as err:
            raise ProtocolError(ErrorCode.COMPRESSION_ERROR, f"bad HPACK block: {err}") from err

    def _on_header_block(
        self, sid: int, block: bytes, end_stream: bool, self_dependent: bool, events: list[Event]
    ) -> None:
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
        try:
            content_length, list_size = validate_request(headers, self._known_good)
        except MalformedHeaders as err:
            raise StreamError(sid, ErrorCode.PROTOCOL_ERROR, str(err)) from err
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

    # ------------------------------------------------------------------ sending

    def _sendable(self, stream_id: int) -> Stream:
        if self._terminated:
            raise ConnectionClosedError("the connection was terminated")
        stream = self._streams.get(stream_id)
        if stream is None or not stream.local_open:
            raise StreamClosedError(stream_id, f"stream {stream_id} cannot send")
        return stream

    @staticmethod
    def _checked(headers: HeadersArg, trailers: bool) -> Headers | HeaderBlock:
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

    def _flush_stream(self, stream: Stream) -> None:
        """Emit the stream's queued DATA as far as the windows allow, then its end."""
        if stream.state not in _OPEN_OR_REMOTE_CLOSED:
            return
        flushed = self._output.flush(stream)
        if flushed is Flushed.BLOCKED:
            self._blocked[stream.stream_id] = None
            return
        self._blocked.pop(stream.stream_id, None)
        if flushed is Flushed.ENDED:
            self._end_local(stream)

    def _flush_blocked(self) -> None:
        for sid in list(self._blocked):
            if self._conn_out.size <= 0:
                return
            stream = self._streams.get(sid)
            if stream is None:
                self._blocked.pop(sid, None)
            else:
                self._flush_stream(stream)

    def _end_local(self, stream: Stream) -> None:
        stream.end_local()
        if stream.state is StreamState.CLOSED:
            self._forget(stream, by_us=False)

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
