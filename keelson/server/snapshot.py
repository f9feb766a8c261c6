"""Backend images for raft snapshots: what a leader ships to a laggard, and how it lands.

Theory of operation. A raft snapshot's metadata (index, term, conf state) lives in the snap
directory and the WAL marker; its state is the backend itself, as in etcd. When the leader
sends a snapshot message, ``backend_image`` copies the LMDB environment as of one read txn
(at least as new as the snapshot index, since the leader applied it) and the message carries
those bytes. The receiver's ``install_image`` durably replaces its ``db`` with them; entries
the image already holds are skipped on apply because the image's consistent index says so.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from keelson.backend import Backend

DB_FILE = "data.mdb"


def backend_image(backend: Backend) -> bytes:
    """A consistent copy of the whole environment (one read txn), as bytes."""
    tmp = tempfile.mkdtemp(prefix="keelson-snap-")
    try:
        backend.copy_to(tmp, compact=True)
        return (Path(tmp) / DB_FILE).read_bytes()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def install_image(db_dir: Path, image: bytes) -> None:
    """Durably replace the environment in ``db_dir`` (which must be closed) by ``image``."""
    db_dir.mkdir(parents=True, exist_ok=True)
    tmp = db_dir / (DB_FILE + ".incoming")
    with open(tmp, "wb") as f:
        f.write(image)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, db_dir / DB_FILE)
    lock = db_dir / "lock.mdb"
    if lock.exists():
        lock.unlink()
    fd = os.open(db_dir, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
