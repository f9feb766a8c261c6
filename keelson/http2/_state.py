"""The state one ``H2Connection`` keeps, and the transitions both of its directions share.

``H2Connection`` is one object assembled from mixins over this state: ``_receive``'s
``FrameHandlers`` (what the peer's frames do) and ``_send``'s ``Sender`` (what the
application's calls do), joined in ``_connection``. Mixins, not helper objects holding a
reference to the connection, because the hot paths (``receive_data`` -> ``_on_data`` /
``_on_headers``, ``send_data``, ``send_trailers``) touch the connection's fields many times
per request: as methods of the one object they reach them as ``self._x`` — no extra
attribute hop per access, and the frame-type table still holds bound methods. The cost of
mixins, one class spread over several files, is paid here: every field is declared once,
below, next to the invariant that constrains it; ``H2Connection.__init__`` assigns them
all, and ``mypy --strict`` checks every module against these declarations.

Besides the declarations this module owns the transitions that both directions take:
forgetting a closed stream while remembering that it was closed (and by whom) for frames
still in flight; the two flood budgets (``_budget``); giving connection window back; and
flushing queued DATA as windows allow — the application queues it (``send_data``), the
peer's WINDOW_UPDATE and SETTINGS open the windows that release it.
"""

from __future__ import annotations

from collections.abc import Callable

from hpack import Decoder

from keelson.http2 import _frames as fr
from keelson.http2._budget import Budget
from keelson.http2._config import H2Config
from keelson.http2._decoding import HeaderDecoder
from keelson.http2._events import Event, Headers
from keelson.http2._flow import InboundWindow, OutboundWindow
from keelson.http2._outbound import Flushed, Output
from keelson.http2._settings import LocalSettings, RemoteSettings
from keelson.http2._stream import Stream, StreamState
from keelson.http2.errors import ErrorCode, ProtocolError

_OPEN_OR_REMOTE_CLOSED = (StreamState.OPEN, StreamState.HALF_CLOSED_REMOTE)

FrameHandler = Callable[[fr.Frame, list[Event]], None]


class ConnectionState:
    """The fields of an ``H2Connection`` (assigned in its ``__init__``) and shared steps.

    Invariants marked (*) are checked by ``H2Connection.check_invariants``.
    """

    config: H2Config
    # Output: the frames we write, in wire order (``_outbound``). ``_out`` is the same
    # bytearray as ``_output.buffer``, for frames written directly; ``_conn_out`` is the
    # same window as ``_output.window``, our connection send window (*: <= 2**31-1).
    _output: Output
    _out: bytearray
    _conn_out: OutboundWindow
    # Input: holds < 9 + max_frame_size bytes (*); replaced by a 0-byte reader on shutdown.
    _reader: fr.FrameReader
    _handlers: dict[int, FrameHandler]  # frame type -> ``_on_<frame>`` (bound methods)
    _awaiting_preface: bool  # the client's 24-octet preface has not been read yet
    _awaiting_settings: bool  # the preface must be followed by SETTINGS (not an ACK)
    _terminated: bool  # after a connection error or ``goaway(<error>)``: input is ignored
    _local: LocalSettings  # what we advertised and what we enforce until it is acknowledged
    _remote: RemoteSettings  # the client's settings
    # Open streams by id (*): odd, strictly increasing, <= _highest_stream_id, never CLOSED,
    # at most max_concurrent_streams of them.
    _streams: dict[int, Stream]
    _blocked: dict[int, None]  # streams with DATA waiting for a window, FIFO (*: all open)
    # Recently closed stream id -> reset by us (*: at most closed_streams_remembered, the
    # oldest forgotten first).
    _closed: dict[int, bool]
    _highest_stream_id: int  # highest client stream id seen in HEADERS; only grows
    _last_processed: int  # highest stream id handed to the application
    _goaway_last: int | None  # last stream id of the GOAWAY we sent (None: none sent)
    # An incomplete header block: its stream, END_STREAM flag, self-dependency, fragments
    # (*: at most max_header_block_size bytes; while it is set only its CONTINUATION is read).
    _block_stream: int
    _block_end_stream: bool
    _block_self_dependent: bool
    _block: bytearray | None
    _headers: HeaderDecoder  # request HPACK decoding, with its memo (``_decoding``)
    _decoder: Decoder  # ``_headers.decoder``: every received block passes through it
    _frames: int  # frames received: the budgets' clock when the config has none
    _budget: Budget  # rapid resets (*: 0 <= tokens <= burst)
    _idle: Budget  # frames that do no work (*: 0 <= tokens <= burst)
    _conn_in: InboundWindow  # our connection receive window (*: available <= 2**31-1)
    # Hot-path copies of settings (refreshed when SETTINGS or their ACK arrive).
    _recv_initial: int  # the INITIAL_WINDOW_SIZE we enforce for new streams
    _send_initial: int  # the client's INITIAL_WINDOW_SIZE, for new streams' send windows
    _known_good: set[tuple[bytes, bytes]]  # validated header fields (*: bounded)
    _validated: tuple[Headers, tuple[int | None, int]] | None  # the last request list checked

    # ------------------------------------------------------------------ budgets

    def _spend_budget(self) -> None:
        """The client ended a stream abnormally (or made us refuse one): spend one token."""
        if not self._budget.spend():
            raise ProtocolError(ErrorCode.ENHANCE_YOUR_CALM, "too many streams reset or refused")

    def _idle_frame(self) -> None:
        """A frame that moves no request forward arrived: spend the idle-frame budget."""
        if not self._idle.spend():
            raise ProtocolError(ErrorCode.ENHANCE_YOUR_CALM, "too many frames that do no work")

    def _frame_clock(self) -> float:
        """The budgets' clock when the config gives none: frames received so far."""
        return float(self._frames)

    # ------------------------------------------------------------------ stream lifecycle

    def _remember_closed(self, stream_id: int, by_us: bool) -> None:
        """Note a closed stream (bounded: the oldest is forgotten), to judge late frames."""
        closed = self._closed
        closed[stream_id] = by_us
        if len(closed) > self.config.closed_streams_remembered:
            del closed[next(iter(closed))]

    def _is_idle(self, stream_id: int) -> bool:
        """Never opened by the client: above every id it used, or even (we never push)."""
        return stream_id > self._highest_stream_id or not stream_id & 1

    def _forget(self, stream: Stream, by_us: bool) -> None:
        """Drop a stream that just closed from the open and blocked tables."""
        del self._streams[stream.stream_id]
        self._blocked.pop(stream.stream_id, None)
        self._remember_closed(stream.stream_id, by_us)

    def _end_local(self, stream: Stream) -> None:
        """Our END_STREAM went on the wire; forget the stream if that closed it."""
        stream.end_local()
        if stream.state is StreamState.CLOSED:
            self._forget(stream, by_us=False)

    # ------------------------------------------------------------------ windows

    def _ack_connection(self, n: int) -> None:
        """Give ``n`` received bytes back to the connection window (WINDOW_UPDATE batched)."""
        increment = self._conn_in.acknowledge(n)
        if increment:
            self._output.control(fr.window_update_frame(0, increment))

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
        """A window grew: flush blocked streams in FIFO order while the connection allows."""
        for sid in list(self._blocked):
            if self._conn_out.size <= 0:
                return
            stream = self._streams.get(sid)
            if stream is None:
                self._blocked.pop(sid, None)
            else:
                self._flush_stream(stream)
