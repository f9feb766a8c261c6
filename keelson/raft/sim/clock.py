"""The virtual clock and the agenda of future events.

Time is an integer count of virtual microseconds-ish units (a node ticks about every
``TICK`` units); nothing reads a wall clock. Events scheduled for the same instant run in
the order they were scheduled (a sequence number breaks ties), so the agenda is a total
order and a run is a pure function of its seed.
"""

from __future__ import annotations

import enum
import heapq
from dataclasses import dataclass

from keelson.raft.types import Message

TICK = 100
"""Nominal virtual time between two ticks of one node."""


class EventKind(enum.IntEnum):
    TICK = 0  # node ticks (arg: incarnation)
    DELIVER = 1  # msg reaches msg.to (arg: sender incarnation)
    SNAP_SENT = 2  # transport tells node its snapshot msg reached msg.to (arg: incarnation)
    SNAP_FAILED = 3  # transport tells node its snapshot msg was lost (arg: incarnation)
    UNREACHABLE = 10  # transport tells node that msg.to could not be reached (arg: inc.)
    CLIENT = 4  # the client issues its next request
    FAULT = 5  # the fault schedule acts
    HEAL = 6  # a partition ends (arg: partition generation)
    RESTART = 7  # node comes back from a crash
    FINAL = 8  # faults stop: heal everything and check progress
    DEADLINE = 9  # the progress bound has passed


@dataclass(frozen=True, slots=True)
class Event:
    kind: EventKind
    node: int = 0
    arg: int = 0
    msg: Message | None = None


class Agenda:
    """A min-heap of (time, seq, event) with the current virtual time."""

    def __init__(self) -> None:
        self.now = 0
        self._seq = 0
        self._heap: list[tuple[int, int, Event]] = []

    def at(self, when: int, event: Event) -> None:
        if when < self.now:
            raise ValueError(f"cannot schedule in the past ({when} < {self.now})")
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, event))

    def after(self, delay: int, event: Event) -> None:
        self.at(self.now + delay, event)

    def pop(self) -> Event | None:
        if not self._heap:
            return None
        when, _, event = heapq.heappop(self._heap)
        self.now = when
        return event

    def __len__(self) -> int:
        return len(self._heap)
