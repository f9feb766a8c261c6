"""Rapid-reset protection: a token bucket of stream cancellations the client may cause.

CVE-2023-44487 ("rapid reset"): a client opens a stream and cancels it at once, over and
over; each costs the server a handler start while the client stays under any concurrency
limit. Every stream the *client* ends abnormally — its RST_STREAM on a live stream, a stream
we refuse (REFUSED_STREAM), a stream we reset for malformed input — spends one token. The
bucket holds ``burst`` tokens and refills ``burst`` tokens per ``period``; an empty bucket
means GOAWAY ENHANCE_YOUR_CALM.

The period is measured on the caller's clock (seconds, via ``clock()``) when one is given,
else in frames received (``period`` then counts frames): the core never reads the time
itself, so both modes are deterministic under test.

Invariant: ``0 <= tokens <= burst``.
"""

from __future__ import annotations

from collections.abc import Callable


class ResetBudget:
    """Tokens for client-caused stream resets, refilled by time or by frames received."""

    __slots__ = ("burst", "period", "tokens", "_clock", "_frames", "_last")

    def __init__(self, burst: int, period: float, clock: Callable[[], float] | None) -> None:
        self.burst = burst
        self.period = period
        self.tokens = float(burst)
        self._clock = clock
        self._frames = 0
        self._last = clock() if clock is not None else 0.0

    def frame_received(self) -> None:
        """Count one received frame (the refill unit when there is no clock)."""
        self._frames += 1

    def spend(self) -> bool:
        """Take a token for one client-caused reset; False when the budget is exhausted."""
        now = self._clock() if self._clock is not None else float(self._frames)
        elapsed = now - self._last
        self._last = now
        if elapsed > 0:
            self.tokens = min(float(self.burst), self.tokens + elapsed * self.burst / self.period)
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True
