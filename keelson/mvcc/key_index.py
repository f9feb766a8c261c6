"""The in-memory index of the key space: for every key, its generations of revisions.

Theory of operation. This is etcd's ``treeIndex``/``keyIndex``. A key's history is a list
of *generations*: a generation starts with the put that (re)creates the key and ends with the
tombstone that deletes it; the last generation is empty while the key is deleted. Given a
revision, the index answers which revision of a key was current then (or that the key did
not exist), without touching the backend. Keys are kept in a sorted list (``bisect``) next to
a dict, so a range is a slice of the list. The index is rebuilt from the ``key`` bucket on
open (``restore_put`` / ``restore_tombstone`` in revision order) and compacted in memory when
a compaction is scheduled.

Invariants (checked by ``KeyIndex.check``): revisions of a key strictly increase across its
generations; every generation but the last ends with a tombstone; only the last may be empty.
Not thread-safe: the store calls it from its one writer thread.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

from keelson.mvcc.revision import Revision

_NO_REVISION = Revision(0, 0)
"""Shared by every new Generation and KeyIndex (a Revision is immutable): a put of a new
key would otherwise allocate two of them."""


class Generation:
    """One life of a key: revisions from its creation to (excluding) its deletion."""

    __slots__ = ("created", "ver", "revs")

    def __init__(self) -> None:
        self.created = _NO_REVISION
        self.ver = 0  # version of the newest revision in ``revs``
        self.revs: list[Revision] = []

    def __repr__(self) -> str:
        return f"Generation(created={self.created}, ver={self.ver}, revs={self.revs})"


class KeyIndex:
    """The generations of one key (etcd's keyIndex)."""

    __slots__ = ("key", "modified", "generations", "lease")

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.modified = _NO_REVISION
        self.generations: list[Generation] = [Generation()]
        self.lease = 0  # lease of the newest live revision (0 when deleted or none)

    def is_empty(self) -> bool:
        return len(self.generations) == 1 and not self.generations[0].revs

    def put(self, rev: Revision, lease: int) -> None:
        if rev <= self.modified:
            raise AssertionError(f"key index: put {rev} not after {self.modified}")
        g = self.generations[-1]
        if not g.revs:
            g.created = rev
        g.revs.append(rev)
        g.ver += 1
        self.modified = rev
        self.lease = lease

    def restore_put(self, rev: Revision, created: int, version: int, lease: int) -> None:
        """Add a revision read back from the bucket, trusting its stored version."""
        if rev <= self.modified:
            raise AssertionError(f"key index: restore {rev} not after {self.modified}")
        g = self.generations[-1]
        if not g.revs:
            g.created = Revision(created, 0)
        g.revs.append(rev)
        g.ver = version
        self.modified = rev
        self.lease = lease

    def restore_tombstone(self, rev: Revision) -> None:
        """Add a tombstone read back from the bucket. When the key is not live, it is a
        tombstone kept by compaction (etcd#19188): restore it as a generation of its own."""
        if rev <= self.modified:
            raise AssertionError(f"key index: restore {rev} not after {self.modified}")
        g = self.generations[-1]
        if not g.revs:
            g.created = rev
        g.revs.append(rev)
        self.modified = rev
        self.lease = 0
        self.generations.append(Generation())

    def tombstone(self, rev: Revision) -> bool:
        """End the current generation at ``rev``; False if the key is not live."""
        if not self.generations[-1].revs:
            return False
        self.put(rev, 0)
        self.generations.append(Generation())
        return True

    def _find_generation(self, at: int) -> Generation | None:
        last = len(self.generations) - 1
        for i in range(last, -1, -1):
            g = self.generations[i]
            if not g.revs:
                continue
            if i != last and g.revs[-1].main <= at:
                return None  # deleted at or before ``at``
            if g.revs[0].main <= at:
                return g
        return None

    def get(self, at: int) -> tuple[Revision, Revision, int] | None:
        """(modified, created, version) of the key as of main revision ``at``, or None."""
        g = self._find_generation(at)
        if g is None:
            return None
        revs = g.revs
        n = bisect.bisect_right(revs, Revision(at, 1 << 64)) - 1
        if n < 0:
            return None
        return revs[n], g.created, g.ver - (len(revs) - n - 1)

    def _compact_point(self, at: int, available: set[Revision]) -> tuple[int, int]:
        """etcd's doCompact: find the generation holding ``at`` (or created after it, or
        deleted exactly at ``at``) and add its newest revision at or before ``at`` to
        ``available``. A tombstone at ``at`` is kept (etcd#18274), so a watch from the
        compact revision still sees that deletion."""
        gi = 0
        while gi < len(self.generations) - 1:
            if self.generations[gi].revs[-1].main >= at:
                break
            gi += 1
        revs = self.generations[gi].revs
        ri = bisect.bisect_right(revs, Revision(at, 1 << 64)) - 1
        if ri >= 0:
            available.add(revs[ri])
        return gi, ri

    def compact(self, at: int, available: set[Revision]) -> None:
        """Drop history before ``at``, keeping the revision current at ``at`` (a tombstone
        only when it is exactly at ``at``); adds the kept revision to ``available``."""
        gi, ri = self._compact_point(at, available)
        g = self.generations[gi]
        if g.revs and ri != -1:
            del g.revs[:ri]
        del self.generations[:gi]

    def keep(self, at: int, available: set[Revision]) -> None:
        """Add to ``available`` what ``compact(at)`` would keep, changing nothing."""
        if self.is_empty():
            return
        self._compact_point(at, available)

    def check(self) -> None:
        """Raise AssertionError if the invariants above do not hold."""
        prev = Revision(0, 0)
        for i, g in enumerate(self.generations):
            if not g.revs and i != len(self.generations) - 1:
                raise AssertionError(f"{self.key!r}: empty generation {i} is not the last")
            for r in g.revs:
                if r <= prev:
                    raise AssertionError(f"{self.key!r}: revisions out of order at {r}")
                prev = r


class TreeIndex:
    """All keys' KeyIndex, with the keys kept in sorted order.

    A new key (a put, or a restore fed in revision order, i.e. keys in any order) is
    appended to the key list, which is sorted lazily before the next use of the order
    (``_sorted_keys``: a range over several keys, a compaction). An O(n) list insert per new
    key made a restart of 100,000 keys quadratic and cost ~23% of a put of a new key at
    that size; the sort instead merges the already sorted run with the new tail (Timsort),
    once per range that follows new keys. Single-key lookups never need the order.
    """

    __slots__ = ("_keys", "_index", "_unsorted", "_live")

    def __init__(self) -> None:
        self._keys: list[bytes] = []
        self._index: dict[bytes, KeyIndex] = {}
        self._unsorted = False
        self._live = 0  # keys whose last generation is not empty, kept by every mutation

    @property
    def live_count(self) -> int:
        """How many keys exist now (etcd's keys gauge), without a walk over the index."""
        return self._live

    def _sorted_keys(self) -> list[bytes]:
        if self._unsorted:
            self._keys.sort()
            self._unsorted = False
        return self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def key_index(self, key: bytes) -> KeyIndex | None:
        return self._index.get(key)

    def _get_or_create(self, key: bytes) -> KeyIndex:
        ki = self._index.get(key)
        if ki is None:
            ki = KeyIndex(key)
            self._index[key] = ki
            keys = self._keys
            if keys and not self._unsorted and keys[-1] >= key:
                self._unsorted = True
            keys.append(key)
        return ki

    def put(self, key: bytes, rev: Revision, lease: int) -> None:
        ki = self._index.get(key)
        if ki is None:
            ki = self._get_or_create(key)
        if not ki.generations[-1].revs:
            self._live += 1
        ki.put(rev, lease)

    def restore_put(
        self, key: bytes, rev: Revision, created: int, version: int, lease: int
    ) -> None:
        ki = self._get_or_create(key)
        if not ki.generations[-1].revs:
            self._live += 1
        ki.restore_put(rev, created, version, lease)

    def restore_tombstone(self, key: bytes, rev: Revision) -> None:
        ki = self._get_or_create(key)
        if ki.generations[-1].revs:
            self._live -= 1
        ki.restore_tombstone(rev)

    def tombstone(self, key: bytes, rev: Revision) -> bool:
        ki = self._index.get(key)
        if ki is None or not ki.tombstone(rev):
            return False
        self._live -= 1
        return True

    def get(self, key: bytes, at: int) -> tuple[Revision, Revision, int] | None:
        ki = self._index.get(key)
        return None if ki is None else ki.get(at)

    def current(self, key: bytes) -> tuple[int, int, int] | None:
        """(create main revision, version, lease) of ``key`` if it is live now, else None.

        What ``get(key, at)`` says for any ``at`` at or after the newest revision in the
        index (a write's own revision), read off the last generation in O(1) instead of
        searching the history: the write path asks this once per put."""
        ki = self._index.get(key)
        if ki is None:
            return None
        g = ki.generations[-1]
        if not g.revs:
            return None
        return g.created.main, g.ver, ki.lease

    def keys_in(self, key: bytes, end: bytes | None) -> Iterator[KeyIndex]:
        """KeyIndex of every indexed key in [key, end) (end None: single key; b"": no bound),
        in key order."""
        if end is None:
            ki = self._index.get(key)
            if ki is not None:
                yield ki
            return
        keys = self._sorted_keys()
        lo = bisect.bisect_left(keys, key)
        hi = len(keys) if end == b"" else bisect.bisect_left(keys, end, lo)
        index = self._index
        for i in range(lo, hi):
            yield index[keys[i]]

    def revisions(
        self, key: bytes, end: bytes | None, at: int
    ) -> list[tuple[bytes, Revision]]:
        """(key, revision) of every key live at ``at`` in the range, in key order."""
        out: list[tuple[bytes, Revision]] = []
        for ki in self.keys_in(key, end):
            got = ki.get(at)
            if got is not None:
                out.append((ki.key, got[0]))
        return out

    def count(self, key: bytes, end: bytes | None, at: int) -> int:
        n = 0
        for ki in self.keys_in(key, end):
            if ki.get(at) is not None:
                n += 1
        return n

    def compact(self, at: int) -> set[Revision]:
        """Compact every key at ``at``; forget keys with no history left. Returns the
        revisions at or below ``at`` that must stay in the bucket."""
        available: set[Revision] = set()
        emptied = False
        for ki in self._index.values():
            ki.compact(at, available)
            if ki.is_empty():
                emptied = True
        if emptied:
            self._keys = [k for k in self._sorted_keys() if not self._index[k].is_empty()]
            self._index = {k: self._index[k] for k in self._keys}
        return available

    def keep(self, at: int) -> set[Revision]:
        available: set[Revision] = set()
        for ki in self._index.values():
            ki.keep(at, available)
        return available

    def check(self) -> None:
        if self._sorted_keys() != sorted(self._index):
            raise AssertionError("tree index: key list out of sync with the index")
        live = sum(1 for ki in self._index.values() if ki.generations[-1].revs)
        if live != self._live:
            raise AssertionError(f"tree index: live count {self._live}, walked {live}")
        for ki in self._index.values():
            ki.check()
