"""The raft log: stable entries in ``Storage`` followed by the ``Unstable`` tail.

``committed`` is the highest index known to be on a quorum; ``applied`` the highest the
application has applied (applied <= committed always). ``maybe_append`` implements the
follower side of AppendEntries: check the (index, term) of the previous entry, find the
first conflicting entry, truncate from there and append.
"""

from __future__ import annotations

from keelson.raft.config import NO_LIMIT
from keelson.raft.invariant import invariant
from keelson.raft.log_unstable import Unstable
from keelson.raft.storage import Storage, limit_size
from keelson.raft.types import CompactedError, Entry, Snapshot, UnavailableError


class RaftLog:
    def __init__(self, storage: Storage, max_next_ents_size: int = NO_LIMIT) -> None:
        self.storage = storage
        first = storage.first_index()
        last = storage.last_index()
        self.unstable = Unstable(last + 1)
        self.committed = first - 1
        self.applied = first - 1
        self.max_next_ents_size = max_next_ents_size

    def __repr__(self) -> str:
        return (
            f"committed={self.committed} applied={self.applied} "
            f"unstable.offset={self.unstable.offset} len={len(self.unstable.entries)}"
        )

    # ---- indexes and terms
    # first_index / last_index / term run several times per message: they read the unstable
    # tail's fields directly (the same rules as Unstable.maybe_first_index / maybe_last_index
    # / maybe_term) instead of going through those helpers.
    def first_index(self) -> int:
        snap = self.unstable.snapshot
        if snap is not None:
            return snap.metadata.index + 1
        return self.storage.first_index()

    def last_index(self) -> int:
        u = self.unstable
        if u.entries:
            return u.offset + len(u.entries) - 1
        if u.snapshot is not None:
            return u.snapshot.metadata.index
        return self.storage.last_index()

    def term(self, i: int) -> int:
        """Term of entry i; raises CompactedError / UnavailableError."""
        u = self.unstable
        k = i - u.offset
        if 0 <= k < len(u.entries):
            # An unstable entry: the log is contiguous (snapshot or stable entries, then the
            # unstable tail), so first_index - 1 <= i <= last_index holds.
            return u.entries[k].term
        if i < self.first_index() - 1:
            raise CompactedError(f"index {i} compacted")
        if i > self.last_index():
            raise UnavailableError(f"index {i} unavailable")
        # Not an unstable entry, so (as Unstable.maybe_term) only a pending snapshot's own
        # index is answered here; everything else comes from storage.
        snap = u.snapshot
        if snap is not None and i < u.offset and snap.metadata.index == i:
            return snap.metadata.term
        return self.storage.term(i)

    def zero_term_on_err(self, i: int) -> int:
        try:
            return self.term(i)
        except (CompactedError, UnavailableError):
            return 0

    def last_term(self) -> int:
        return self.term(self.last_index())

    def match_term(self, i: int, t: int) -> bool:
        if i > self.last_index():
            # term() would raise UnavailableError: the common case of a follower checking
            # entries it is about to append, answered without raising and catching.
            return False
        try:
            return self.term(i) == t
        except (CompactedError, UnavailableError):
            return False

    def is_up_to_date(self, lasti: int, term: int) -> bool:
        lt = self.last_term()
        return term > lt or (term == lt and lasti >= self.last_index())

    # ---- appending
    def maybe_append(
        self, index: int, log_term: int, committed: int, ents: tuple[Entry, ...]
    ) -> int | None:
        """Returns the new last index, or None if (index, log_term) does not match."""
        if not self.match_term(index, log_term):
            return None
        lastnewi = index + len(ents)
        ci = self.find_conflict(ents)
        if ci:
            invariant(
                ci > self.committed, "entry %d conflicts with committed %d", ci, self.committed
            )
            self.append(list(ents[ci - index - 1 :]))
        self.commit_to(min(committed, lastnewi))
        return lastnewi

    def append(self, ents: list[Entry]) -> int:
        if not ents:
            return self.last_index()
        after = ents[0].index - 1
        invariant(after >= self.committed, "after %d is out of range [%d]", after, self.committed)
        self.unstable.truncate_and_append(ents)
        return self.last_index()

    def find_conflict(self, ents: tuple[Entry, ...]) -> int:
        for e in ents:
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest (index, term) at or below ``index`` with term <= ``term``."""
        while index > 0:
            try:
                t = self.term(index)
            except (CompactedError, UnavailableError):
                return index, 0
            if t <= term:
                return index, t
            index -= 1
        return 0, 0

    # ---- commit / apply
    def commit_to(self, tocommit: int) -> None:
        if self.committed < tocommit:
            last = self.last_index()
            invariant(tocommit <= last, "tocommit %d out of range (last %d)", tocommit, last)
            self.committed = tocommit

    def maybe_commit(self, max_index: int, term: int) -> bool:
        if max_index > self.committed and self.zero_term_on_err(max_index) == term:
            self.commit_to(max_index)
            return True
        return False

    def applied_to(self, i: int) -> None:
        if i == 0:
            return
        invariant(
            self.applied <= i <= self.committed,
            "applied(%d) out of range [prev %d, committed %d]",
            i,
            self.applied,
            self.committed,
        )
        self.applied = i

    def stable_to(self, i: int, t: int) -> None:
        self.unstable.stable_to(i, t)

    def stable_snap_to(self, i: int) -> None:
        self.unstable.stable_snap_to(i)

    def has_next_committed_ents(self) -> bool:
        if self.committed <= self.applied or self.unstable.snapshot is not None:
            return False  # the first test answers most calls without touching storage
        return self.committed > self.first_index() - 1

    def next_committed_ents(self) -> list[Entry]:
        if self.committed <= self.applied or self.unstable.snapshot is not None:
            return []
        off = max(self.applied + 1, self.first_index())
        # only entries that are already stable or handed out in this very Ready
        hi = self.committed + 1
        if hi > off:
            return self.slice(off, hi, self.max_next_ents_size)
        return []

    # ---- reading
    def entries(self, i: int, max_size: int) -> list[Entry]:
        last = self.last_index()
        if i > last:
            return []
        return self.slice(i, last + 1, max_size)

    def all_entries(self) -> list[Entry]:
        return self.entries(self.first_index(), NO_LIMIT)

    def slice(self, lo: int, hi: int, max_size: int) -> list[Entry]:
        if lo < self.first_index():
            raise CompactedError(f"slice lo {lo} compacted")
        last = self.last_index()
        invariant(hi <= last + 1, "slice hi %d beyond last %d", hi, last)
        if lo == hi:
            return []
        ents: list[Entry] = []
        uoff = self.unstable.offset
        if lo < uoff:
            stored = self.storage.entries(lo, min(hi, uoff), max_size)
            if len(stored) < min(hi, uoff) - lo:
                return stored  # size limit hit
            ents = stored
        if hi > uoff:
            tail = self.unstable.slice(max(lo, uoff), hi)
            ents = ents + tail if ents else tail
        return limit_size(ents, max_size)

    def snapshot(self) -> Snapshot:
        if self.unstable.snapshot is not None:
            return self.unstable.snapshot
        return self.storage.snapshot()

    def restore(self, snap: Snapshot) -> None:
        self.committed = snap.metadata.index
        self.unstable.restore(snap)
