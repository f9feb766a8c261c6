"""Snapshot files: atomic save, checksum verification, broken files, keeping the newest N."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from keelson.raft.types import ConfState, Snapshot, SnapshotMetadata
from keelson.wal import SnapshotMarker, Snapshotter, snap_dir
from keelson.wal._snap import SnapshotCorruptError


def _snap(index: int, term: int = 1, data: bytes = b"") -> Snapshot:
    meta = SnapshotMetadata(index, term, ConfState((1, 2, 3), (7,)))
    return Snapshot(meta, data or b"state@%d" % index * 100)


def test_round_trip_and_newest(tmp_path: Path) -> None:
    s = Snapshotter(snap_dir(tmp_path))
    assert s.load_newest() is None
    for i in (5, 10, 7):
        s.save(_snap(i))
    got = s.load_newest()
    assert got == _snap(10)
    assert s.load(s.snapshot_paths()[-1]) == _snap(5)


def test_save_streams_chunks(tmp_path: Path) -> None:
    s = Snapshotter(tmp_path)
    chunks = [bytes([i]) * 1000 for i in range(50)]
    s.save_stream(SnapshotMetadata(3, 2, ConfState((1,))), iter(chunks))
    got = s.load_newest()
    assert got is not None and got.data == b"".join(chunks)
    assert got.metadata == SnapshotMetadata(3, 2, ConfState((1,)))


def test_failed_save_leaves_nothing(tmp_path: Path) -> None:
    s = Snapshotter(tmp_path)
    s.save(_snap(1))

    def chunks() -> Iterator[bytes]:
        yield b"a" * 100
        raise OSError("disk gone")

    with pytest.raises(OSError):
        s.save_stream(SnapshotMetadata(2, 1), chunks())
    assert sorted(p.name for p in tmp_path.iterdir()) == [s.snapshot_paths()[0].name]
    assert s.load_newest() == _snap(1)


def test_leftover_temporary_file_is_removed(tmp_path: Path) -> None:
    Snapshotter(tmp_path).save(_snap(1))
    (tmp_path / "0000000000000001-0000000000000009.snap.tmp").write_bytes(b"partial")
    s = Snapshotter(tmp_path)
    assert not list(tmp_path.glob("*.tmp"))
    assert s.load_newest() == _snap(1)


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty"])
def test_corrupt_newest_is_renamed_broken_and_older_used(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    s = Snapshotter(tmp_path)
    s.save(_snap(1))
    newest = s.save(_snap(2))
    raw = bytearray(newest.read_bytes())
    if damage == "flip":
        raw[len(raw) // 2] ^= 1
    elif damage == "truncate":
        del raw[-5:]
    else:
        raw = bytearray()
    newest.write_bytes(bytes(raw))
    with pytest.raises(SnapshotCorruptError, match=newest.name):
        s.load(newest)
    with caplog.at_level(logging.WARNING, logger="keelson.wal"):
        got = s.load_newest()
    assert got == _snap(1)
    assert newest.name in caplog.text
    assert not newest.exists()
    assert newest.with_name(newest.name + ".broken").exists()


def test_all_corrupt_gives_none(tmp_path: Path) -> None:
    s = Snapshotter(tmp_path)
    p = s.save(_snap(1))
    p.write_bytes(b"KSNAP\x01garbage" * 10)
    assert s.load_newest() is None


def test_only_snapshots_the_wal_knows_of(tmp_path: Path) -> None:
    s = Snapshotter(tmp_path)
    s.save(_snap(1, term=1))
    s.save(_snap(2, term=1))
    got = s.load_newest([SnapshotMarker(1, 1), SnapshotMarker(2, 5)])
    assert got == _snap(1, term=1)


def test_keeps_the_newest_n(tmp_path: Path) -> None:
    s = Snapshotter(tmp_path, keep=3)
    for i in range(1, 8):
        s.save(_snap(i))
        assert len(s.snapshot_paths()) == min(i, 3)
    assert [s.load(p).metadata.index for p in s.snapshot_paths()] == [7, 6, 5]


def test_empty_snapshot_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Snapshotter(tmp_path).save(Snapshot())
    with pytest.raises(ValueError):
        Snapshotter(tmp_path, keep=0)
