"""The tail of the log not yet persisted: entries (and maybe a snapshot) raft has accepted
but the application has not yet written to stable storage.

``entries[i]`` has index ``offset + i``. A pending snapshot, if any, covers everything up to
``offset - 1``. Once the application reports entries stable (``stable_to``), they are dropped
here and served from ``Storage`` instead.
"""

from __future__ import annotations

from keelson.raft.invariant import invariant
from keelson.raft.types import Entry, Snapshot


class Unstable:
    def __init__(self, offset: int) -> None:
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []
        self.offset = offset

    def maybe_first_index(self) -> int | None:
        if self.snapshot is not None:
            return self.snapshot.metadata.index + 1
        return None

    def maybe_last_index(self) -> int | None:
        if self.entries:
            return self.offset + len(self.entries) - 1
        if self.snapshot is not None:
            return self.snapshot.metadata.index
        return None

    def maybe_term(self, i: int) -> int | None:
        if i < self.offset:
            if self.snapshot is not None and self.snapshot.metadata.index == i:
                return self.snapshot.metadata.term
            return None
        last = self.maybe_last_index()
        if last is None or i > last:
            return None
        return self.entries[i - self.offset].term

    def stable_to(self, i: int, t: int) -> None:
        gt = self.maybe_term(i)
        if gt is None or gt != t or i < self.offset:
            return  # entries were replaced meanwhile; a later Ready will persist them
        self.entries = self.entries[i + 1 - self.offset :]
        self.offset = i + 1

    def stable_snap_to(self, i: int) -> None:
        if self.snapshot is not None and self.snapshot.metadata.index == i:
            self.snapshot = None

    def restore(self, snap: Snapshot) -> None:
        self.offset = snap.metadata.index + 1
        self.entries = []
        self.snapshot = snap

    def truncate_and_append(self, ents: list[Entry]) -> None:
        after = ents[0].index
        if after == self.offset + len(self.entries):
            self.entries.extend(ents)
        elif after <= self.offset:
            self.offset = after
            self.entries = list(ents)
        else:
            self.entries = self.entries[: after - self.offset] + list(ents)

    def slice(self, lo: int, hi: int) -> list[Entry]:
        end = self.offset + len(self.entries)
        invariant(
            self.offset <= lo <= hi <= end,
            "unstable slice [%d,%d) out of [%d,%d)",
            lo,
            hi,
            self.offset,
            end,
        )
        return self.entries[lo - self.offset : hi - self.offset]
