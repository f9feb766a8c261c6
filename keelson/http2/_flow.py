"""Flow-control windows (RFC 9113 section 5.2 and 6.9), one object per direction.

``InboundWindow`` — what the peer may still send us on a stream or the connection. DATA
consumes it (padding included); the application gives bytes back with ``acknowledge`` as it
consumes them, and the window is reopened with a WINDOW_UPDATE once at least half of the
initial window is owed, so a fast consumer costs one WINDOW_UPDATE per half window rather
than one per DATA frame.

``OutboundWindow`` — what we may still send. WINDOW_UPDATE grows it; a change of the peer's
SETTINGS_INITIAL_WINDOW_SIZE shifts it by the difference (and may make it negative).

Invariants (checked by ``check``, which ``python -O`` does not strip):
* inbound: ``0 <= outstanding``, ``0 <= unannounced``; the window the peer sees is
  ``available``, and ``available + outstanding + unannounced`` never exceeds 2**31-1.
* outbound: ``size <= 2**31-1`` (exceeding it is the peer's FLOW_CONTROL_ERROR).
"""

from __future__ import annotations

from keelson.http2.errors import LocalProtocolError

MAX_WINDOW = (1 << 31) - 1


def check(condition: bool, message: str) -> None:
    """Assert an invariant in a way ``python -O`` keeps."""
    if not condition:
        raise AssertionError(message)


class InboundWindow:
    """The receive window of one stream or of the connection."""

    __slots__ = ("available", "outstanding", "threshold", "unannounced")

    def __init__(self, initial: int) -> None:
        self.available = initial  # what the peer may send before our next WINDOW_UPDATE
        self.outstanding = 0  # received, not yet acknowledged by the application
        self.unannounced = 0  # acknowledged, not yet announced with a WINDOW_UPDATE
        self.threshold = max(1, initial // 2)

    def consume(self, n: int) -> bool:
        """Account ``n`` received flow-controlled bytes; False if they exceed the window."""
        if n > self.available:
            return False
        self.available -= n
        self.outstanding += n
        return True

    def acknowledge(self, n: int) -> int:
        """The application consumed ``n`` bytes; return the WINDOW_UPDATE increment to send now.

        Returns 0 while less than half the initial window is owed (the update is batched).
        Raises ``LocalProtocolError`` when acknowledging more than was received.
        """
        if n < 0 or n > self.outstanding:
            raise LocalProtocolError(
                f"acknowledged {n} bytes but only {self.outstanding} are unacknowledged"
            )
        self.outstanding -= n
        self.unannounced += n
        if self.unannounced < self.threshold:
            return 0
        increment = self.unannounced
        self.unannounced = 0
        self.available += increment
        check(self.available <= MAX_WINDOW, "inbound window above 2^31-1")
        return increment

    def grow(self, increment: int) -> None:
        """Open the window by ``increment`` we are announcing right now (e.g. at start-up)."""
        self.available += increment
        self.threshold = max(self.threshold, (self.available + self.outstanding) // 2)
        check(self.available <= MAX_WINDOW, "inbound window above 2^31-1")


class OutboundWindow:
    """The send window of one stream or of the connection."""

    __slots__ = ("size",)

    def __init__(self, initial: int) -> None:
        self.size = initial

    def increase(self, increment: int) -> bool:
        """Apply a WINDOW_UPDATE; False (window unchanged) if it would pass 2**31-1."""
        if self.size + increment > MAX_WINDOW:
            return False
        self.size += increment
        return True

    def shift(self, delta: int) -> bool:
        """Apply a change of SETTINGS_INITIAL_WINDOW_SIZE; False if it would pass 2**31-1."""
        return self.increase(delta)
