"""Back-off for failed authentications, per user name and per peer address (beyond etcd).

Theory of operation. etcd checks any number of passwords at line rate. keelson keeps, for
each user name and each client address, the number of consecutive failed authentications;
after ``free_failures`` of them, every further attempt on that user or from that address must
wait ``base_delay * 2 ** (failures - free_failures)`` seconds (at most ``max_delay``) after
the previous one. A success resets the user's and the address's counts.

The server calls :meth:`AuthBackoff.admit` before checking a password and sleeps for the
delay it returns (or refuses at once when it is ``None``); ``admit`` *reserves* the slot, so
concurrent attempts for the same user or address are spread out one delay apart instead of
all running when a shared deadline passes. It then reports the outcome with
:meth:`failure` or :meth:`success`.

Invariants: at most ``max_entries`` counters are kept (least recently used dropped first),
and a counter untouched for ``forget_after`` seconds counts as zero, so memory is bounded
whatever names and addresses clients send. Time comes from the ``clock`` given (monotonic
seconds), so tests drive it. Thread-safe.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

Clock = Callable[[], float]


class _Counter:
    __slots__ = ("failures", "not_before", "touched")

    def __init__(self, now: float) -> None:
        self.failures = 0
        self.not_before = now  # earliest start of the next attempt
        self.touched = now


class AuthBackoff:
    """Failed-authentication back-off; see the module docstring."""

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        free_failures: int = 3,
        base_delay: float = 0.5,
        max_delay: float = 30.0,
        max_wait: float = 60.0,
        max_entries: int = 10_000,
        forget_after: float = 900.0,
    ) -> None:
        if free_failures < 0 or base_delay <= 0 or max_delay < base_delay:
            raise ValueError("need free_failures >= 0 and 0 < base_delay <= max_delay")
        if max_entries <= 0 or forget_after <= 0 or max_wait < 0:
            raise ValueError("max_entries, forget_after must be positive, max_wait >= 0")
        self._clock: Clock = clock if clock is not None else time.monotonic
        self.free_failures = free_failures
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.max_wait = max_wait
        self.max_entries = max_entries
        self.forget_after = forget_after
        self._lock = threading.Lock()
        self._counters: OrderedDict[tuple[str, str], _Counter] = OrderedDict()

    def delay_after(self, failures: int) -> float:
        """The spacing imposed after ``failures`` consecutive failures."""
        excess = failures - self.free_failures
        if excess < 0:
            return 0.0
        return min(self.max_delay, self.base_delay * (2.0 ** min(excess, 64)))

    def _get(self, key: tuple[str, str], now: float, create: bool) -> _Counter | None:
        counter = self._counters.get(key)
        if counter is not None and now - counter.touched > self.forget_after:
            del self._counters[key]
            counter = None
        if counter is None:
            if not create:
                return None
            counter = _Counter(now)
            self._counters[key] = counter
            while len(self._counters) > self.max_entries:
                self._counters.popitem(last=False)
        else:
            self._counters.move_to_end(key)
        counter.touched = now
        return counter

    @staticmethod
    def _keys(user: str, peer: str | None) -> list[tuple[str, str]]:
        keys = [("user", user)]
        if peer:
            keys.append(("peer", peer))
        return keys

    def admit(self, user: str, peer: str | None) -> float | None:
        """Seconds to wait before checking this attempt's password (0.0: at once), with the
        slot reserved; None when the wait would exceed ``max_wait`` (refuse the attempt
        as failed without checking, and without reserving anything)."""
        now = self._clock()
        with self._lock:
            counters = [
                c for k in self._keys(user, peer) if (c := self._get(k, now, False)) is not None
            ]
            start = max([now, *(c.not_before for c in counters)])
            wait = start - now
            if wait > self.max_wait:
                return None
            for c in counters:
                spacing = self.delay_after(c.failures)
                if spacing > 0:
                    c.not_before = start + spacing
            return wait

    def failure(self, user: str, peer: str | None) -> None:
        """Count a failed authentication for ``user`` and ``peer``."""
        now = self._clock()
        with self._lock:
            for key in self._keys(user, peer):
                c = self._get(key, now, True)
                assert c is not None
                c.failures += 1
                c.not_before = max(c.not_before, now + self.delay_after(c.failures))

    def success(self, user: str, peer: str | None) -> None:
        """A successful authentication: forget the user's and the peer's failures."""
        with self._lock:
            for key in self._keys(user, peer):
                self._counters.pop(key, None)

    def failures(self, user: str | None = None, peer: str | None = None) -> int:
        """Consecutive failures currently counted for ``user`` (or ``peer``)."""
        key = ("user", user) if user is not None else ("peer", peer or "")
        with self._lock:
            c = self._get(key, self._clock(), False)
            return 0 if c is None else c.failures

    def __len__(self) -> int:
        with self._lock:
            return len(self._counters)
