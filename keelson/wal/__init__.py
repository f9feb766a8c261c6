"""keelson.wal: the write-ahead log of raft entries and hard state, and snapshot files.

Public API:

* ``WAL.create(dir, metadata)`` / ``WAL.open(dir) -> (WAL, WALContents)``; ``save``,
  ``save_snapshot_marker``, ``sync``, ``release_to``, ``close`` (``_wal``);
* ``GroupCommitter``: concurrent submitters, one writer thread, one fsync per group;
* ``Snapshotter``: atomic, checksummed raft snapshot files (``_snap``);
* ``read_metadata(dir)``: the log's metadata alone, verified, without replaying it;
* ``WALCorruptError``: the data dir cannot be trusted (file and offset in the message).

Layout: ``<data-dir>/member/wal/%016x-%016x.wal`` and ``<data-dir>/member/snap/*.snap``.
"""

from keelson.wal._errors import (
    SnapshotNotFoundError,
    WALClosedError,
    WALCorruptError,
    WALError,
)
from keelson.wal._group_commit import CommitStats, GroupCommitter
from keelson.wal._record import SnapshotMarker
from keelson.wal._segment import read_metadata
from keelson.wal._snap import SnapshotCorruptError, Snapshotter, snap_dir
from keelson.wal._wal import DEFAULT_SEGMENT_SIZE, WAL, Faults, WALContents, wal_dir

__all__ = [
    "DEFAULT_SEGMENT_SIZE",
    "WAL",
    "CommitStats",
    "Faults",
    "GroupCommitter",
    "SnapshotCorruptError",
    "SnapshotMarker",
    "SnapshotNotFoundError",
    "Snapshotter",
    "WALClosedError",
    "WALContents",
    "WALCorruptError",
    "WALError",
    "read_metadata",
    "snap_dir",
    "wal_dir",
]
