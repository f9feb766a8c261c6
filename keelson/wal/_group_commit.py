"""Group commit: many callers' batches, one writer thread, one fsync per round.

Theory of operation. Callers ``submit`` a batch (hard state and/or entries) from any thread
and get a ``concurrent.futures.Future``. One writer thread takes every batch queued since its
last round, ``save``s them in submission order without syncing, then syncs once and resolves
all of their futures with the WAL's durable index. A caller is therefore told only after its
batch is on stable storage, and an fsync is shared by everyone who arrived while the previous
one ran. If a write or sync fails, every batch of that round and every later one fails with
the error (the WAL refuses further writes; the member must restart and repair).

The server uses it from asyncio with ``asyncio.wrap_future(committer.submit(...))``; nothing
here touches an event loop. Batches carrying entries must be submitted in index order (the
raft loop is the one submitter of entries); a batch that would leave a gap fails alone with
``ValueError``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from keelson.raft.types import Entry, HardState
from keelson.wal._errors import WALClosedError
from keelson.wal._wal import WAL


@dataclass(frozen=True, slots=True)
class CommitStats:
    batches: int  # batches made durable
    syncs: int  # fsyncs issued


@dataclass(slots=True)
class _Batch:
    hard_state: HardState | None
    entries: Sequence[Entry]
    future: Future[int]


class GroupCommitter:
    """Owns a writer thread that appends submitted batches to ``wal`` and fsyncs them in
    groups. While a committer runs, nobody else may write to the WAL.

    ``on_durable`` (optional) is called from the writer thread with the new durable index
    after every sync, before the round's futures resolve.
    """

    def __init__(
        self,
        wal: WAL,
        *,
        max_batches_per_sync: int = 1024,
        on_durable: Callable[[int], None] | None = None,
        name: str = "keelson-wal-commit",
    ) -> None:
        self._wal = wal
        self._max = max_batches_per_sync
        self._on_durable = on_durable
        self._cond = threading.Condition()
        self._queue: list[_Batch] = []
        self._closing = False
        self._error: BaseException | None = None
        self._durable_index = wal.durable_index
        self._batches = 0
        self._syncs = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def durable_index(self) -> int:
        """Highest raft index known durable (as last written)."""
        return self._durable_index

    def stats(self) -> CommitStats:
        with self._cond:
            return CommitStats(self._batches, self._syncs)

    def submit(self, hard_state: HardState | None, entries: Sequence[Entry] = ()) -> Future[int]:
        """Queue a batch. The future resolves to the durable index once the batch is fsync'd,
        or fails with the write error (or ``WALClosedError`` after ``close``)."""
        fut: Future[int] = Future()
        with self._cond:
            if self._closing:
                raise WALClosedError("group committer is closed")
            if self._error is not None:
                fut.set_exception(WALClosedError(f"wal failed earlier: {self._error!r}"))
                return fut
            self._queue.append(_Batch(hard_state, entries, fut))
            self._cond.notify()
        return fut

    def close(self) -> None:
        """Make every batch already submitted durable (or failed), then stop the thread.
        Does not close the WAL."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                round_ = self._queue[: self._max]
                del self._queue[: self._max]
            self._commit(round_)

    def _commit(self, round_: list[_Batch]) -> None:
        done: list[_Batch] = []
        if self._error is None:
            try:
                for b in round_:
                    try:
                        self._wal.save(b.hard_state, b.entries, must_sync=False)
                    except ValueError as exc:
                        b.future.set_exception(exc)
                        continue
                    done.append(b)
                durable = self._wal.sync()
            except BaseException as exc:  # noqa: B036 - every waiter must hear of it
                with self._cond:
                    self._error = exc
                for b in round_:
                    if not b.future.done():
                        b.future.set_exception(exc)
                return
        else:
            err = WALClosedError(f"wal failed earlier: {self._error!r}")
            for b in round_:
                b.future.set_exception(err)
            return
        with self._cond:
            self._durable_index = durable
            self._batches += len(done)
            self._syncs += 1
        if self._on_durable is not None:
            self._on_durable(durable)
        for b in done:
            b.future.set_result(durable)
