"""The LMDB environment under a member: named buckets, batched write transactions.

Theory of operation. One LMDB environment (a directory holding ``data.mdb``) stores every
bucket of a member (``key`` for mvcc revisions, ``meta``, ``lease``, ``members``, ...) as a
named sub-database. LMDB gives us what etcd gets from bbolt: a copy-on-write B+tree, one
writer at a time and readers that see a consistent snapshot without blocking it.

Invariants:
- Exactly one write transaction is open at a time (``_write_lock``); the server applies a
  batch of raft entries in one of them and records the last applied raft index (the
  *consistent index*) in the same transaction, so after a crash the backend and the index
  agree and re-applying the WAL is idempotent.
- A write transaction commits only when its ``with`` block exits normally; an exception
  aborts it and nothing of it is visible.
- ``defragment`` blocks writers (not readers) while it copies the live pages into a fresh
  environment, then swaps environments between two transactions.

Durability: with ``sync=True`` (the default) every commit fsyncs its data pages before it
writes the meta page that makes them current, but the meta page itself is not fsynced
(LMDB's ``metasync=False``): it reaches the disk with the next commit's data sync, with
``sync()``, or when the kernel writes it back. One fsync per commit instead of two, and
the B+tree stays intact across a power loss; what a power loss can do is undo the *last*
commit, and the server re-applies it from the WAL because the consistent index rolls back
with it (entries above it are applied again on restart; the WAL keeps them until a
snapshot, which calls ``sync()`` first). ``sync=False`` (tests, benchmarks of the store
alone) skips fsync entirely: LMDB then survives a process crash but not a power loss
(pages and meta may reach the disk out of order and corrupt the tree), so the server
never uses it in production. Measured on this machine (3 members, put at 1 client):
2 fsyncs per commit 83 puts/s, 1 fsync 116/s, none 242/s.

Deferred commit (etcd's batch transaction). ``write(defer=True)`` does not commit: its
writes go, as a nested transaction, into one long-lived *pending* write transaction that
the thread which opened it commits later with ``flush()`` (the server: every
``--backend-batch-interval``, every ``--backend-batch-limit`` writes, before a snapshot
releases WAL segments and before any other thread reads the environment for a copy). So
the fsync leaves the write path: an entry is acknowledged once it is durable in the WAL of
a quorum and applied to the pending transaction, as in etcd. A crash loses the pending
transaction and its consistent index with it; the server re-applies those entries from the
WAL, which keeps everything above the last snapshot, and a snapshot flushes first.

- Visibility: on the owning thread, ``read()`` and the write transactions see the pending
  writes (a read view goes through the pending transaction itself, or through the nested
  one while a write is open); other threads see the last flushed state.
- Atomicity: a deferred write that raises is aborted alone (it was a nested transaction);
  the ones before it stay pending. A ``write()`` without ``defer`` on the owning thread
  nests too, then flushes everything, so it is durable when its block exits.
- While a pending transaction is open, its thread holds the single-writer lock: a write
  or ``defragment`` from another thread waits for the next ``flush()``, so the owning
  thread must keep flushing (the server's timer does) and flushes before it hands the
  backend to a worker thread and waits for it.
"""

from __future__ import annotations

import os
import shutil
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING

import lmdb

if TYPE_CHECKING:
    from lmdb import _Database

DEFAULT_MAP_SIZE = 8 * 1024 * 1024 * 1024
"""Address space reserved for the environment; the file grows only as data is written."""

META_BUCKET = b"meta"
_CONSISTENT_INDEX_KEY = b"consistent_index"
_INDEX = struct.Struct(">QQ")

DB_FILE = "data.mdb"


class BackendError(Exception):
    """The backend could not be opened or an operation on it failed."""


class ReadTxn:
    """A consistent read-only view of every bucket. Use as a context manager."""

    __slots__ = ("_backend", "_txn_", "_dbs")

    def __init__(self, backend: Backend, txn: lmdb.Transaction | None) -> None:
        self._backend = backend
        self._txn_ = txn
        self._dbs = backend._dbs

    @property
    def _txn(self) -> lmdb.Transaction:
        txn = self._txn_
        if txn is None:  # a view of the pending transaction: whichever level is open now
            return self._backend._active_pending()
        return txn

    def __enter__(self) -> ReadTxn:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._txn_ is not None:
            self._txn_.abort()
            self._backend._reader_done()

    def _db(self, bucket: bytes) -> _Database:
        try:
            return self._dbs[bucket]
        except KeyError:
            raise BackendError(f"unknown bucket {bucket!r}") from None

    def get(self, bucket: bytes, key: bytes) -> bytes | None:
        value = self._txn.get(key, db=self._db(bucket))
        return None if value is None else bytes(value)

    def range(
        self, bucket: bytes, start: bytes, end: bytes | None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """Yield (key, value) for start <= key < end (end None: to the last key), in key
        order, or in reverse order when ``reverse``. Valid only while the txn is open."""
        cursor = self._txn.cursor(db=self._db(bucket))
        if not reverse:
            if not cursor.set_range(start):
                return
            for key, value in cursor:
                if end is not None and bytes(key) >= end:
                    return
                yield bytes(key), bytes(value)
            return
        # Reverse: position at the last key < end.
        if end is None:
            positioned = cursor.last()
        elif cursor.set_range(end):
            positioned = cursor.prev()
        else:
            positioned = cursor.last()
        while positioned:
            key = bytes(cursor.key())
            if key < start:
                return
            yield key, bytes(cursor.value())
            positioned = cursor.prev()

    def count(self, bucket: bytes) -> int:
        return int(self._txn.stat(self._db(bucket))["entries"])

    def consistent_index(self) -> tuple[int, int]:
        """(index, term) of the last raft entry applied to this backend; (0, 0) if none."""
        raw = self._txn.get(_CONSISTENT_INDEX_KEY, db=self._dbs[META_BUCKET])
        if raw is None:
            return (0, 0)
        index, term = _INDEX.unpack(bytes(raw))
        return (index, term)


class WriteTxn(ReadTxn):
    """A write transaction. On normal exit it commits (a nested one into the pending
    transaction, then ``flush()`` unless deferred); on exception it aborts.

    ``set_consistent_index`` is called once per applied raft entry, but only its last
    value per transaction matters: it is kept here and written into LMDB once, before the
    commit or before anything could read it back (a read through this txn or a pending
    view, a put of that very key), so what LMDB holds and what any reader sees are the same
    as if every call had written it."""

    __slots__ = ("_nested", "_defer", "_writes", "_bytes", "_ci")

    def __init__(
        self, backend: Backend, txn: lmdb.Transaction, *, nested: bool, defer: bool
    ) -> None:
        super().__init__(backend, txn)
        self._nested = nested
        self._defer = defer
        self._writes = 0
        self._bytes = 0
        self._ci: bytes | None = None  # consistent index set but not yet written

    @property
    def _txn(self) -> lmdb.Transaction:
        if self._ci is not None:
            self._write_consistent_index()
        txn = self._txn_
        if txn is None:  # not reachable: a write txn always holds its own lmdb txn
            return self._backend._active_pending()
        return txn

    def _write_consistent_index(self) -> None:
        raw, self._ci = self._ci, None
        if raw is not None and self._txn_ is not None:
            try:
                self._txn_.put(_CONSISTENT_INDEX_KEY, raw, db=self._dbs[META_BUCKET])
            except lmdb.MapFullError as e:
                raise BackendError("backend map is full") from e

    def __enter__(self) -> WriteTxn:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._backend._write_done(self, ok=exc_type is None)

    def put(self, bucket: bytes, key: bytes, value: bytes) -> None:
        # Hot path (every applied put): a write txn always holds its own lmdb txn, and the
        # bucket's handle is looked up directly (``_db``'s error only when it is missing).
        txn = self._txn_
        if txn is None or (self._ci is not None and key == _CONSISTENT_INDEX_KEY):
            txn = self._txn  # (not reachable) / the deferred index goes first
        db = self._dbs.get(bucket)
        if db is None:
            db = self._db(bucket)
        try:
            txn.put(key, value, db=db)
        except lmdb.MapFullError as e:
            raise BackendError("backend map is full") from e
        self._writes += 1
        self._bytes += len(key) + len(value)

    def delete(self, bucket: bytes, key: bytes) -> bool:
        self._writes += 1
        return bool(self._txn.delete(key, db=self._db(bucket)))

    def set_consistent_index(self, index: int, term: int) -> None:
        """Record the last applied raft entry; written once per txn (class docstring)."""
        self._ci = _INDEX.pack(index, term)
        self._writes += 1


class Backend:
    """An LMDB environment with named buckets; see the module docstring for guarantees."""

    def __init__(
        self,
        path: str,
        *,
        map_size: int = DEFAULT_MAP_SIZE,
        buckets: Iterable[bytes] = (),
        sync: bool = True,
    ) -> None:
        self.path = path
        self._map_size = map_size
        self._sync = sync
        self._names = sorted({META_BUCKET, *buckets})
        self._write_lock = threading.Lock()
        # Readers hold this shared; defragment's swap holds it exclusively.
        self._swap = threading.Condition()
        self._readers = 0
        self._swapping = False
        # Deferred commit: the pending transaction, its thread, the nested transaction of
        # the write open in it (if any), and what it holds.
        self._pending: lmdb.Transaction | None = None
        self._pending_owner = 0
        self._nested: lmdb.Transaction | None = None
        self._open_write: WriteTxn | None = None  # the WriteTxn of ``_nested``
        self._pending_writes = 0
        self._pending_bytes = 0
        self._pending_since = 0.0
        self._size: int | None = None  # size() of the file, forgotten at every commit
        self.commit_observer: Callable[[float], None] | None = None
        """Called with the seconds each durable commit took (a transaction of its own or
        the pending batch; the member's ``etcd_disk_backend_commit_duration_seconds``), on
        the committing thread; must not raise."""
        os.makedirs(path, exist_ok=True)
        self._env, self._dbs = self._open_env(path)

    def _open_env(self, path: str) -> tuple[lmdb.Environment, dict[bytes, _Database]]:
        try:
            env = lmdb.open(
                path,
                map_size=self._map_size,
                max_dbs=64,
                sync=self._sync,
                # The meta page is flushed by the next commit's data sync (or ``sync()``):
                # one fsync per commit instead of two, integrity kept (see Durability).
                metasync=False,
                readahead=False,
                lock=True,
                max_readers=512,
            )
        except lmdb.Error as e:
            raise BackendError(f"cannot open backend at {path}: {e}") from e
        dbs = {name: env.open_db(name) for name in self._names}
        return env, dbs

    def bucket_names(self) -> tuple[bytes, ...]:
        """Every bucket of this environment, sorted (for whole-backend hashes)."""
        return tuple(self._names)

    # -- transactions -----------------------------------------------------------------

    def read(self) -> ReadTxn:
        """A read view. On the thread owning a pending transaction it sees the pending
        writes (and is valid until the next ``flush()``); elsewhere, the flushed state."""
        if self._pending is not None and self._pending_owner == threading.get_ident():
            return ReadTxn(self, None)
        with self._swap:
            while self._swapping:
                self._swap.wait()
            self._readers += 1
            try:
                txn = self._env.begin(write=False, buffers=False)
            except BaseException:
                self._readers -= 1
                raise
        return ReadTxn(self, txn)

    def _reader_done(self) -> None:
        with self._swap:
            self._readers -= 1
            if self._readers == 0:
                self._swap.notify_all()

    def write(self, *, defer: bool = False) -> WriteTxn:
        """The write transaction (one at a time). ``defer``: commit into the pending
        transaction and leave the fsync to ``flush()`` (module docstring)."""
        if self._nested is not None and self._pending_owner == threading.get_ident():
            raise BackendError("a write transaction is already open on this thread")
        if self._pending is None or self._pending_owner != threading.get_ident():
            self._write_lock.acquire()  # another thread's pending txn: wait for its flush
            if not defer:
                try:
                    txn = self._env.begin(write=True, buffers=False)
                except BaseException:
                    self._write_lock.release()
                    raise
                return WriteTxn(self, txn, nested=False, defer=False)
            try:
                self._pending = self._env.begin(write=True, buffers=False)
            except BaseException:
                self._write_lock.release()
                raise
            self._pending_owner = threading.get_ident()
            self._pending_since = time.monotonic()
        self._nested = self._env.begin(write=True, parent=self._pending, buffers=False)
        wtx = WriteTxn(self, self._nested, nested=True, defer=defer)
        self._open_write = wtx
        return wtx

    def _write_done(self, wtx: WriteTxn, *, ok: bool) -> None:
        if ok and wtx._ci is not None:
            try:
                wtx._write_consistent_index()
            except BaseException:
                self._write_done(wtx, ok=False)
                raise
        txn = wtx._txn_
        if txn is None:
            raise AssertionError("backend: a write transaction without its lmdb txn")
        if not wtx._nested:
            try:
                if ok:
                    started = time.perf_counter()
                    try:
                        txn.commit()
                    except lmdb.MapFullError as e:
                        raise BackendError("backend map is full") from e
                    finally:
                        self._size = None
                    if self.commit_observer is not None:
                        self.commit_observer(time.perf_counter() - started)
                else:
                    txn.abort()
            finally:
                self._write_lock.release()
            return
        self._nested = None
        self._open_write = None
        if not ok:
            txn.abort()
            if self._pending_writes == 0:  # nothing else pending: give the lock back
                self._end_pending(commit=False)
            return
        try:
            txn.commit()
        except lmdb.MapFullError as e:
            raise BackendError("backend map is full") from e
        self._pending_writes += wtx._writes
        self._pending_bytes += wtx._bytes
        if not wtx._defer:
            self.flush()

    def _active_pending(self) -> lmdb.Transaction:
        txn = self._nested or self._pending
        if txn is None or self._pending_owner != threading.get_ident():
            raise BackendError("read view used after the pending transaction was flushed")
        wtx = self._open_write
        if wtx is not None and wtx._ci is not None:
            wtx._write_consistent_index()  # a view must see it (WriteTxn docstring)
        return txn

    def _end_pending(self, *, commit: bool) -> None:
        """Commit (or abort) the pending transaction and give the writer lock back."""
        pending, self._pending = self._pending, None
        self._pending_owner = 0
        self._pending_writes = self._pending_bytes = 0
        try:
            if pending is None:
                return
            if not commit:
                pending.abort()
                return
            started = time.perf_counter()
            try:
                pending.commit()
            except lmdb.MapFullError as e:
                raise BackendError("backend map is full") from e
            finally:
                self._size = None
            if self.commit_observer is not None:
                self.commit_observer(time.perf_counter() - started)
        finally:
            self._write_lock.release()

    @property
    def pending_writes(self) -> int:
        """Puts, deletes and consistent-index updates in the pending transaction."""
        return self._pending_writes

    @property
    def pending_bytes(self) -> int:
        """Key and value bytes put in the pending transaction."""
        return self._pending_bytes

    def pending_age(self) -> float:
        """Seconds since the pending transaction was opened (0.0 when there is none)."""
        return time.monotonic() - self._pending_since if self._pending is not None else 0.0

    def flush(self) -> None:
        """Commit the pending transaction (one fsync unless ``sync=False``). Only its own
        thread may flush it; a no-op when nothing is pending on this thread."""
        pending = self._pending
        if pending is None or self._pending_owner != threading.get_ident():
            return
        if self._nested is not None:
            raise BackendError("flush() while a write transaction is open")
        self._end_pending(commit=True)

    def consistent_index(self) -> tuple[int, int]:
        with self.read() as tx:
            return tx.consistent_index()

    # -- size, defragmentation, snapshots ----------------------------------------------

    def size(self) -> int:
        """Bytes the database file takes on disk (etcd's dbSize). Read from the file once
        per commit (it grows only when a transaction commits), not on every call: the
        quota check asks on every write request."""
        size = self._size
        if size is None:
            try:
                size = os.path.getsize(os.path.join(self.path, DB_FILE))
            except OSError:
                return 0
            self._size = size
        return size

    def size_in_use(self) -> int:
        """Bytes of pages reachable from the buckets (etcd's dbSizeInUse). LMDB does not
        expose its free list, so this counts the pages of every tree instead; the
        difference from ``size()`` is what defragmentation would give back."""
        reachable = 2  # the two meta pages
        with self._env.begin(write=False) as txn:
            for name in self._names:
                s = txn.stat(self._dbs[name])
                reachable += s["branch_pages"] + s["leaf_pages"] + s["overflow_pages"]
        main = self._env.stat()
        reachable += main["branch_pages"] + main["leaf_pages"] + main["overflow_pages"]
        return int(reachable * main["psize"])

    def copy_to(self, dest_dir: str, *, compact: bool = True) -> None:
        """Write a consistent copy of the environment into ``dest_dir`` (created), as of
        one read transaction; writers are not blocked. The flushed state: this thread's
        pending transaction is flushed first; another thread's is not in the copy."""
        self.flush()
        os.makedirs(dest_dir, exist_ok=True)
        self._env.copy(dest_dir, compact=compact)

    def defragment(self) -> None:
        """Rewrite the environment into a compact copy and switch to it.

        Writers wait for the whole operation; readers keep being served from the old
        environment until the switch, which waits for in-flight readers to finish."""
        self.flush()
        with self._write_lock:
            tmp = self.path.rstrip("/") + ".defrag"
            shutil.rmtree(tmp, ignore_errors=True)
            self.copy_to(tmp, compact=True)
            with self._swap:
                self._swapping = True
                while self._readers:
                    self._swap.wait()
            try:
                self._swap_in(tmp)
            finally:
                with self._swap:
                    self._swapping = False
                    self._swap.notify_all()

    def _swap_in(self, tmp: str) -> None:
        """Replace the environment by the compact copy in ``tmp``; no txn may be open."""
        self._env.close()
        os.replace(os.path.join(tmp, DB_FILE), os.path.join(self.path, DB_FILE))
        lock_file = os.path.join(self.path, "lock.mdb")
        if os.path.exists(lock_file):
            os.unlink(lock_file)
        shutil.rmtree(tmp, ignore_errors=True)
        _fsync_dir(self.path)
        self._size = None
        self._env, self._dbs = self._open_env(self.path)

    def sync(self) -> None:
        """Flush this thread's pending transaction, then force everything to disk."""
        self.flush()
        self._env.sync(True)

    def close(self) -> None:
        """Flush this thread's pending transaction and close the environment. Another
        thread's pending transaction is an error (it cannot be committed from here)."""
        self.flush()
        if self._pending is not None:
            raise BackendError("close() while another thread has a pending transaction")
        with self._write_lock:
            self._env.close()


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
