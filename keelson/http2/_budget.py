"""Token buckets for frames a client can send cheaply but that cost the server work.

Two floods are budgeted, each by its own :class:`Budget`:

* Rapid reset (CVE-2023-44487): a client opens a stream and cancels it at once, over and
  over; each costs the server a handler start while the client stays under any concurrency
  limit. Every stream the *client* ends abnormally — its RST_STREAM on a live stream, a
  stream we refuse (REFUSED_STREAM), a stream we reset for malformed input — spends one
  token.
* Idle frames (CVE-2019-9512 ping flood, -9515 settings flood, -9518 empty frames, and
  CONTINUATION floods): frames that make us parse, answer or look something up but move no
  request forward — PING and SETTINGS (each forces an ACK), PRIORITY, RST_STREAM of a stream
  already closed, DATA with neither bytes nor END_STREAM, CONTINUATION without END_HEADERS,
  frames of unknown type, and frames we drop unread: HEADERS or DATA on a stream we reset,
  HEADERS opening a stream after our GOAWAY. Each spends one token; every HEADERS or DATA
  the *application* sends gives one back (:meth:`Budget.refund`), as grpc-go forgives pings
  after it sent data: a client's BDP and keepalive pings follow our responses, a flood does
  not.

A bucket holds ``burst`` tokens and refills ``burst`` tokens per ``period``; an empty bucket
means GOAWAY ENHANCE_YOUR_CALM. The period is measured on ``clock()``: the caller's clock in
seconds, or the connection's count of received frames (then ``period`` counts frames). The
core never reads the time itself, so both modes are deterministic under test.

Invariant: ``0 <= tokens <= burst``.
"""

from __future__ import annotations

from collections.abc import Callable


class Budget:
    """``burst`` tokens, refilled at ``burst`` per ``period`` of ``clock()``."""

    __slots__ = ("burst", "period", "tokens", "_clock", "_last")

    def __init__(self, burst: int, period: float, clock: Callable[[], float]) -> None:
        self.burst = burst
        self.period = period
        self.tokens = float(burst)
        self._clock = clock
        self._last = clock()

    def spend(self) -> bool:
        """Take one token; False when the budget is exhausted."""
        now = self._clock()
        elapsed = now - self._last
        self._last = now
        if elapsed > 0:
            self.tokens = min(float(self.burst), self.tokens + elapsed * self.burst / self.period)
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True

    def refund(self) -> None:
        """Give one token back (capped at ``burst``)."""
        if self.tokens < self.burst:
            self.tokens = min(float(self.burst), self.tokens + 1.0)
