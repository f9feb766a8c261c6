"""``H2Config``: the limits a server connection advertises and enforces.

Every field is a bound on what one client can make the server hold or do; the defaults suit
gRPC (small unary messages, a few long-lived streams, many concurrent calls per connection).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class H2Config:
    """Per-connection limits (immutable; share one instance between connections)."""

    #: SETTINGS_MAX_CONCURRENT_STREAMS; streams beyond it are refused (REFUSED_STREAM).
    max_concurrent_streams: int = 100
    #: SETTINGS_INITIAL_WINDOW_SIZE: how much request body one stream may have in flight.
    initial_window_size: int = 1 << 20
    #: The connection's receive window (opened with a WINDOW_UPDATE right after SETTINGS).
    connection_window_size: int = 1 << 22
    #: SETTINGS_MAX_FRAME_SIZE: the largest frame we accept (2**14 .. 2**24-1).
    max_frame_size: int = 1 << 14
    #: SETTINGS_MAX_HEADER_LIST_SIZE: larger request header lists are answered with 431.
    max_header_list_size: int = 16 << 10
    #: SETTINGS_HEADER_TABLE_SIZE for the HPACK decoder's dynamic table.
    header_table_size: int = 4096
    #: Hard cap on one header block (compressed, across CONTINUATION) and on its decoded
    #: size; beyond it the connection ends with ENHANCE_YOUR_CALM (HPACK state is lost).
    max_header_block_size: int = 64 << 10
    #: Rapid-reset budget: this many client-caused stream resets per ``reset_period``...
    reset_burst: int = 200
    #: ...measured in seconds of ``clock()`` when a clock is given...
    reset_period_seconds: float = 10.0
    #: ...else in frames received.
    reset_period_frames: int = 2000
    #: Idle-frame budget (see ``_budget``): this many PING/SETTINGS/PRIORITY/empty DATA/
    #: CONTINUATION/unknown frames per period, one more for each HEADERS or DATA we send...
    idle_frame_burst: int = 1000
    #: ...the period in seconds of ``clock()`` when a clock is given...
    idle_frame_period_seconds: float = 10.0
    #: ...else in frames received (a pure flood gains 0.1 token per frame: it runs dry).
    idle_frame_period_frames: int = 10000
    #: Monotonic clock in seconds (e.g. ``loop.time``); None: count frames instead.
    clock: Callable[[], float] | None = None
    #: Unsent control frames answering the peer (PING/SETTINGS ACKs, RST_STREAM,
    #: WINDOW_UPDATE, 431 responses) beyond which the connection ends with ENHANCE_YOUR_CALM:
    #: a peer that sends but never reads cannot make us buffer without bound. The
    #: application's own DATA is not counted (it bounds that itself).
    max_unsent_bytes: int = 1 << 20
    #: How many closed stream ids are remembered to tell "closed" from "reset by us".
    closed_streams_remembered: int = 1024

    def __post_init__(self) -> None:
        """Refuse values RFC 9113 does not allow us to advertise (ValueError)."""
        window_max = (1 << 31) - 1
        if not (1 << 14) <= self.max_frame_size <= (1 << 24) - 1:
            raise ValueError("max_frame_size must be within [2^14, 2^24-1]")
        if not 0 <= self.initial_window_size <= window_max:
            raise ValueError("initial_window_size must be within [0, 2^31-1]")
        if not 65535 <= self.connection_window_size <= window_max:
            raise ValueError("connection_window_size must be within [65535, 2^31-1]")
        for name in ("max_concurrent_streams", "max_header_list_size", "header_table_size",
                     "max_header_block_size", "reset_burst", "idle_frame_burst",
                     "max_unsent_bytes", "closed_streams_remembered"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if min(self.reset_period_seconds, self.reset_period_frames,
               self.idle_frame_period_seconds, self.idle_frame_period_frames) <= 0:
            raise ValueError("budget periods must be positive")
