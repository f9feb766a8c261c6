"""The stable storage raft reads from, and an in-memory implementation.

Raft never writes to ``Storage``: the application persists what a Ready hands it and then
makes it visible here. ``MemoryStorage`` keeps the log as a list whose element 0 is a dummy
entry standing for the last compacted (or snapshot) index and term, so ``term(first-1)``
remains answerable after compaction, as the Raft log-matching check needs.

Errors follow etcd: an index below the first kept one raises CompactedError, one past the
last raises UnavailableError, an older snapshot raises SnapshotOutOfDate.
"""

from __future__ import annotations

from typing import Protocol

from keelson.raft.invariant import invariant
from keelson.raft.types import (
    CompactedError,
    ConfState,
    Entry,
    HardState,
    Snapshot,
    SnapshotMetadata,
    SnapshotOutOfDate,
    UnavailableError,
)


class Storage(Protocol):
    def initial_state(self) -> tuple[HardState, ConfState]: ...

    def entries(self, lo: int, hi: int, max_size: int) -> list[Entry]:
        """Entries in [lo, hi), at least one if any, at most max_size bytes otherwise."""
        ...

    def term(self, i: int) -> int: ...

    def first_index(self) -> int: ...

    def last_index(self) -> int: ...

    def snapshot(self) -> Snapshot: ...


def limit_size(ents: list[Entry], max_size: int) -> list[Entry]:
    """The longest prefix of ``ents`` within ``max_size`` bytes, but never empty.

    May return ``ents`` itself (callers pass lists they own)."""
    if len(ents) <= 1:
        return ents
    size = ents[0].size()
    n = 1
    while n < len(ents):
        size += ents[n].size()
        if size > max_size:
            break
        n += 1
    return ents[:n]


class MemoryStorage:
    def __init__(self) -> None:
        self.hard_state = HardState()
        self._snapshot = Snapshot()
        self._ents: list[Entry] = [Entry(0, 0)]

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self.hard_state, self._snapshot.metadata.conf_state

    def set_hard_state(self, hs: HardState) -> None:
        self.hard_state = hs

    def _offset(self) -> int:
        return self._ents[0].index

    def entries(self, lo: int, hi: int, max_size: int) -> list[Entry]:
        off = self._ents[0].index
        if lo <= off:
            raise CompactedError(f"requested index {lo} is compacted (first {off + 1})")
        if hi > off + len(self._ents):
            raise UnavailableError(f"entries hi {hi} is out of bound {self.last_index()}")
        return limit_size(self._ents[lo - off : hi - off], max_size)

    def term(self, i: int) -> int:
        off = self._ents[0].index
        if i < off:
            raise CompactedError(f"requested index {i} is compacted")
        if i - off >= len(self._ents):
            raise UnavailableError(f"requested index {i} is unavailable")
        return self._ents[i - off].term

    def first_index(self) -> int:
        return self._ents[0].index + 1

    def last_index(self) -> int:
        return self._ents[0].index + len(self._ents) - 1

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def apply_snapshot(self, snap: Snapshot) -> None:
        if snap.metadata.index <= self._snapshot.metadata.index:
            raise SnapshotOutOfDate(
                f"snapshot at {snap.metadata.index} is not newer than "
                f"{self._snapshot.metadata.index}"
            )
        self._snapshot = snap
        self._ents = [Entry(snap.metadata.term, snap.metadata.index)]

    def create_snapshot(self, i: int, cs: ConfState | None, data: bytes) -> Snapshot:
        if i <= self._snapshot.metadata.index:
            raise SnapshotOutOfDate(f"snapshot index {i} is not newer than current")
        if i > self.last_index():
            raise UnavailableError(f"snapshot index {i} is out of bound {self.last_index()}")
        off = self._offset()
        meta_cs = cs if cs is not None else self._snapshot.metadata.conf_state
        self._snapshot = Snapshot(
            SnapshotMetadata(i, self._ents[i - off].term, meta_cs), bytes(data)
        )
        return self._snapshot

    def compact(self, i: int) -> None:
        """Discard entries before ``i``; ``i`` itself becomes the dummy entry."""
        off = self._offset()
        if i <= off:
            raise CompactedError(f"compact index {i} is already compacted")
        if i > self.last_index():
            raise UnavailableError(f"compact index {i} is out of bound {self.last_index()}")
        self._ents = self._ents[i - off :]

    def append(self, entries: list[Entry] | tuple[Entry, ...]) -> None:
        if not entries:
            return
        first = self.first_index()
        last = entries[0].index + len(entries) - 1
        if last < first:
            return
        ents = list(entries)
        if first > ents[0].index:
            ents = ents[first - ents[0].index :]
        off = ents[0].index - self._offset()
        invariant(off <= len(self._ents), "missing log entry before %d", ents[0].index)
        # In place: copying the whole list per append made each append O(entries since the
        # last compaction), up to --snapshot-count of them (3.5% of a loaded leader).
        del self._ents[off:]
        self._ents.extend(ents)
