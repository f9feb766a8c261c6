"""Round trips through the WAL: entries, hard state and snapshot markers across segments,
follower truncation, reopen-and-continue, segment release, locking."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from keelson.raft.types import Entry, EntryType, HardState
from keelson.wal import WAL, SnapshotMarker, WALError, wal_dir

SEG = 4096


def _entry(index: int, term: int, rng: random.Random) -> Entry:
    kind = EntryType.CONF_CHANGE if rng.random() < 0.05 else EntryType.NORMAL
    return Entry(term, index, kind, rng.randbytes(rng.randrange(0, 300)))


class Model:
    """What the log must read back as: raft's replace-the-suffix semantics."""

    def __init__(self) -> None:
        self.entries: dict[int, Entry] = {}
        self.hard_state = HardState()
        self.marker = SnapshotMarker()

    def save(self, hs: HardState | None, entries: list[Entry]) -> None:
        if entries:
            for i in [i for i in self.entries if i >= entries[0].index]:
                del self.entries[i]
            for e in entries:
                self.entries[e.index] = e
        if hs is not None:
            self.hard_state = hs

    def snapshot(self, marker: SnapshotMarker) -> None:
        self.marker = marker
        for i in [i for i in self.entries if i <= marker.index]:
            del self.entries[i]

    def expected(self) -> tuple[Entry, ...]:
        return tuple(self.entries[i] for i in sorted(self.entries))


def _drive(wal: WAL, model: Model, rng: random.Random, steps: int) -> None:
    term = max(model.hard_state.term, 1)
    for _ in range(steps):
        last = wal.last_index
        r = rng.random()
        if r < 0.1 and last - 3 > model.marker.index:
            start = rng.randrange(model.marker.index + 1, last + 1)  # follower truncation
            term += 1
        elif r < 0.15 and last > model.marker.index:
            marker = SnapshotMarker(rng.randrange(model.marker.index + 1, last + 1), term)
            wal.save_snapshot_marker(marker.index, marker.term)
            model.snapshot(marker)
            continue
        else:
            start = last + 1
        entries = [_entry(start + k, term, rng) for k in range(rng.randrange(0, 6))]
        hs = HardState(term, 1, max(0, start - 1)) if rng.random() < 0.7 else None
        wal.save(hs, entries, must_sync=rng.random() < 0.3)
        model.save(hs, entries)


def test_round_trip_across_segments(tmp_path: Path, rng: random.Random) -> None:
    d = wal_dir(tmp_path)
    wal = WAL.create(d, b"cluster=1,member=2", segment_size=SEG)
    model = Model()
    _drive(wal, model, rng, 400)
    wal.close()
    assert len(list(d.glob("*.wal"))) > 5  # really crossed segments
    wal2, got = WAL.open(d, segment_size=SEG)
    assert got.metadata == b"cluster=1,member=2"
    assert got.hard_state == model.hard_state
    assert got.snapshot == model.marker
    assert got.entries == model.expected()
    # Continue appending after reopen: the crc chain carries on.
    _drive(wal2, model, rng, 200)
    wal2.close()
    wal3, got = WAL.open(d, segment_size=SEG)
    assert got.entries == model.expected()
    assert got.hard_state == model.hard_state
    wal3.close()


def test_overwrite_suffix_reads_back_new_entries(tmp_path: Path) -> None:
    wal = WAL.create(tmp_path, b"m", segment_size=SEG)
    wal.save(HardState(1, 1, 0), [Entry(1, i, data=b"old%d" % i) for i in range(1, 11)], True)
    wal.save(HardState(2, 2, 4), [Entry(2, i, data=b"new%d" % i) for i in range(6, 8)], True)
    assert wal.last_index == 7
    wal.close()
    _, got = WAL.open(tmp_path, segment_size=SEG)
    assert [(e.index, e.term, e.data) for e in got.entries] == [
        *[(i, 1, b"old%d" % i) for i in range(1, 6)],
        (6, 2, b"new6"),
        (7, 2, b"new7"),
    ]
    assert got.hard_state == HardState(2, 2, 4)


def test_overwrite_durable_index_drops_until_sync(tmp_path: Path) -> None:
    wal = WAL.create(tmp_path, b"m", segment_size=SEG)
    wal.save(None, [Entry(1, i) for i in range(1, 11)], must_sync=True)
    assert wal.durable_index == 10
    wal.save(None, [Entry(2, 4)], must_sync=False)
    assert wal.durable_index == 3
    assert wal.sync() == 4
    wal.close()


def test_rejects_gaps_and_writes_below_snapshot(tmp_path: Path) -> None:
    wal = WAL.create(tmp_path, b"m", segment_size=SEG)
    wal.save(None, [Entry(1, 1), Entry(1, 2)], must_sync=True)
    with pytest.raises(ValueError, match="gap"):
        wal.save(None, [Entry(1, 4)])
    with pytest.raises(ValueError, match="contiguous"):
        wal.save(None, [Entry(1, 3), Entry(1, 5)])
    wal.save_snapshot_marker(2, 1)
    with pytest.raises(ValueError, match="snapshot"):
        wal.save(None, [Entry(2, 2)])
    wal.save(None, [Entry(1, 3)], must_sync=True)
    wal.close()
    _, got = WAL.open(tmp_path)
    assert [e.index for e in got.entries] == [3]


def test_snapshot_beyond_log_then_entries_continue(tmp_path: Path) -> None:
    """A follower that receives a snapshot ahead of its log continues after it."""
    wal = WAL.create(tmp_path, b"m", segment_size=SEG)
    wal.save(None, [Entry(1, i) for i in range(1, 6)], must_sync=True)
    wal.save_snapshot_marker(100, 3)
    assert wal.last_index == 100
    wal.save(HardState(3, 0, 100), [Entry(3, 101), Entry(3, 102)], must_sync=True)
    wal.close()
    _, got = WAL.open(tmp_path)
    assert got.snapshot == SnapshotMarker(100, 3)
    assert [e.index for e in got.entries] == [101, 102]


def test_release_only_after_a_durable_marker(tmp_path: Path, rng: random.Random) -> None:
    wal = WAL.create(tmp_path, b"m", segment_size=SEG)
    for i in range(1, 301):
        wal.save(HardState(1, 1, i - 1), [Entry(1, i, data=rng.randbytes(64))])
    wal.sync()
    before = wal.segment_paths()
    assert len(before) > 4
    assert wal.release_to(250) == []  # no snapshot marker yet: nothing may go
    wal.save_snapshot_marker(150, 1)
    released = wal.release_to(250)  # clamped to the marker at 150
    assert released and all(not p.exists() for p in released)
    assert released == before[: len(released)]
    kept = wal.segment_paths()
    wal.close()
    _, got = WAL.open(tmp_path, segment_size=SEG)
    assert got.snapshot == SnapshotMarker(150, 1)
    assert [e.index for e in got.entries] == list(range(151, 301))
    assert [p.name for p in sorted(tmp_path.glob("*.wal"))] == [p.name for p in kept]


def test_release_keeps_entries_after_marker_in_old_segments(tmp_path: Path) -> None:
    """A marker far behind the log: segments holding entries above it are kept."""
    wal = WAL.create(tmp_path, b"m", segment_size=SEG)
    for i in range(1, 201):
        wal.save(None, [Entry(1, i, data=b"x" * 64)])
    wal.save_snapshot_marker(20, 1)
    wal.release_to(1000)
    wal.close()
    _, got = WAL.open(tmp_path, segment_size=SEG)
    assert [e.index for e in got.entries] == list(range(21, 201))


def test_one_process_at_a_time_and_no_double_create(tmp_path: Path) -> None:
    wal = WAL.create(tmp_path, b"m")
    with pytest.raises(WALError, match="in use"):
        WAL.open(tmp_path)
    wal.close()
    with pytest.raises(WALError, match="already exists"):
        WAL.create(tmp_path, b"m")
    wal2, got = WAL.open(tmp_path)
    assert got.entries == () and got.metadata == b"m"
    wal2.close()


def test_leftover_temporary_segment_is_ignored(tmp_path: Path) -> None:
    """A crash between writing a new segment and renaming it leaves a .tmp file."""
    seen: list[str] = []

    def faults(point: str) -> None:
        seen.append(point)
        if point == "wal.cut.before_rename":
            raise OSError("injected crash")

    wal = WAL.create(tmp_path, b"m", segment_size=SEG)
    wal._fault = faults  # failpoint hook; the constructor argument does the same
    with pytest.raises(OSError, match="injected"):
        for i in range(1, 1000):
            wal.save(None, [Entry(1, i, data=b"y" * 100)])
    last = wal.last_index
    assert list(tmp_path.glob("*.tmp"))
    wal.close()
    wal2, got = WAL.open(tmp_path, segment_size=SEG)
    assert not list(tmp_path.glob("*.tmp"))
    assert [e.index for e in got.entries] == list(range(1, last + 1))
    wal2.close()


def test_read_metadata_alone_and_its_damage(tmp_path: Path) -> None:
    from keelson.wal import WALCorruptError, read_metadata

    d = wal_dir(tmp_path)
    with pytest.raises(WALCorruptError):
        read_metadata(tmp_path)  # no segment at all
    rng = random.Random(5)
    w = WAL.create(d, b"member+cluster:16", segment_size=SEG)
    for i in range(1, 60):  # several segments
        w.save(HardState(1, 0, i), [_entry(i, 1, rng)], must_sync=False)
    w.close()
    assert len(list(d.glob("*.wal"))) > 1
    assert read_metadata(d) == b"member+cluster:16"
    first = sorted(d.glob("*.wal"))[0]
    raw = bytearray(first.read_bytes())
    at = raw.index(b"member+cluster:16")
    raw[at] ^= 0x01
    first.write_bytes(bytes(raw))
    with pytest.raises(WALCorruptError, match="crc mismatch"):
        read_metadata(d)
