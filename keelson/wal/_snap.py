"""Raft snapshot files: ``<data-dir>/member/snap/%016x-%016x.snap`` (term, index).

Theory of operation. ``save`` writes the snapshot under a temporary name, fsyncs it, renames
it into place and fsyncs the directory, so a snapshot file either exists complete or not at
all. Only then may the caller write the WAL's snapshot marker (``WAL.save_snapshot_marker``)
and release older WAL segments. After a successful save the oldest files beyond ``keep`` are
deleted: an old snapshot goes only once a newer one is durable.

File layout (little endian)::

    magic    b"KSNAP\\x01"
    index u64, term u64, n_voters u32, n_learners u32, voters u64*n, learners u64*n
    data     opaque application bytes (streamed)
    data_len u64, crc u32   crc32c of every byte before the crc

``load_newest`` follows etcd: a file that fails to verify is renamed ``*.snap.broken``
(logged at WARNING) and the next older one is tried.
"""

from __future__ import annotations

import logging
import os
import re
import struct
from collections.abc import Collection, Iterable
from pathlib import Path

from keelson.raft.types import ConfState, Snapshot, SnapshotMetadata
from keelson.wal._errors import WALError
from keelson.wal._files import fsync_dir, make_dirs, remove_durably, write_all
from keelson.wal._record import SnapshotMarker, crc

log = logging.getLogger(__name__)

_MAGIC = b"KSNAP\x01"
_HEAD = struct.Struct("<QQII")
_ID = struct.Struct("<Q")
_TRAILER = struct.Struct("<QI")
_SIZE = struct.Struct("<Q")
_CRC = struct.Struct("<I")
_NAME = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.snap$")
_TMP_SUFFIX = ".tmp"
BROKEN_SUFFIX = ".broken"


class SnapshotCorruptError(WALError):
    """A snapshot file failed to verify; ``path`` names it."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        super().__init__(f"snapshot corrupt: {path}: {reason}")


def snap_dir(data_dir: str | os.PathLike[str]) -> Path:
    """Where a member keeps raft snapshots: ``<data-dir>/member/snap``."""
    return Path(data_dir) / "member" / "snap"


def _name(meta: SnapshotMetadata) -> str:
    return f"{meta.term:016x}-{meta.index:016x}.snap"


class Snapshotter:
    """Saves and loads raft snapshots in one directory. Not thread-safe: one caller."""

    def __init__(self, directory: str | os.PathLike[str], *, keep: int = 5) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self._dir = Path(directory)
        self._keep = keep
        make_dirs(self._dir)
        remove_durably(sorted(p for p in self._dir.iterdir() if p.name.endswith(_TMP_SUFFIX)))

    @property
    def directory(self) -> Path:
        return self._dir

    def save(self, snapshot: Snapshot) -> Path:
        """Durably write ``snapshot``; returns its path. See ``save_stream``."""
        return self.save_stream(snapshot.metadata, (snapshot.data,))

    def save_stream(self, metadata: SnapshotMetadata, chunks: Iterable[bytes]) -> Path:
        """Durably write a snapshot whose data arrives in ``chunks`` (never all in memory).

        When this returns the file is complete, fsync'd and its name durable; then files
        older than the newest ``keep`` are deleted. Raises ``ValueError`` for an empty
        (index 0) snapshot.
        """
        if metadata.index == 0:
            raise ValueError("cannot save an empty snapshot (index 0)")
        final = self._dir / _name(metadata)
        tmp = final.with_name(final.name + _TMP_SUFFIX)
        cs = metadata.conf_state
        head = bytearray(_MAGIC)
        head += _HEAD.pack(metadata.index, metadata.term, len(cs.voters), len(cs.learners))
        for node in (*cs.voters, *cs.learners):
            head += _ID.pack(node)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            write_all(fd, head)
            c = crc(bytes(head), 0)
            size = 0
            for chunk in chunks:
                write_all(fd, chunk)
                c = crc(chunk, c)
                size += len(chunk)
            tail = _SIZE.pack(size)
            write_all(fd, tail + _CRC.pack(crc(tail, c)))
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        os.rename(tmp, final)
        fsync_dir(self._dir)
        self._release_old()
        return final

    def snapshot_paths(self) -> list[Path]:
        """Snapshot files, newest (highest index, then term) first."""
        found: list[tuple[int, int, Path]] = []
        for p in self._dir.iterdir():
            m = _NAME.match(p.name)
            if m is not None:
                found.append((int(m.group(2), 16), int(m.group(1), 16), p))
        found.sort(reverse=True)
        return [p for _, _, p in found]

    def load(self, path: Path) -> Snapshot:
        """Read and verify one snapshot file; raises ``SnapshotCorruptError``."""
        buf = path.read_bytes()
        minimum = len(_MAGIC) + _HEAD.size + _TRAILER.size
        if len(buf) < minimum:
            raise SnapshotCorruptError(path, f"file too short ({len(buf)} bytes)")
        if not buf.startswith(_MAGIC):
            raise SnapshotCorruptError(path, "bad magic")
        size, stored = _TRAILER.unpack_from(buf, len(buf) - _TRAILER.size)
        if crc(memoryview(buf)[: len(buf) - 4], 0) != stored:
            raise SnapshotCorruptError(path, "checksum mismatch")
        index, term, nv, nl = _HEAD.unpack_from(buf, len(_MAGIC))
        ids_at = len(_MAGIC) + _HEAD.size
        data_at = ids_at + (nv + nl) * _ID.size
        if data_at + size + _TRAILER.size != len(buf):
            raise SnapshotCorruptError(path, "lengths do not add up")
        ids = struct.unpack_from(f"<{nv + nl}Q", buf, ids_at)
        meta = SnapshotMetadata(index, term, ConfState(tuple(ids[:nv]), tuple(ids[nv:])))
        if path.name != _name(meta):
            raise SnapshotCorruptError(path, f"name does not match contents ({_name(meta)})")
        return Snapshot(meta, buf[data_at : data_at + size])

    def load_newest(self, markers: Collection[SnapshotMarker] | None = None) -> Snapshot | None:
        """The newest snapshot that verifies, or None if there is none.

        With ``markers`` (the WAL's snapshot markers), only snapshots the WAL knows of are
        considered, as etcd's ``LoadNewestAvailable``. A file that fails to verify is renamed
        to ``*.broken`` with a WARNING and the next older one is tried.
        """
        wanted = None if markers is None else {(m.index, m.term) for m in markers}
        for path in self.snapshot_paths():
            if wanted is not None:
                m = _NAME.match(path.name)
                assert m is not None
                if (int(m.group(2), 16), int(m.group(1), 16)) not in wanted:
                    continue
            try:
                return self.load(path)
            except SnapshotCorruptError as exc:
                broken = path.with_name(path.name + BROKEN_SUFFIX)
                log.warning("snap: %s; renaming it to %s", exc, broken.name)
                os.rename(path, broken)
                fsync_dir(self._dir)
        return None

    def _release_old(self) -> None:
        doomed = self.snapshot_paths()[self._keep :]
        if doomed:
            remove_durably(doomed)
            log.info("snap: released %d old snapshot file(s)", len(doomed))
