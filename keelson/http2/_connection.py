"""``H2Connection``: the server side of one HTTP/2 connection, without I/O (RFC 9113).

Feed it what the socket delivered (``receive_data``) and get events back; call the sending
methods as the application answers; write out ``data_to_send()``. It never blocks, never
reads a clock except the optional ``H2Config.clock`` (flood budgets), and never raises
for anything the peer sends: a peer's stream error becomes RST_STREAM (+ ``StreamReset``
with ``remote=False`` for streams the application knows), a connection error becomes GOAWAY
+ ``ConnectionTerminated(remote=False)``, after which ``receive_data`` returns no events.

Division of labour: this module holds the class — construction and the server preface,
the public state queries and ``check_invariants``, ``receive_data`` (the client preface,
cutting frames, the frame-order rules that span frames, dispatch) and how errors end
streams and the connection. ``_state`` declares the connection's fields and the steps both
directions share; ``_receive`` handles each frame type; ``_send`` is the application's
API. Together they decide (stream states, id rules, flow-control accounting, errors);
``_outbound`` writes frames in wire order and owns the HPACK encoder; ``_frames`` cuts and
builds frames; ``_decoding`` decodes request headers; ``_headers`` validates them.

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
from typing import cast

from keelson.http2 import _frames as fr
from keelson.http2._budget import Budget
from keelson.http2._config import H2Config
from keelson.http2._decoding import HeaderDecoder
from keelson.http2._events import ConnectionTerminated, Event, StreamReset
from keelson.http2._flow import MAX_WINDOW, InboundWindow, check
from keelson.http2._headers import KNOWN_GOOD_LIMIT
from keelson.http2._outbound import Output
from keelson.http2._receive import FrameHandlers
from keelson.http2._send import Sender
from keelson.http2._settings import DEFAULTS, LocalSettings, RemoteSettings, SettingCode
from keelson.http2._stream import StreamState
from keelson.http2.errors import ErrorCode, ProtocolError, StreamError

_PREFACE = fr.CONNECTION_PREFACE
_HTTP1_START = re.compile(rb"(?!PRI )[A-Z]")
_HTTP1_REFUSAL = (
    b"HTTP/1.1 505 HTTP Version Not Supported\r\n"
    b"content-type: text/plain\r\nconnection: close\r\ncontent-length: 36\r\n\r\n"
    b"this server speaks HTTP/2 (h2/h2c)\r\n"
)


class H2Connection(FrameHandlers, Sender):
    """A server-side HTTP/2 connection state machine (bytes in, events out; calls in, bytes out).

    The server preface (SETTINGS, then a connection WINDOW_UPDATE) is queued by the
    constructor, so ``data_to_send()`` has bytes before anything was received.
    """

    def __init__(self, config: H2Config | None = None) -> None:
        # Every field is declared, with its invariant, in ``_state.ConnectionState``.
        self.config = cfg = config or H2Config()
        self._output = Output()
        self._out = self._output.buffer  # the same bytearray, for frames written directly
        self._reader = fr.FrameReader(max(cfg.max_frame_size, DEFAULTS[SettingCode.MAX_FRAME_SIZE]))
        self._awaiting_preface = True
        self._awaiting_settings = True
        self._terminated = False
        self._local = LocalSettings()
        self._remote = RemoteSettings()
        self._streams = {}
        self._blocked = {}
        self._closed = {}
        self._highest_stream_id = 0
        self._last_processed = 0
        self._goaway_last = None
        self._block_stream = 0
        self._block_end_stream = False
        self._block_self_dependent = False
        self._block = None
        self._headers = HeaderDecoder(max_header_list_size=cfg.max_header_block_size)
        self._decoder = self._headers.decoder
        self._frames = 0
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
        self._recv_initial = self._local.enforced(SettingCode.INITIAL_WINDOW_SIZE)
        self._send_initial = self._remote[SettingCode.INITIAL_WINDOW_SIZE]
        self._known_good = set()
        self._validated = None
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

    # ------------------------------------------------------------------ errors

    def _terminate(self, code: ErrorCode, message: str, events: list[Event]) -> None:
        """A connection error: GOAWAY naming the last stream we processed, then shut."""
        debug = message.encode("utf-8", "replace")[:256]
        self._out += fr.goaway_frame(self._last_processed, code, debug)
        self._goaway_last = self._last_processed
        self._shut(events, code, debug)

    def _shut(self, events: list[Event], code: ErrorCode, debug: bytes) -> None:
        """Stop reading and drop every stream; report ``ConnectionTerminated(remote=False)``."""
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
