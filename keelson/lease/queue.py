"""A min-heap of (deadline, lease id) with lazy deletion.

Theory of operation. ``LeaseQueue`` maps each lease id to its current deadline (the
authoritative value, a dict) and keeps every deadline ever scheduled in a heap. Updating or
removing an id never touches the heap: stale heap entries are recognised when they reach the
top (their deadline no longer equals the id's current one) and dropped. Popping the ``k`` due
ids therefore costs O(k log n) plus the stale entries skipped, each of which was paid for by
the push that made it stale. When stale entries outnumber live ones by more than 2:1 the heap
is rebuilt, so memory stays O(n).

Ties between equal deadlines are broken by id, so the pop order is deterministic.
"""

from __future__ import annotations

import heapq
import math


class LeaseQueue:
    """Deadlines per lease id; ``pop_due`` returns the ids whose deadline has passed."""

    __slots__ = ("_heap", "_deadline")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int]] = []
        self._deadline: dict[int, float] = {}

    def __len__(self) -> int:
        return len(self._deadline)

    def __contains__(self, lease_id: object) -> bool:
        return lease_id in self._deadline

    def deadline(self, lease_id: int) -> float | None:
        return self._deadline.get(lease_id)

    def push(self, lease_id: int, deadline: float) -> None:
        """Schedule (or reschedule) ``lease_id``; ``math.inf`` means never due."""
        if math.isnan(deadline):
            raise ValueError("deadline must not be NaN")
        self._deadline[lease_id] = deadline
        if deadline != math.inf:
            heapq.heappush(self._heap, (deadline, lease_id))
            self._maybe_compact()

    def remove(self, lease_id: int) -> None:
        self._deadline.pop(lease_id, None)

    def clear(self) -> None:
        self._heap.clear()
        self._deadline.clear()

    def peek(self) -> tuple[float, int] | None:
        """The earliest live (deadline, id), or None."""
        self._drop_stale()
        return self._heap[0] if self._heap else None

    def pop_due(self, now: float, limit: int | None = None) -> list[int]:
        """Remove and return ids whose deadline <= now, earliest first, at most ``limit``."""
        out: list[int] = []
        while self._heap and (limit is None or len(out) < limit):
            self._drop_stale()
            if not self._heap or self._heap[0][0] > now:
                break
            _, lease_id = heapq.heappop(self._heap)
            del self._deadline[lease_id]
            out.append(lease_id)
        return out

    def _drop_stale(self) -> None:
        heap = self._heap
        while heap:
            deadline, lease_id = heap[0]
            if self._deadline.get(lease_id) == deadline:
                return
            heapq.heappop(heap)

    def _maybe_compact(self) -> None:
        if len(self._heap) > 64 and len(self._heap) > 3 * len(self._deadline):
            self._heap = sorted(
                (d, i) for i, d in self._deadline.items() if d != math.inf
            )
