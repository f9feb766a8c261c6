"""Read and write transactions over the key space (etcd's storeTxnRead / storeTxnWrite).

Theory of operation. A ``TxnRead`` pairs a backend read transaction with the store's revision
numbers at the moment it was opened: ranges are answered at any revision between the compact
revision and that current revision, by asking the key index which revision of each key was
current and reading those revisions' records from the ``key`` bucket.

A ``TxnWrite`` works inside a backend write transaction the caller owns. All its changes
share one main revision (``current + 1``); each change takes the next sub revision. Its reads
see its own earlier writes (the index and the backend txn are updated at once), at revision
``current + 1`` once it has changed something. ``end()`` makes the new revision current and
hands the changes to the store; a txn that changed nothing leaves the revision alone.

Leases: a ``Lessor`` (any object with ``attach``/``detach``) is told which keys a lease
gains and loses, as etcd's lessor is; mvcc never imports the lease package.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from keelson.backend import ReadTxn, WriteTxn
from keelson.mvcc.errors import CompactedError, FutureRevisionError
from keelson.mvcc.key_index import TreeIndex
from keelson.mvcc.keyvalue import Change, KeyValue, decode_kv, encode_fields
from keelson.mvcc.revision import KEY_BUCKET, Revision, rev_key, rev_to_bytes


class Lessor(Protocol):
    """What mvcc needs from the lease subsystem."""

    def lease_exists(self, lease_id: int) -> bool: ...

    def attach(self, lease_id: int, key: bytes) -> None: ...

    def detach(self, lease_id: int, key: bytes) -> None: ...


@dataclass(frozen=True, slots=True)
class RawRange:
    """What the store itself returns for a range (before sorting/filtering by the API
    semantics in ``apply``): ``count`` is the number of live keys in the range at the
    revision read, ``kvs`` at most ``limit`` of them in key order, ``revision`` the
    current revision of the view."""

    kvs: tuple[KeyValue, ...]
    count: int
    revision: int


class TxnRead:
    """A consistent read view; see the module docstring. Use as a context manager (or call
    ``end``) when it owns its backend transaction."""

    __slots__ = ("_index", "_btx", "_begin_rev", "_compact_rev", "_owns_btx")

    def __init__(
        self,
        index: TreeIndex,
        btx: ReadTxn,
        current_rev: int,
        compact_rev: int,
        owns_btx: bool,
    ) -> None:
        self._index = index
        self._btx = btx
        self._begin_rev = current_rev
        self._compact_rev = compact_rev
        self._owns_btx = owns_btx

    def __enter__(self) -> TxnRead:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.end()

    def end(self) -> None:
        if self._owns_btx:
            self._owns_btx = False
            self._btx.__exit__(None, None, None)

    def rev(self) -> int:
        """The revision this view reads at by default."""
        return self._begin_rev

    def first_rev(self) -> int:
        """The compact revision: reads below it fail."""
        return self._compact_rev

    def check_revision(self, rev: int) -> None:
        """Raise the error a range at ``rev`` (0: current) would raise, if any."""
        if rev > self.rev():
            raise FutureRevisionError()
        if 0 < rev < self._compact_rev:
            raise CompactedError()

    def range_keys(
        self,
        key: bytes,
        end: bytes | None,
        *,
        rev: int = 0,
        limit: int = 0,
        count_only: bool = False,
    ) -> RawRange:
        """Live keys of [key, end) (index convention: None single key, b"" unbounded) at
        ``rev`` (0: current). Raises FutureRevisionError / CompactedError."""
        cur = self.rev()
        if rev > cur:
            raise FutureRevisionError()
        if rev <= 0:
            rev = cur
        if rev < self._compact_rev:
            raise CompactedError()
        if count_only:
            return RawRange((), self._index.count(key, end, rev), cur)
        pairs = self._index.revisions(key, end, rev)
        n = len(pairs) if limit <= 0 else min(limit, len(pairs))
        kvs = []
        get = self._btx.get
        for i in range(n):
            raw = get(KEY_BUCKET, rev_to_bytes(pairs[i][1]))
            if raw is None:
                raise AssertionError(f"mvcc: revision {pairs[i][1]} in index but not in backend")
            kvs.append(decode_kv(raw))
        return RawRange(tuple(kvs), len(pairs), cur)


class TxnWrite(TxnRead):
    """One mvcc write transaction inside the caller's backend write txn; see the module
    docstring. ``end`` (or leaving the ``with`` block normally) publishes it to the store."""

    __slots__ = ("_wtx", "_lessor", "_on_end", "_ended", "changes")

    def __init__(
        self,
        index: TreeIndex,
        btx: WriteTxn,
        current_rev: int,
        compact_rev: int,
        lessor: Lessor | None,
        on_end: Callable[[TxnWrite], None],
    ) -> None:
        # TxnRead's fields set here rather than through super().__init__: one txn per put.
        self._index = index
        self._btx = btx
        self._begin_rev = current_rev
        self._compact_rev = compact_rev
        self._owns_btx = False
        self._wtx = btx
        self._lessor = lessor
        self._on_end = on_end
        self._ended = False
        self.changes: list[Change] = []
        """What this txn wrote, in sub-revision order (``Change``: KeyValue's fields)."""

    def __enter__(self) -> TxnWrite:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.end()

    def rev(self) -> int:
        return self._begin_rev + 1 if self.changes else self._begin_rev

    def begin_rev(self) -> int:
        return self._begin_rev

    @property
    def lessor(self) -> Lessor | None:
        return self._lessor

    def end(self) -> None:
        if self._ended:
            return
        self._ended = True
        self._on_end(self)

    def put(self, key: bytes, value: bytes, lease: int) -> int:
        """Write ``key``; returns the txn's main revision."""
        rev = self._begin_rev + 1
        index = self._index
        changes = self.changes
        # The write's revision is newer than anything indexed, so the key's current state
        # is its last generation (one lookup, no history search).
        live = index.current(key)
        if live is None:
            created, version, old_lease = rev, 1, 0
        else:
            created, version, old_lease = live[0], live[1] + 1, live[2]
        sub = len(changes)
        self._wtx.put(
            KEY_BUCKET, rev_key(rev, sub), encode_fields(key, created, rev, version, value, lease)
        )
        index.put(key, Revision(rev, sub), lease)
        changes.append((key, created, rev, version, value, lease))
        lessor = self._lessor
        if lessor is not None:
            if old_lease != 0:
                lessor.detach(old_lease, key)
            if lease != 0:
                lessor.attach(lease, key)
        return rev

    def delete_range(self, key: bytes, end: bytes | None) -> tuple[int, int]:
        """Delete the live keys of the range; returns (deleted count, revision)."""
        pairs = self._index.revisions(key, end, self.rev())
        for k, _ in pairs:
            self._delete(k)
        if pairs or self.changes:
            return len(pairs), self._begin_rev + 1
        return 0, self._begin_rev

    def _delete(self, key: bytes) -> None:
        idx_rev = Revision(self._begin_rev + 1, len(self.changes))
        ki = self._index.key_index(key)
        old_lease = ki.lease if ki is not None else 0
        self._wtx.put(
            KEY_BUCKET, rev_to_bytes(idx_rev, tombstone=True), encode_fields(key, 0, 0, 0, b"", 0)
        )
        if not self._index.tombstone(key, idx_rev):
            raise AssertionError(f"mvcc: tombstone of a key that is not live: {key!r}")
        self.changes.append((key, 0, 0, 0, b"", 0))
        if self._lessor is not None and old_lease != 0:
            self._lessor.detach(old_lease, key)

