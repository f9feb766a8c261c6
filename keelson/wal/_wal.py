"""The write-ahead log: appends raft entries, hard state and snapshot markers to segments.

Theory of operation. One ``WAL`` object owns one directory (``<data-dir>/member/wal``) and
appends to its newest segment, preallocated to ``segment_size`` bytes. A ``save`` writes all
its records with one ``write``; they are durable once ``sync`` (or a ``save`` with
``must_sync``) returns, and ``durable_index`` then says up to which raft index. When a
segment passes ``segment_size`` it is cut: synced, truncated to its records, and a new one
is created under a temporary name, written (chain crc, metadata, latest snapshot marker,
latest hard state), synced and renamed into place, and the directory synced. So at any
crash point the newest segment either does not exist or is complete up to its header.

An entry at index ``i`` replaces every entry ``>= i`` written before it (a follower's log
truncated by its leader): nothing is rewritten on disk, replay lets later records win.

Invariants: ``durable_index <= last_index``; ``last_index >= snapshot marker index``; only
one process has a directory open (``flock``). A failed write leaves the file in an unknown
state, so the WAL refuses every later write (``WALClosedError``); reopen to repair.

Thread safety: every method takes an internal lock, so the WAL can be shared, but the
intended caller is one writer thread (``GroupCommitter``) or the server's raft loop running
``save`` off the event loop. Nothing here knows about asyncio.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from keelson.raft.types import EMPTY_HARD_STATE, Entry, HardState
from keelson.wal._errors import WALClosedError, WALError
from keelson.wal._files import fsync_dir, make_dirs, preallocate, remove_durably, sync_data
from keelson.wal._record import Encoder, SnapshotMarker
from keelson.wal._segment import SegmentFile, read_log, segment_name

log = logging.getLogger(__name__)

DEFAULT_SEGMENT_SIZE = 64 * 1024 * 1024
_TMP_SUFFIX = ".tmp"

Faults = Callable[[str], None]
"""A failpoint hook: called with a point's name (``"wal.cut.before_rename"`` ...) right
before that step. Production passes nothing; torture tests raise or kill from it."""


def _no_faults(point: str) -> None:
    return None


def wal_dir(data_dir: str | os.PathLike[str]) -> Path:
    """Where a member keeps its WAL: ``<data-dir>/member/wal``."""
    return Path(data_dir) / "member" / "wal"


@dataclass(frozen=True, slots=True)
class WALContents:
    """What ``WAL.open`` read back.

    ``entries`` are those after ``snapshot`` (the latest snapshot marker), contiguous, and
    start at ``snapshot.index + 1`` unless the log was never snapshotted and segments were
    released (they then start at the first index the log still holds).
    """

    metadata: bytes
    hard_state: HardState
    snapshot: SnapshotMarker
    entries: tuple[Entry, ...]


class WAL:
    """An open write-ahead log. Build it with ``WAL.create`` or ``WAL.open``."""

    def __init__(
        self,
        directory: Path,
        *,
        dir_fd: int,
        fd: int,
        offset: int,
        encoder: Encoder,
        metadata: bytes,
        segments: list[SegmentFile],
        segment_size: int,
        hard_state: HardState,
        marker: SnapshotMarker,
        marker_seq: int,
        last_index: int,
        faults: Faults | None,
    ) -> None:
        self._dir = directory
        self._dir_fd = dir_fd
        self._fd = fd
        self._offset = offset
        self._enc = encoder
        self._metadata = metadata
        self._segments = segments
        self._segment_size = segment_size
        self._hard_state = hard_state
        self._marker = marker
        self._marker_seq = marker_seq
        self._last_index = last_index
        self._durable_index = last_index
        self._fault = faults or _no_faults
        self.sync_observer: Callable[[float], None] | None = None
        """Called with the seconds each fdatasync of a save took (the member's
        ``etcd_disk_wal_fsync_duration_seconds``); on the saving thread, must not raise."""
        self._lock = threading.Lock()
        self._closed = False
        self._failed: BaseException | None = None

    # -- construction -----------------------------------------------------------------

    @classmethod
    def create(
        cls,
        directory: str | os.PathLike[str],
        metadata: bytes,
        *,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        faults: Faults | None = None,
    ) -> WAL:
        """Create a new, empty WAL in ``directory`` (made if missing; must hold no segment).

        ``metadata`` (e.g. cluster and member ids) is written at the head of every segment
        and handed back by ``open``. Durable when this returns.
        """
        path = Path(directory)
        make_dirs(path)
        dir_fd = _lock_dir(path)
        try:
            if any(p.name.endswith(".wal") for p in path.iterdir()):
                raise WALError(f"{path}: a wal already exists")
            enc = Encoder(0)
            seg, fd, offset = _new_segment(
                path, 0, 0, enc, metadata, SnapshotMarker(), EMPTY_HARD_STATE,
                segment_size, faults or _no_faults,
            )
        except BaseException:
            os.close(dir_fd)
            raise
        return cls(
            path, dir_fd=dir_fd, fd=fd, offset=offset, encoder=enc, metadata=metadata,
            segments=[seg], segment_size=segment_size, hard_state=EMPTY_HARD_STATE,
            marker=SnapshotMarker(), marker_seq=0, last_index=0, faults=faults,
        )

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str],
        *,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        faults: Faults | None = None,
    ) -> tuple[WAL, WALContents]:
        """Open an existing WAL for appending and return what it holds.

        A torn tail of the last segment is truncated to the last valid record and logged at
        WARNING. Any other damage raises ``WALCorruptError`` (file and byte offset in the
        message) and nothing is modified.
        """
        path = Path(directory)
        dir_fd = _lock_dir(path)
        try:
            leftovers = sorted(p for p in path.iterdir() if p.name.endswith(_TMP_SUFFIX))
            remove_durably(leftovers)
            contents = read_log(path)
            last = contents.segments[-1]
            fd = os.open(last.path, os.O_WRONLY)
            try:
                if contents.torn_reason is not None:
                    log.warning(
                        "wal: repairing torn tail of %s: %s at byte offset %d; truncating "
                        "%d bytes after the last valid record",
                        last.path, contents.torn_reason, contents.end_offset,
                        contents.torn_size - contents.end_offset,
                    )
                    os.ftruncate(fd, contents.end_offset)
                preallocate(fd, max(segment_size, contents.end_offset))
                os.fsync(fd)
            except BaseException:
                os.close(fd)
                raise
        except BaseException:
            os.close(dir_fd)
            raise
        wal = cls(
            path, dir_fd=dir_fd, fd=fd, offset=contents.end_offset,
            encoder=Encoder(contents.end_crc), metadata=contents.metadata,
            segments=contents.segments, segment_size=segment_size,
            hard_state=contents.hard_state, marker=contents.marker,
            marker_seq=contents.marker_seq, last_index=contents.last_index, faults=faults,
        )
        result = WALContents(
            contents.metadata, contents.hard_state, contents.marker, tuple(contents.entries)
        )
        return wal, result

    # -- state ------------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        return self._dir

    @property
    def last_index(self) -> int:
        """Index of the last entry written (durable or not), or of the snapshot marker."""
        return self._last_index

    @property
    def durable_index(self) -> int:
        """Every entry up to this index, as last written, survives a crash."""
        return self._durable_index

    @property
    def segment_offset(self) -> int:
        """Bytes of records in the current (last) segment: where the next record goes."""
        return self._offset

    @property
    def hard_state(self) -> HardState:
        return self._hard_state

    @property
    def snapshot_marker(self) -> SnapshotMarker:
        return self._marker

    def segment_paths(self) -> list[Path]:
        with self._lock:
            return [s.path for s in self._segments]

    # -- writing ----------------------------------------------------------------------

    def save(
        self, hard_state: HardState | None, entries: Sequence[Entry], must_sync: bool = False
    ) -> int:
        """Append ``entries`` then ``hard_state``; fsync if ``must_sync``.

        ``entries`` must be contiguous and start at or below ``last_index + 1`` (and above
        the snapshot marker); an entry at index ``i`` replaces all entries ``>= i``. Returns
        ``durable_index`` after the call. Raises ``ValueError`` for entries that would leave
        a gap; ``OSError`` from the disk (the WAL then refuses further writes).
        """
        with self._lock:
            self._check_writable()
            out: list[bytes] = []
            first = 0
            if entries:
                first = entries[0].index
                if first > self._last_index + 1:
                    raise ValueError(
                        f"entry {first} would leave a gap after last index {self._last_index}"
                    )
                if first <= self._marker.index:
                    raise ValueError(
                        f"entry {first} is at or below snapshot index {self._marker.index}"
                    )
                enc = self._enc
                expect = first
                prev_crc = enc.prev_crc
                for e in entries:
                    if e.index != expect:
                        enc.prev_crc = prev_crc
                        raise ValueError(f"entries not contiguous: {e.index} after {expect - 1}")
                    enc.entry(e, out)
                    expect += 1
            if hard_state is not None and hard_state != self._hard_state:
                self._enc.hard_state(hard_state, out)
            if out:
                self._write(out)
                if hard_state is not None:
                    self._hard_state = hard_state
                if entries:
                    self._last_index = entries[-1].index
                    if first <= self._durable_index:
                        self._durable_index = first - 1
            if self._offset >= self._segment_size:
                self._cut()
            elif must_sync:
                self._sync()
            return self._durable_index

    def save_snapshot_marker(self, index: int, term: int) -> None:
        """Record that a snapshot at ``index`` exists; durable (fsync'd) when this returns.

        The snapshot file itself must be durable *before* this is called (etcd's order), so
        a marker never points at a snapshot that a crash lost.
        """
        with self._lock:
            self._check_writable()
            marker = SnapshotMarker(index, term)
            out: list[bytes] = []
            self._enc.snapshot_marker(marker, out)
            self._write(out)
            if index >= self._marker.index:
                self._marker = marker
                self._marker_seq = self._segments[-1].seq
            if index > self._last_index:
                self._last_index = index
            if self._offset >= self._segment_size:
                self._cut()
            else:
                self._sync()

    def sync(self) -> int:
        """fsync everything written so far; returns the new ``durable_index``."""
        with self._lock:
            self._check_writable()
            self._sync()
            return self._durable_index

    def release_to(self, index: int) -> list[Path]:
        """Delete segments that hold nothing at or after ``index`` + 1 and come before the
        segment holding the latest (durable) snapshot marker. ``index`` is clamped to that
        marker's index, so a segment is never released before a newer snapshot marker is
        durable. Returns the deleted paths; the deletions are durable on return."""
        with self._lock:
            self._check_writable()
            limit = min(index, self._marker.index)
            doomed: list[Path] = []
            keep_from = 0
            segs = self._segments
            while (
                keep_from < len(segs) - 1
                and segs[keep_from].seq < self._marker_seq
                and segs[keep_from + 1].first_index <= limit + 1
            ):
                doomed.append(segs[keep_from].path)
                keep_from += 1
            if doomed:
                self._fault("wal.release.before_delete")
                remove_durably(doomed)
                del self._segments[:keep_from]
                log.info("wal: released %d segment(s) up to index %d", len(doomed), limit)
            return doomed

    def close(self) -> None:
        """fsync (if healthy) and close. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self._failed is None:
                    self._sync()
            finally:
                os.close(self._fd)
                os.close(self._dir_fd)

    def __enter__(self) -> WAL:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals (lock held) --------------------------------------------------------

    def _check_writable(self) -> None:
        if self._closed:
            raise WALClosedError("wal is closed")
        if self._failed is not None:
            raise WALClosedError(f"wal failed earlier: {self._failed!r}")

    def _write(self, parts: list[bytes]) -> None:
        data = b"".join(parts)
        try:
            self._fault("wal.save.before_write")
            view = memoryview(data)
            off = self._offset
            while view:
                n = os.pwrite(self._fd, view, off)
                off += n
                view = view[n:]
        except BaseException as exc:
            self._failed = exc
            raise
        self._offset += len(data)
        self._fault("wal.save.after_write")

    def _sync(self) -> None:
        try:
            self._fault("wal.sync.before")
            started = time.perf_counter()
            sync_data(self._fd)
        except BaseException as exc:
            self._failed = exc
            raise
        self._durable_index = self._last_index
        if self.sync_observer is not None:
            self.sync_observer(time.perf_counter() - started)

    def _cut(self) -> None:
        """Close the current segment at its last record and start the next one."""
        try:
            os.ftruncate(self._fd, self._offset)
            os.fsync(self._fd)
            self._durable_index = self._last_index
            prev = self._segments[-1]
            seg, fd, offset = _new_segment(
                self._dir, prev.seq + 1, self._last_index + 1, self._enc, self._metadata,
                self._marker, self._hard_state, self._segment_size, self._fault,
            )
        except BaseException as exc:
            self._failed = exc
            raise
        os.close(self._fd)
        self._fd = fd
        self._offset = offset
        self._segments.append(seg)
        self._marker_seq = seg.seq
        log.debug("wal: cut segment %s", seg.path.name)


def _lock_dir(path: Path) -> int:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise WALError(f"{path}: wal is in use by another process") from None
    return fd


def _new_segment(
    directory: Path,
    seq: int,
    first_index: int,
    enc: Encoder,
    metadata: bytes,
    marker: SnapshotMarker,
    hard_state: HardState,
    segment_size: int,
    fault: Faults,
) -> tuple[SegmentFile, int, int]:
    """Write a complete, synced segment header under a temporary name, then rename it into
    place and sync the directory. Returns the segment, an fd open for writing, its offset."""
    final = directory / segment_name(seq, first_index)
    tmp = final.with_name(final.name + _TMP_SUFFIX)
    out: list[bytes] = []
    enc.crc_record(out)
    enc.frame_metadata(metadata, out)
    enc.snapshot_marker(marker, out)
    enc.hard_state(hard_state, out)
    data = b"".join(out)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        preallocate(fd, max(segment_size, len(data)))
        view = memoryview(data)
        off = 0
        while off < len(data):
            off += os.pwrite(fd, view[off:], off)
        os.fsync(fd)
        fault("wal.cut.before_rename")
        os.rename(tmp, final)
        fsync_dir(directory)
    except BaseException:
        os.close(fd)
        raise
    return SegmentFile(seq, first_index, final), fd, len(data)
