"""File-system steps the WAL and the snapshotter share, each one fsync-correct.

POSIX only makes a new, renamed or deleted name durable once the *directory* is fsync'd;
every function here that changes a name does that before it returns.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make creations, renames and deletions of names in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: Path) -> None:
    """Create ``path`` and any missing parents, fsync'ing each parent that gained a name."""
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            pass
        fsync_dir(d.parent)


def preallocate(fd: int, size: int) -> None:
    """Reserve ``size`` bytes for the file (zero-filled), so appends do not grow it.

    Falls back to ``ftruncate`` where the file system cannot ``fallocate``.
    """
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
        if os.fstat(fd).st_size < size:
            os.ftruncate(fd, size)


def sync_data(fd: int) -> None:
    """Flush the file's data (and the size, if it changed) to stable storage."""
    if hasattr(os, "fdatasync"):
        os.fdatasync(fd)
    else:  # pragma: no cover - non-Linux
        os.fsync(fd)


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """``os.write`` until every byte is written (a write may be partial)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def remove_durably(paths: list[Path]) -> None:
    """Delete ``paths`` (all in one directory, or none) and fsync that directory."""
    if not paths:
        return
    for p in paths:
        p.unlink(missing_ok=True)
    fsync_dir(paths[0].parent)
