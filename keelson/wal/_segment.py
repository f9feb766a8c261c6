"""Reading a WAL directory back: segment names, verification, replay, torn-tail detection.

A WAL directory holds segments named ``%016x-%016x.wal`` (sequence, first raft index the
segment was cut at). Sequences are consecutive; the first one present may be above zero
after ``release_to``. Each segment opens with a CRC record (the chain value carried over from
the previous segment) and a METADATA record (identical in every segment); a segment that is
not the first also repeats the latest snapshot marker and hard state, so any suffix of the
segments is self-describing.

Replay rules, in record order across all segments:

* an ENTRY at index ``i`` replaces every entry ``>= i`` read before it (raft truncating a
  follower's log); an index beyond the next expected one is a gap and the log is corrupt;
* a SNAPSHOT marker drops entries at or below its index; later entries continue after it;
* the last HARD_STATE wins.

Damage policy (``read_log``): any record that fails to verify in a segment other than the
last, a sequence gap, a broken crc chain between segments or differing metadata raises
``WALCorruptError`` naming the file and byte offset. In the last segment, damage followed by
nothing that verifies is a torn write (a crash mid-append, a zero-filled or garbage tail):
``read_log`` reports where the valid records end and the caller truncates there. Damage
followed by a record that still verifies in the chain is a flipped bit in the middle of the
log and raises, unless the damaged span contains a whole zero-filled 512-byte sector (pages
persisted out of order by a crash before fsync: nothing in that span was acknowledged).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from keelson.raft.types import EMPTY_HARD_STATE, Entry, HardState
from keelson.wal._errors import WALCorruptError
from keelson.wal._record import (
    FRAME_OVERHEAD,
    HEADER,
    MAX_PAYLOAD,
    TRAILER,
    RecordType,
    SnapshotMarker,
    crc,
    decode_crc,
    decode_entry,
    decode_hard_state,
    decode_snapshot_marker,
    is_record_type,
)

SEGMENT_SUFFIX = ".wal"
_NAME = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.wal$")
_SECTOR = 512


def segment_name(seq: int, first_index: int) -> str:
    return f"{seq:016x}-{first_index:016x}{SEGMENT_SUFFIX}"


@dataclass(frozen=True, slots=True)
class SegmentFile:
    seq: int
    first_index: int
    path: Path


def list_segments(directory: Path) -> list[SegmentFile]:
    """The segments in ``directory`` by sequence; raises if a sequence number is missing."""
    found: list[SegmentFile] = []
    for p in sorted(directory.iterdir()):
        m = _NAME.match(p.name)
        if m is not None:
            found.append(SegmentFile(int(m.group(1), 16), int(m.group(2), 16), p))
    found.sort(key=lambda s: s.seq)
    for before, after in zip(found, found[1:], strict=False):
        if after.seq != before.seq + 1:
            raise WALCorruptError(
                after.path, 0, f"missing segment: sequence {before.seq + 1:016x} is absent"
            )
    return found


@dataclass(slots=True)
class LogContents:
    """What a WAL directory holds after replay, and where appending resumes."""

    metadata: bytes
    hard_state: HardState
    marker: SnapshotMarker
    entries: list[Entry]
    segments: list[SegmentFile]
    marker_seq: int  # sequence of the segment holding the latest marker record
    end_offset: int  # end of the last valid record of the last segment
    end_crc: int  # chain value after that record
    torn_reason: str | None = None  # set when the last segment has a tail to truncate
    torn_size: int = 0  # bytes in the last segment file (to report what is cut)
    last_index: int = field(default=0)


class _Replay:
    __slots__ = ("base", "entries", "hard_state", "marker", "marker_seq")

    def __init__(self) -> None:
        self.base = 0  # index of entries[0] (or of the next entry when empty)
        self.entries: list[Entry] = []
        self.hard_state = EMPTY_HARD_STATE
        self.marker = SnapshotMarker()
        self.marker_seq = 0

    def entry(self, e: Entry) -> str | None:
        nxt = self.base + len(self.entries)
        if e.index == nxt:
            self.entries.append(e)
        elif e.index > nxt:
            return f"gap in entry indexes: entry {e.index} follows {nxt - 1}"
        elif e.index >= self.base:
            del self.entries[e.index - self.base :]
            self.entries.append(e)
        else:
            self.base = e.index
            self.entries = [e]
        return None

    def snapshot(self, m: SnapshotMarker, seq: int) -> None:
        if m.index < self.marker.index:
            return
        self.marker = m
        self.marker_seq = seq
        cut = m.index + 1 - self.base
        if cut > 0:
            if cut >= len(self.entries):
                self.entries = []
                self.base = m.index + 1
            else:
                del self.entries[:cut]
                self.base += cut


def _zero_sector_in(buf: bytes, start: int, end: int) -> bool:
    first = -(-start // _SECTOR) * _SECTOR
    zero = bytes(_SECTOR)
    for s in range(first, end - _SECTOR + 1, _SECTOR):
        if buf[s : s + _SECTOR] == zero:
            return True
    return False


def _valid_record_after(buf: bytes, start: int, limit: int) -> int | None:
    """Offset of the first frame at or after ``start`` that verifies against the chain value
    stored just before it, or None."""
    view = memoryview(buf)
    n = len(buf)
    for y in range(max(start, TRAILER.size), limit):
        if y + FRAME_OVERHEAD > n or not is_record_type(buf[y + 4]):
            continue
        length = HEADER.unpack_from(buf, y)[0]
        end = y + HEADER.size + length
        if end + TRAILER.size > n:
            continue
        prev = TRAILER.unpack_from(buf, y - TRAILER.size)[0]
        if crc(view[y:end], prev) == TRAILER.unpack_from(buf, end)[0]:
            return y
    return None


class _Damage(Exception):
    def __init__(self, offset: int, reason: str) -> None:
        self.offset = offset
        self.reason = reason


def read_log(directory: Path) -> LogContents:
    """Verify and replay every segment in ``directory``.

    Raises ``WALCorruptError`` for damage that is not a torn tail of the last segment, and
    if the directory holds no segment at all.
    """
    segments = list_segments(directory)
    if not segments:
        raise WALCorruptError(directory, 0, "no wal segments")
    replay = _Replay()
    metadata: bytes | None = None
    prev_crc: int | None = None
    end_offset = 0
    torn_reason: str | None = None
    torn_size = 0
    for i, seg in enumerate(segments):
        is_last = i == len(segments) - 1
        buf = seg.path.read_bytes()
        if i == 0:
            replay.base = seg.first_index
        state = _SegmentScan(seg, buf, prev_crc, metadata, replay)
        try:
            state.run()
        except _Damage as d:
            if not is_last or state.records < 2:
                raise WALCorruptError(seg.path, d.offset, d.reason) from None
            content_end = len(buf.rstrip(b"\x00"))
            later = _valid_record_after(buf, d.offset + 1, content_end)
            if later is not None and not _zero_sector_in(buf, d.offset, later):
                raise WALCorruptError(
                    seg.path, d.offset, f"{d.reason} (valid records follow at {later})"
                ) from None
            torn_reason = d.reason
            torn_size = len(buf)
        metadata = state.metadata
        prev_crc = state.prev_crc
        end_offset = state.offset
    if metadata is None or prev_crc is None:  # a segment with no header record at all
        raise WALCorruptError(segments[-1].path, 0, "segment has no header records")
    last_index = max(replay.base + len(replay.entries) - 1, replay.marker.index)
    return LogContents(
        metadata=metadata,
        hard_state=replay.hard_state,
        marker=replay.marker,
        entries=replay.entries,
        segments=segments,
        marker_seq=replay.marker_seq,
        end_offset=end_offset,
        end_crc=prev_crc,
        torn_reason=torn_reason,
        torn_size=torn_size,
        last_index=last_index,
    )


def read_metadata(directory: Path) -> bytes:
    """The metadata record of the first segment, verified (crc chain and checksum), without
    reading the rest of the log: what a restarting member needs to learn its ids before
    the full replay. Raises ``WALCorruptError`` if it is missing or damaged."""
    segments = list_segments(directory)
    if not segments:
        raise WALCorruptError(directory, 0, "no wal segments")
    seg = segments[0]
    with open(seg.path, "rb") as f:
        head = f.read(_METADATA_READ)
    state = _SegmentScan(seg, head, None, None, _Replay(), max_records=2)
    try:
        state.run()
    except _Damage as d:
        raise WALCorruptError(seg.path, d.offset, d.reason) from None
    if state.metadata is None:
        raise WALCorruptError(seg.path, state.offset, "segment has no metadata record")
    return state.metadata


_METADATA_READ = 64 * 1024
"""Bytes read for ``read_metadata``: the crc and metadata records are a few dozen bytes."""


class _SegmentScan:
    """Walks the frames of one segment, verifying the chain and feeding the replay."""

    def __init__(
        self,
        seg: SegmentFile,
        buf: bytes,
        prev_crc: int | None,
        metadata: bytes | None,
        replay: _Replay,
        max_records: int | None = None,
    ) -> None:
        self.seg = seg
        self.max_records = max_records
        self.buf = buf
        self.prev_crc = prev_crc
        self.metadata = metadata
        self.replay = replay
        self.offset = 0  # end of the last verified record
        self.records = 0

    def run(self) -> None:
        buf = self.buf
        view = memoryview(buf)
        n = len(buf)
        seq = self.seg.seq
        off = 0
        while off < n and self.records != self.max_records:
            if off + HEADER.size > n:
                raise _Damage(off, "truncated record header")
            length, rtype = HEADER.unpack_from(buf, off)
            if rtype == 0 and length == 0:
                if len(buf.rstrip(b"\x00")) <= off:
                    break  # the preallocated, never-written rest of the segment
                raise _Damage(off, "zero-filled region followed by data")
            if not is_record_type(rtype):
                raise _Damage(off, f"unknown record type {rtype}")
            end = off + HEADER.size + length
            if length > MAX_PAYLOAD or end + TRAILER.size > n:
                raise _Damage(off, f"record length {length} runs past the end of the file")
            stored = TRAILER.unpack_from(buf, end)[0]
            payload = view[off + HEADER.size : end]
            chain = self.prev_crc
            if self.records == 0:
                if rtype != RecordType.CRC:
                    raise _Damage(off, "segment does not start with a crc record")
                try:
                    carried = decode_crc(payload)
                except ValueError as exc:
                    raise _Damage(off, str(exc)) from None
                if chain is None:
                    chain = carried
                elif carried != chain:
                    raise _Damage(
                        off,
                        f"crc chain broken: segment continues {carried:#010x}, "
                        f"previous segment ended at {chain:#010x}",
                    )
            if chain is None:  # unreachable: the first record set it
                raise _Damage(off, "no crc chain value")
            if crc(view[off:end], chain) != stored:
                raise _Damage(off, "crc mismatch")
            try:
                self._apply(rtype, payload, seq)
            except ValueError as exc:
                # The record verified, so this is not a torn write: never repair it.
                raise WALCorruptError(self.seg.path, off, str(exc)) from None
            self.prev_crc = stored
            self.records += 1
            off = end + TRAILER.size
            self.offset = off

    def _apply(self, rtype: int, payload: memoryview, seq: int) -> None:
        if self.records == 0:
            return  # the crc record, checked by the caller
        if self.records == 1:
            if rtype != RecordType.METADATA:
                raise ValueError("second record of a segment is not metadata")
            md = bytes(payload)
            if self.metadata is not None and md != self.metadata:
                raise ValueError("metadata differs from the previous segment's")
            self.metadata = md
            return
        if rtype == RecordType.ENTRY:
            reason = self.replay.entry(decode_entry(payload))
            if reason is not None:
                raise ValueError(reason)
        elif rtype == RecordType.HARD_STATE:
            self.replay.hard_state = decode_hard_state(payload)
        elif rtype == RecordType.SNAPSHOT:
            self.replay.snapshot(decode_snapshot_marker(payload), seq)
        else:
            raise ValueError(f"unexpected {RecordType(rtype).name} record")
