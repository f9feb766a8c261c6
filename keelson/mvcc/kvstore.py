"""The revisioned key space over one backend (etcd's mvcc ``store``).

Theory of operation. ``KVStore`` owns the key index (memory) and the ``key`` bucket
(backend). It hands out read views (``read``) and write transactions (``write``) that run
inside a backend write txn the caller owns, so the server can apply a batch of raft entries,
each as its own mvcc txn with its own main revision, plus lease changes and the consistent
index, in one backend commit:

    with store.batch() as btx:            # or: with backend.write() as btx: ...
        for entry in entries:               #     then store.committed() / store.aborted()
            store.txn(btx, request)         # each call = one TxnWrite = one main revision
            btx.set_consistent_index(entry.index, entry.term)

Guarantees. A write raises an ``MvccError`` before changing anything, or applies entirely.
Events of a txn reach the listeners (the watchable store) only after the backend txn that
holds them committed (``committed``); if it aborted, ``aborted`` rebuilds the index from the
backend and drops them. Compaction (``compact``) is recorded in the caller's txn together
with the in-memory index compaction; the history it frees is deleted afterwards in bounded
batches by ``compaction_step``, each in its own backend txn, so writes interleave; a restart
resumes an unfinished compaction (meta keys ``scheduledCompactRev``/``finishedCompactRev``).

Threading: not thread-safe. One thread (the server's apply loop) calls everything,
including reads; no read view may be open across ``batch``/``compaction_step`` calls of
another thread. ``compaction_step`` opens its own backend write txn, so it must not be
called while a batch is open on the same thread.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import crc32c

from keelson.backend import META_BUCKET, Backend, WriteTxn
from keelson.mvcc.apply import (
    apply_delete_range,
    apply_put,
    apply_range,
    apply_txn_path,
    check_txn_state,
    is_txn_read_only,
)
from keelson.mvcc.errors import CompactedError, EmptyKeyError, FutureRevisionError
from keelson.mvcc.key_index import TreeIndex
from keelson.mvcc.keyvalue import Change, Event, EventType, KeyValue, decode_kv
from keelson.mvcc.requests import (
    DeleteRangeRequest,
    DeleteRangeResponse,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    TxnRequest,
    TxnResponse,
)
from keelson.mvcc.revision import (
    KEY_BUCKET,
    Revision,
    bytes_to_rev,
    is_tombstone,
    main_rev_start,
    rev_to_bytes,
)
from keelson.mvcc.txn import Lessor, TxnRead, TxnWrite

SCHEDULED_COMPACT_KEY = b"scheduledCompactRev"
FINISHED_COMPACT_KEY = b"finishedCompactRev"
CONSISTENT_INDEX_KEY = b"consistent_index"
DEFAULT_COMPACTION_BATCH_LIMIT = 1000

CommitListener = Callable[[int, Sequence[Event]], None]
"""Called with (revision, events of that revision) for every committed write txn."""

ChangesListener = Callable[[Sequence[tuple[int, Sequence[Change]]]], None]
"""Called once per committed backend txn with (revision, changes) of each write txn in it,
in revision order; a change whose create revision is 0 is a deletion (``changes_to_events``
turns them into events). Lets a listener skip building events nobody watches."""


@dataclass(slots=True)
class _CompactionJob:
    rev: int
    keep: set[Revision]
    next_key: bytes = b""


def changes_to_events(rev: int, changes: Sequence[Change]) -> tuple[Event, ...]:
    """The events of one write txn: a change with no create revision is a deletion."""
    out = []
    for change in changes:
        if change[1] == 0:
            out.append(Event(EventType.DELETE, KeyValue(change[0], mod_revision=rev)))
        else:
            out.append(Event(EventType.PUT, KeyValue(*change)))
    return tuple(out)


class KVStore:
    """See the module docstring. Open the backend with ``buckets=KVStore.BUCKETS``."""

    BUCKETS = (KEY_BUCKET,)

    def __init__(
        self,
        backend: Backend,
        *,
        lessor: Lessor | None = None,
        compaction_batch_limit: int = DEFAULT_COMPACTION_BATCH_LIMIT,
        deferred: bool = False,
    ) -> None:
        if compaction_batch_limit < 1:
            raise ValueError("compaction_batch_limit must be positive")
        self._backend = backend
        self._deferred = deferred
        """Batches and compaction steps use deferred backend writes (flushed by the owner
        of the backend, see keelson.backend): published once in the pending transaction."""
        self._lessor = lessor
        self._batch_limit = compaction_batch_limit
        self._listeners: list[CommitListener] = []
        self._changes_listeners: list[ChangesListener] = []
        self._index = TreeIndex()
        # etcd's store begins at revision 1: the first write is revision 2.
        self._current_rev = 1
        self._compact_rev = 0
        self._jobs: deque[_CompactionJob] = deque()
        # (revision, changes) of every write txn since the last commit, in revision order;
        # turned into events only at publication, and only for event listeners.
        self._unpublished: list[tuple[int, Sequence[Change]]] = []
        self._open_write: TxnWrite | None = None
        self.restore(attach_leases=True)

    # -- state --------------------------------------------------------------------------

    @property
    def backend(self) -> Backend:
        return self._backend

    @property
    def current_revision(self) -> int:
        """The newest revision applied (committed or in the open batch)."""
        return self._current_rev

    @property
    def compact_revision(self) -> int:
        """Reads below this revision fail with CompactedError (0: never compacted)."""
        return self._compact_rev

    def add_listener(self, listener: CommitListener) -> None:
        self._listeners.append(listener)

    def add_changes_listener(self, listener: ChangesListener) -> None:
        """Like ``add_listener``, called once per commit with the raw changes (see
        ``ChangesListener``). Changes listeners are called before event listeners."""
        self._changes_listeners.append(listener)

    def restore(self, *, attach_leases: bool = False) -> None:
        """Rebuild the index, current and compact revision from the backend (its pending
        writes included on the owning thread), and reschedule an unfinished compaction."""
        index = TreeIndex()
        current = 1
        with self._backend.read() as tx:
            tx.count(KEY_BUCKET)  # fails clearly if the bucket was not opened
            finished = tx.get(META_BUCKET, FINISHED_COMPACT_KEY)
            scheduled = tx.get(META_BUCKET, SCHEDULED_COMPACT_KEY)
            for k, v in tx.range(KEY_BUCKET, b"", None):
                rev = bytes_to_rev(k)
                kv = decode_kv(v)
                if is_tombstone(k):
                    index.restore_tombstone(kv.key, rev)
                else:
                    index.restore_put(kv.key, rev, kv.create_revision, kv.version, kv.lease)
                current = rev.main
        compact = bytes_to_rev(finished).main if finished else 0
        sched = bytes_to_rev(scheduled).main if scheduled else 0
        self._index = index
        self._compact_rev = compact
        self._current_rev = max(current, compact)
        self._jobs.clear()
        self._unpublished.clear()
        self._open_write = None
        if sched > compact:
            self._compact_rev = sched
            self._current_rev = max(self._current_rev, sched)
            self._jobs.append(_CompactionJob(sched, index.compact(sched)))
        if attach_leases and self._lessor is not None:
            for ki in index.keys_in(b"", b""):
                if ki.lease != 0 and ki.generations[-1].revs:
                    self._lessor.attach(ki.lease, ki.key)

    # -- transactions ---------------------------------------------------------------------

    def read(self) -> TxnRead:
        """A read view at the current revision; close it (``with``) promptly. Must not be
        used while a batch is open. With deferred batches it sees the pending writes (on
        the backend's owning thread; keelson.backend)."""
        btx = self._backend.read()
        return TxnRead(self._index, btx, self._current_rev, self._compact_rev, owns_btx=True)

    def write(self, btx: WriteTxn) -> TxnWrite:
        """A write transaction inside ``btx``; one at a time."""
        if self._open_write is not None:
            raise AssertionError("mvcc: a TxnWrite is already open")
        tw = TxnWrite(
            self._index, btx, self._current_rev, self._compact_rev, self._lessor, self._txn_end
        )
        self._open_write = tw
        return tw

    def _txn_end(self, tw: TxnWrite) -> None:
        self._open_write = None
        changes = tw.changes
        if changes:
            rev = tw._begin_rev + 1
            self._current_rev = rev
            self._unpublished.append((rev, changes))  # an ended TxnWrite changes no more

    def committed(self) -> None:
        """The backend txn holding the writes since the last call committed: publish them."""
        pending, self._unpublished = self._unpublished, []
        if not pending:
            return
        for changes_listener in self._changes_listeners:
            changes_listener(pending)
        if self._listeners:
            for rev, changes in pending:
                events = changes_to_events(rev, changes)
                for listener in self._listeners:
                    listener(rev, events)

    def aborted(self) -> None:
        """The backend txn aborted: forget its writes and rebuild from the backend."""
        self.restore()

    @contextmanager
    def batch(self) -> Iterator[WriteTxn]:
        """Open a backend write txn; commit (into the pending transaction when deferred)
        and publish on normal exit, abort and rebuild on exception."""
        try:
            with self._backend.write(defer=self._deferred) as btx:
                yield btx
        except BaseException:
            self.aborted()
            raise
        self.committed()

    # -- requests (etcd's applier) --------------------------------------------------------

    def range(self, req: RangeRequest) -> RangeResponse:
        with self.read() as view:
            return apply_range(view, req)

    def put(self, btx: WriteTxn, req: PutRequest) -> PutResponse:
        tw = self.write(btx)
        try:
            resp = apply_put(tw, req)
        except BaseException:
            self._fail_write(tw)
            raise
        tw.end()
        return resp

    def put_plain(self, btx: WriteTxn, key: bytes, value: bytes) -> PutResponse:
        """``put`` of a PutRequest with no lease, no prev_kv and no ignore_* flag, the
        request almost every client sends: the same checks and write, without building the
        request object or looking for a lease or previous value (a few µs per applied put
        on every member)."""
        if not key:
            raise EmptyKeyError()
        tw = self.write(btx)
        try:
            rev = tw.put(key, value, 0)
        except BaseException:
            self._fail_write(tw)
            raise
        tw.end()
        return PutResponse(rev)

    def delete_range(self, btx: WriteTxn, req: DeleteRangeRequest) -> DeleteRangeResponse:
        with self.write(btx) as tw:
            try:
                return apply_delete_range(tw, req)
            except BaseException:
                self._fail_write(tw)
                raise

    def txn(self, btx: WriteTxn, req: TxnRequest) -> TxnResponse:
        """Apply a txn in ``btx`` (a read-only txn reads through ``btx`` too)."""
        with self.write(btx) as tw:
            try:
                path = check_txn_state(tw, req, self._lessor)
                resp = apply_txn_path(tw, req, path)
            except BaseException:
                self._fail_write(tw)
                raise
        return TxnResponse(tw.rev(), resp.succeeded, resp.responses)

    def read_txn(self, req: TxnRequest) -> TxnResponse:
        """Serve a read-only txn from a read view (serializable reads)."""
        if not is_txn_read_only(req):
            raise ValueError("read_txn needs a txn without writes")
        with self.read() as view:
            path = check_txn_state(view, req, self._lessor)
            return apply_txn_path(view, req, path)

    def _fail_write(self, tw: TxnWrite) -> None:
        if tw.changes:
            # Not reachable for request errors (checked before writing): the index is ahead
            # of what the caller's txn will hold once it aborts.
            raise AssertionError("mvcc: write failed after changing state; abort the batch")
        self._open_write = None

    # -- compaction -----------------------------------------------------------------------

    def compact(self, btx: WriteTxn, rev: int) -> None:
        """Schedule compaction at ``rev`` in ``btx``: reads below ``rev`` fail from now on.
        Raises CompactedError if ``rev`` <= the compact revision, FutureRevisionError if it
        is beyond the current revision. Physical deletion is ``compaction_step``'s job."""
        if rev <= self._compact_rev:
            raise CompactedError()
        if rev > self._current_rev:
            raise FutureRevisionError()
        btx.put(META_BUCKET, SCHEDULED_COMPACT_KEY, rev_to_bytes(Revision(rev)))
        self._compact_rev = rev
        self._jobs.append(_CompactionJob(rev, self._index.compact(rev)))

    def key_count(self) -> int:
        """How many keys exist at the current revision (O(1); etcd's keys gauge)."""
        return self._index.live_count

    def compaction_pending(self) -> bool:
        return bool(self._jobs)

    def compaction_step(self) -> bool:
        """Delete up to the batch limit of compacted revisions in one backend write txn.
        Returns True when no compaction work is left."""
        if not self._jobs:
            return True
        job = self._jobs[0]
        end = main_rev_start(job.rev + 1)
        limit = self._batch_limit
        with self._backend.write(defer=self._deferred) as btx:
            keys: list[bytes] = []
            for k, _ in btx.range(KEY_BUCKET, job.next_key, end):
                keys.append(k)
                if len(keys) >= limit:
                    break
            for k in keys:
                if bytes_to_rev(k) not in job.keep:
                    btx.delete(KEY_BUCKET, k)
            if len(keys) < limit:
                btx.put(META_BUCKET, FINISHED_COMPACT_KEY, rev_to_bytes(Revision(job.rev)))
                self._jobs.popleft()
            else:
                job.next_key = keys[-1] + b"\0"
        return not self._jobs

    def finish_compaction(self) -> None:
        """Run ``compaction_step`` until done (tests, shutdown)."""
        while not self.compaction_step():
            pass

    # -- hashes and size ------------------------------------------------------------------

    def hash_kv(self, rev: int = 0) -> tuple[int, int, int]:
        """etcd 3.4's HashByRev: (crc32c over the key bucket's records up to ``rev``,
        skipping compacted history, current revision, compact revision)."""
        compact, current = self._compact_rev, self._current_rev
        if 0 < rev <= compact:
            raise CompactedError()
        if rev > current:
            raise FutureRevisionError()
        if rev <= 0:
            rev = current
        keep = self._index.keep(rev)
        lower = Revision(compact + 1, 0)
        h = crc32c.crc32c(KEY_BUCKET)
        with self._backend.read() as tx:
            for k, v in tx.range(KEY_BUCKET, b"", main_rev_start(rev + 1)):
                if keep and bytes_to_rev(k) < lower and bytes_to_rev(k) not in keep:
                    continue
                h = crc32c.crc32c(k, h)
                h = crc32c.crc32c(v, h)
        return int(h), current, compact

    def hash(self, buckets: Sequence[bytes] = (KEY_BUCKET, META_BUCKET)) -> tuple[int, int]:
        """etcd's Hash: (crc32c over every record of ``buckets`` in name order, except the
        consistent index, current revision)."""
        h = 0
        with self._backend.read() as tx:
            for name in sorted(set(buckets)):
                h = crc32c.crc32c(name, h)
                for k, v in tx.range(name, b"", None):
                    if name == META_BUCKET and k == CONSISTENT_INDEX_KEY:
                        continue
                    h = crc32c.crc32c(k, h)
                    h = crc32c.crc32c(v, h)
        return int(h), self._current_rev

    def size(self) -> int:
        return self._backend.size()

    def size_in_use(self) -> int:
        return self._backend.size_in_use()

    def check(self) -> None:
        """Raise AssertionError if the index's invariants do not hold."""
        self._index.check()
