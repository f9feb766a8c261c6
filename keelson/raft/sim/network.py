"""The simulated network: links that lose, duplicate, delay and reorder messages, and
partitions that cut links one way or both.

A message handed to ``send`` is either dropped at once (its link is cut, or it is lost)
or scheduled for delivery after a random delay drawn from the current latency range;
independent delays reorder messages on one link, and with probability ``dup`` a second
copy travels with its own delay. A cut link is checked again on delivery, so a partition
that forms while a message is in flight drops it too. All randomness comes from the run's
``random.Random``; cut links are kept as a set of (from, to) pairs but only ever tested for
membership, never iterated unsorted.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from keelson.raft.sim.clock import Agenda, Event, EventKind
from keelson.raft.types import Message


@dataclass(frozen=True, slots=True)
class LinkQuality:
    """How the network behaves between partitions."""

    loss: float = 0.0
    dup: float = 0.0
    min_delay: int = 5
    max_delay: int = 30

    def describe(self) -> str:
        return f"loss={self.loss:.2f} dup={self.dup:.2f} delay={self.min_delay}..{self.max_delay}"


RELIABLE = LinkQuality()

PROFILES = (
    RELIABLE,
    LinkQuality(loss=0.05, dup=0.02, min_delay=5, max_delay=60),
    LinkQuality(loss=0.2, dup=0.05, min_delay=5, max_delay=80),
    LinkQuality(loss=0.02, dup=0.1, min_delay=1, max_delay=250),
    LinkQuality(loss=0.0, dup=0.0, min_delay=50, max_delay=400),
)
"""Qualities the fault schedule switches between (delays in virtual time; a tick is 100)."""


class Network:
    def __init__(self, rng: random.Random, agenda: Agenda) -> None:
        self._rng = rng
        self._agenda = agenda
        self._cut: set[tuple[int, int]] = set()
        self.quality = RELIABLE
        self.partition = ""  # a description of the current partition, "" when whole
        self.generation = 0  # bumped by every partition change, to match HEAL events

    # ------------------------------------------------------------------ links
    def connected(self, frm: int, to: int) -> bool:
        return (frm, to) not in self._cut

    def cut(self, links: list[tuple[int, int]], description: str) -> int:
        """Replace the current partition by one cutting ``links``; returns its generation."""
        self._cut = set(links)
        self.partition = description
        self.generation += 1
        return self.generation

    def heal(self) -> None:
        self._cut = set()
        self.partition = ""
        self.generation += 1

    # ------------------------------------------------------------------ traffic
    def send(self, msg: Message, sender_incarnation: int) -> str:
        """Put ``msg`` on the wire. Returns "" if it was scheduled, else why it was dropped
        ("cut" or "lost")."""
        if (msg.frm, msg.to) in self._cut:
            return "cut"
        q = self.quality
        rng = self._rng
        if q.loss and rng.random() < q.loss:
            return "lost"
        ev = Event(EventKind.DELIVER, msg.to, sender_incarnation, msg)
        self._agenda.after(rng.randint(q.min_delay, q.max_delay), ev)
        if q.dup and rng.random() < q.dup:
            self._agenda.after(rng.randint(q.min_delay, q.max_delay), ev)
        return ""
