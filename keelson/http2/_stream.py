"""One stream's state (RFC 9113 section 5.1) as seen by a server, plus its send queue.

States: a client stream is born ``OPEN`` (or ``HALF_CLOSED_REMOTE`` when its HEADERS carry
END_STREAM) — ``IDLE`` never needs an object, and servers never reserve streams. END_STREAM
received moves OPEN -> HALF_CLOSED_REMOTE, HALF_CLOSED_LOCAL -> CLOSED; END_STREAM sent
moves OPEN -> HALF_CLOSED_LOCAL, HALF_CLOSED_REMOTE -> CLOSED; RST_STREAM either way ->
CLOSED. ``_state`` drops CLOSED streams from its table; what it needs to remember about
closed streams (were they reset by us?) it keeps itself.

The send queue holds DATA the send windows do not allow yet, then the END_STREAM mark or the
trailer list. Invariants:
* ``queued_bytes == sum(len(c) for c in queue)``;
* once ``local_end_queued`` nothing more may be queued; the state moves to a local-closed
  state only when the END_STREAM frame is actually emitted (queue drained);
* trailers are kept as a header list, not HPACK bytes: blocks must be HPACK-encoded in the
  order they go on the wire, which for trailers is after the queued DATA.
"""

from __future__ import annotations

import enum
from collections import deque

from keelson.http2._events import Headers
from keelson.http2._flow import InboundWindow, OutboundWindow


class StreamState(enum.Enum):
    OPEN = "open"
    HALF_CLOSED_REMOTE = "half-closed (remote)"
    HALF_CLOSED_LOCAL = "half-closed (local)"
    CLOSED = "closed"


class Stream:
    """A client-initiated stream that is not yet closed."""

    __slots__ = (
        "stream_id",
        "state",
        "inbound",
        "outbound",
        "queue",
        "queued_bytes",
        "local_end_queued",
        "trailers",
        "headers_sent",
        "content_length",
        "received_length",
    )

    def __init__(self, stream_id: int, inbound_initial: int, outbound_initial: int) -> None:
        self.stream_id = stream_id
        self.state = StreamState.OPEN
        self.inbound = InboundWindow(inbound_initial)
        self.outbound = OutboundWindow(outbound_initial)
        self.queue: deque[bytes] = deque()
        self.queued_bytes = 0
        self.local_end_queued = False
        self.trailers: Headers | object | None = None
        self.headers_sent = False
        self.content_length: int | None = None
        self.received_length = 0

    @property
    def remote_open(self) -> bool:
        """The client may still send DATA/trailers on this stream."""
        return self.state is StreamState.OPEN or self.state is StreamState.HALF_CLOSED_LOCAL

    @property
    def local_open(self) -> bool:
        """We may still queue output on this stream."""
        return not self.local_end_queued and (
            self.state is StreamState.OPEN or self.state is StreamState.HALF_CLOSED_REMOTE
        )

    def end_remote(self) -> None:
        """The client's END_STREAM arrived."""
        if self.state is StreamState.OPEN:
            self.state = StreamState.HALF_CLOSED_REMOTE
        elif self.state is StreamState.HALF_CLOSED_LOCAL:
            self.state = StreamState.CLOSED
        else:
            raise AssertionError(f"END_STREAM received in state {self.state}")

    def end_local(self) -> None:
        """Our END_STREAM went on the wire."""
        if self.state is StreamState.OPEN:
            self.state = StreamState.HALF_CLOSED_LOCAL
        elif self.state is StreamState.HALF_CLOSED_REMOTE:
            self.state = StreamState.CLOSED
        else:
            raise AssertionError(f"END_STREAM sent in state {self.state}")

    def reset(self) -> None:
        """RST_STREAM sent or received: closed, nothing queued survives."""
        self.state = StreamState.CLOSED
        self.queue.clear()
        self.queued_bytes = 0
        self.trailers = None
