"""What the WAL does with damaged files: repair a torn tail of the last segment (logged),
refuse everything else with the file name and byte offset."""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import pytest

from keelson.raft.types import Entry, HardState
from keelson.wal import WAL, WALCorruptError
from keelson.wal._record import Encoder

SEG = 4096


def _build(d: Path, rng: random.Random, n: int = 200) -> tuple[list[Entry], list[int]]:
    """A WAL of ``n`` single-entry saves; returns the entries and, for each, the offset in
    its segment where its record ends (only meaningful for the last segment)."""
    wal = WAL.create(d, b"m", segment_size=SEG)
    entries: list[Entry] = []
    ends: list[int] = []
    i = 0
    while i < n or wal.segment_offset < SEG // 2:  # leave many records in the last segment
        i += 1
        e = Entry(1, i, data=rng.randbytes(rng.randrange(1, 120)))
        wal.save(None, [e])
        entries.append(e)
        ends.append(wal.segment_offset)
    wal.close()
    return entries, ends


def _last_segment_records(d: Path, entries: list[Entry], ends: list[int]) -> list[int]:
    """Indexes (0-based) of the entries that live in the last segment."""
    last = sorted(d.glob("*.wal"))[-1]
    first = int(last.name.split("-")[1].split(".")[0], 16)
    return [k for k in range(len(entries)) if entries[k].index >= first]


@pytest.mark.parametrize("mode", ["truncate", "zero", "garbage"])
def test_torn_tail_is_truncated_to_last_valid_record(
    tmp_path: Path, rng: random.Random, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    for trial in range(15):
        d = tmp_path / f"{mode}{trial}"
        entries, ends = _build(d, rng)
        in_last = _last_segment_records(d, entries, ends)
        assert len(in_last) >= 3
        last = sorted(d.glob("*.wal"))[-1]
        lo = ends[in_last[0]] - 1  # never damage the segment header
        hi = ends[in_last[-1]]
        cut = rng.randrange(lo, hi)
        if mode == "garbage":
            cut = hi  # garbage after the last record
        with open(last, "r+b") as f:
            if mode == "truncate":
                f.truncate(cut)
            elif mode == "zero":
                f.seek(cut)
                f.write(bytes(os.path.getsize(last) - cut))
            else:
                f.seek(cut)
                f.write(rng.randbytes(rng.randrange(1, 200)))
        survivors = [entries[k] for k in range(len(entries)) if ends[k] <= cut or k < in_last[0]]
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="keelson.wal"):
            wal, got = WAL.open(d, segment_size=SEG)
        assert got.entries == tuple(survivors), f"trial {trial} cut {cut}"
        if cut not in ends:
            assert "torn tail" in caplog.text and last.name in caplog.text
        # The repaired log takes appends, and reads back cleanly.
        nxt = Entry(2, len(survivors) + 1, data=b"after repair")
        wal.save(HardState(2, 0, 0), [nxt], must_sync=True)
        wal.close()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="keelson.wal"):
            wal, got = WAL.open(d, segment_size=SEG)
        assert got.entries == (*survivors, nxt)
        assert "torn" not in caplog.text
        wal.close()


def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([b ^ 0x10]))


def test_bit_flip_in_a_middle_record_of_the_last_segment_refuses(
    tmp_path: Path, rng: random.Random
) -> None:
    for trial in range(10):
        d = tmp_path / str(trial)
        entries, ends = _build(d, rng)
        in_last = _last_segment_records(d, entries, ends)
        last = sorted(d.glob("*.wal"))[-1]
        k = rng.choice(in_last[1:-2])  # a record that is not the last one
        start, end = ends[k - 1], ends[k]
        _flip(last, rng.randrange(start, end))
        before = last.read_bytes()
        with pytest.raises(WALCorruptError) as info:
            WAL.open(d, segment_size=SEG)
        assert info.value.path == str(last)
        assert str(last) in str(info.value)
        # The flip may hit the crc trailer, which breaks the *next* record's chain check.
        assert info.value.offset in (start, end)
        assert f"offset {info.value.offset}" in str(info.value)
        assert last.read_bytes() == before  # nothing was "repaired"


def test_bit_flip_in_an_earlier_segment_refuses(tmp_path: Path, rng: random.Random) -> None:
    for trial in range(10):
        d = tmp_path / str(trial)
        _build(d, rng)
        segs = sorted(d.glob("*.wal"))
        victim = segs[rng.randrange(0, len(segs) - 1)]
        size = os.path.getsize(victim)
        off = rng.randrange(0, size)
        _flip(victim, off)
        with pytest.raises(WALCorruptError) as info:
            WAL.open(d, segment_size=SEG)
        assert info.value.path == str(victim)
        assert info.value.offset <= off
        assert victim.name in str(info.value)


def test_truncated_earlier_segment_refuses(tmp_path: Path, rng: random.Random) -> None:
    _build(tmp_path, rng)
    victim = sorted(tmp_path.glob("*.wal"))[1]
    with open(victim, "r+b") as f:
        f.truncate(os.path.getsize(victim) - 3)
    with pytest.raises(WALCorruptError, match=victim.name):
        WAL.open(tmp_path, segment_size=SEG)


def test_missing_middle_segment_refuses(tmp_path: Path, rng: random.Random) -> None:
    _build(tmp_path, rng)
    segs = sorted(tmp_path.glob("*.wal"))
    assert len(segs) >= 4
    segs[1].unlink()
    with pytest.raises(WALCorruptError, match="missing segment") as info:
        WAL.open(tmp_path, segment_size=SEG)
    assert info.value.path == str(segs[2])


def test_renamed_segment_breaks_the_chain(tmp_path: Path, rng: random.Random) -> None:
    """Deleting a middle segment and renumbering the rest is caught by the crc chain."""
    _build(tmp_path, rng)
    segs = sorted(tmp_path.glob("*.wal"))
    segs[1].unlink()
    for s in segs[2:]:
        seq = int(s.name[:16], 16) - 1
        s.rename(s.with_name(f"{seq:016x}{s.name[16:]}"))
    with pytest.raises(WALCorruptError, match="crc chain broken|gap in entry"):
        WAL.open(tmp_path, segment_size=SEG)


def test_gap_in_entry_indexes_refuses_even_in_the_last_segment(tmp_path: Path) -> None:
    wal = WAL.create(tmp_path, b"m", segment_size=SEG)
    wal.save(None, [Entry(1, 1), Entry(1, 2)], must_sync=True)
    # Forge a well-checksummed record that skips index 3 (no public API can do this).
    enc = Encoder(wal._enc.prev_crc)
    out: list[bytes] = []
    enc.entry(Entry(1, 4), out)
    offset = wal.segment_offset
    wal._write(out)
    wal.close()
    with pytest.raises(WALCorruptError, match="gap in entry indexes") as info:
        WAL.open(tmp_path, segment_size=SEG)
    assert info.value.offset == offset


def test_empty_directory_refuses(tmp_path: Path) -> None:
    with pytest.raises(WALCorruptError, match="no wal segments"):
        WAL.open(tmp_path)
