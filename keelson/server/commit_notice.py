"""A leader's commit notices, held briefly so the next append carries them.

When a write commits, raft tells every follower at once with an append that holds no entries,
only the new commit index; the follower wakes, handles a Ready and answers. Under a steady
stream of writes the next append, with entries, follows within a millisecond or two and
carries the same commit index, so the notice is a whole wake-up per follower per write spent
on news that is about to arrive anyway. On a 2-core machine those wake-ups compete for the CPU
with the leader answering its client (3 members, one client: ~200 µs of follower CPU per put).

``CommitNotices`` sits between the leader's raft loop and the transport. It holds an
entry-less append for up to ``hold_s`` seconds, and drops it when another message to the same
follower in the same term carries at least its commit index (an append with entries, a
heartbeat). It holds only while writes are frequent: when the last two proposals came more
than twice the hold apart, notices go out at once, so a lone write (a watch on a follower, a
follower's own serializable read after it) sees no added delay. It never holds a notice a
follower is waiting for: when a follower forwarded a proposal, every message whose commit
reaches that proposal's entries goes out at once, since the follower answers its client only
once it has applied them.

Safety does not depend on any of this: raft tolerates lost and late messages, a notice is only
ever delayed (never sent early: the held message was already cleared to go) or dropped for a
message that says as much. A follower's linearizable read is unaffected: the leader confirms
it with heartbeats, which carry the commit index and are never held.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from keelson.raft import Message, MessageType

HOLD_S = 0.002
"""How long an entry-less append may wait for an append with entries to carry its commit."""

BUSY_GAP_FACTOR = 2
"""Notices are held only while proposals come at most this many hold times apart."""

_CARRIERS = (MessageType.APP, MessageType.HEARTBEAT)


class CommitNotices:
    """Holds a leader's entry-less appends (see the module docstring)."""

    def __init__(
        self,
        send: Callable[[list[Message]], None],
        call_later: Callable[[float, Callable[[], None]], asyncio.TimerHandle],
        *,
        hold_s: float = HOLD_S,
    ) -> None:
        self._send = send
        self._call_later = call_later
        self._hold_s = hold_s
        self._busy_gap_s = hold_s * BUSY_GAP_FACTOR
        self._held: dict[int, Message] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._last_proposal = float("-inf")
        self._gap = float("inf")
        self._waiting: dict[int, tuple[int, int]] = {}
        """Follower -> (lowest, highest) index of its forwarded proposals it has not yet
        been told are committed."""

    @property
    def held(self) -> int:
        """How many notices are being held."""
        return len(self._held)

    def proposed(self, now: float, first: int, last: int, forwarded_by: int = 0) -> None:
        """Entries ``first..last`` were appended by this leader at ``now`` (monotonic
        seconds) for a proposal of its own or one ``forwarded_by`` a follower."""
        self._gap = now - self._last_proposal
        self._last_proposal = now
        if forwarded_by and last >= first:
            low, _ = self._waiting.get(forwarded_by, (0, 0))
            self._waiting[forwarded_by] = (low or first, last)

    def send(self, msgs: Iterable[Message], leading: bool) -> None:
        """Send ``msgs`` now, except the entry-less appends this leader may hold."""
        if not leading:
            self.flush()
            self._waiting.clear()
            out = list(msgs)
            if out:
                self._send(out)
            return
        hold = self._gap <= self._busy_gap_s
        out = []
        for m in msgs:
            if m.type in _CARRIERS:
                if self._tells_waiting(m):
                    hold_this = False
                else:
                    hold_this = hold and m.type == MessageType.APP and not m.entries
                held = self._held.get(m.to)
                if hold_this:
                    self._held[m.to] = m
                    if self._timer is None:
                        self._timer = self._call_later(self._hold_s, self.flush)
                    continue
                if held is not None and held.term == m.term and m.commit >= held.commit:
                    del self._held[m.to]
            out.append(m)
        if out:
            self._send(out)

    def flush(self) -> None:
        """Send every held notice now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._held:
            held = list(self._held.values())
            self._held.clear()
            self._send(held)

    def drop(self) -> None:
        """Forget every held notice (the member stops)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._held.clear()
        self._waiting.clear()

    def _tells_waiting(self, m: Message) -> bool:
        """Whether ``m`` tells its follower of a commit that covers one of its own
        forwarded proposals (and note that it has been told)."""
        waiting = self._waiting.get(m.to)
        if waiting is None or m.commit < waiting[0]:
            return False
        if m.commit >= waiting[1]:
            del self._waiting[m.to]
        else:
            self._waiting[m.to] = (m.commit + 1, waiting[1])
        return True
