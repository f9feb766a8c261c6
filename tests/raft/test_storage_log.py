"""Unit tests of MemoryStorage, RaftLog, Inflights/Progress and quorum arithmetic."""

from __future__ import annotations

import pytest

from keelson.raft import quorum
from keelson.raft.log import RaftLog
from keelson.raft.storage import MemoryStorage
from keelson.raft.tracker import Inflights, Progress, ProgressState
from keelson.raft.types import (
    CompactedError,
    ConfState,
    Entry,
    Snapshot,
    SnapshotMetadata,
    SnapshotOutOfDate,
    UnavailableError,
)


def _storage(n: int) -> MemoryStorage:
    s = MemoryStorage()
    s.append([Entry(1 + i // 3, i + 1) for i in range(n)])
    return s


def test_memory_storage_bounds_and_errors() -> None:
    s = _storage(10)
    assert (s.first_index(), s.last_index()) == (1, 10)
    assert [e.index for e in s.entries(2, 5, 1 << 20)] == [2, 3, 4]
    assert len(s.entries(2, 5, 1)) == 1  # never empty even below the size limit
    with pytest.raises(UnavailableError):
        s.entries(2, 12, 1 << 20)
    s.create_snapshot(4, ConfState((1,)), b"x")
    s.compact(4)
    assert s.first_index() == 5
    assert s.term(4) == 2
    with pytest.raises(CompactedError):
        s.term(3)
    with pytest.raises(CompactedError):
        s.entries(4, 6, 1 << 20)
    with pytest.raises(SnapshotOutOfDate):
        s.apply_snapshot(Snapshot(SnapshotMetadata(3, 1, ConfState((1,)))))
    s.append([Entry(5, 7), Entry(5, 8)])  # truncates the conflicting tail
    assert s.last_index() == 8 and s.term(7) == 5


def test_log_maybe_append_conflict_and_commit() -> None:
    log = RaftLog(_storage(6))
    assert log.maybe_append(7, 3, 0, ()) is None  # previous entry missing
    assert log.maybe_append(6, 2, 6, (Entry(3, 7), Entry(3, 8))) == 8
    assert log.committed == 6
    # a conflicting entry at 8 replaces the tail from there
    assert log.maybe_append(7, 3, 8, (Entry(4, 8),)) == 8
    assert log.term(8) == 4 and log.committed == 8
    assert [e.index for e in log.next_committed_ents()] == [1, 2, 3, 4, 5, 6, 7, 8]
    log.applied_to(8)
    assert not log.has_next_committed_ents()
    with pytest.raises(AssertionError):
        log.applied_to(9)  # beyond commit: an invariant that -O cannot strip


def test_log_find_conflict_by_term() -> None:
    log = RaftLog(_storage(9))  # terms 1,1,1,2,2,2,3,3,3
    assert log.find_conflict_by_term(9, 2) == (6, 2)
    assert log.find_conflict_by_term(9, 5) == (9, 3)
    assert log.find_conflict_by_term(3, 0) == (0, 0)


def test_inflights_window() -> None:
    inf = Inflights(3)
    for i in (5, 7, 9):
        inf.add(i)
    assert inf.full()
    with pytest.raises(AssertionError):
        inf.add(10)
    inf.free_le(7)
    assert inf.count() == 1 and not inf.full()


def test_progress_transitions() -> None:
    pr = Progress(10, 2, False)
    assert pr.state == ProgressState.PROBE
    pr.sent_entries(12, 2)
    assert pr.is_paused()  # probe: one message then wait
    assert pr.maybe_decr_to(9, 4)
    assert pr.next == 5 and not pr.is_paused()
    assert not pr.maybe_decr_to(9, 4)  # stale rejection
    pr.maybe_update(6)
    pr.become_replicate()
    pr.sent_entries(8, 2)
    pr.sent_entries(9, 1)
    assert pr.is_paused() and pr.next == 10
    pr.become_snapshot(20)
    assert pr.is_paused()
    pr.become_probe()
    assert pr.next == 21


def test_quorum() -> None:
    assert quorum.committed_index((1, 2, 3), {1: 5, 2: 3, 3: 1}) == 3
    assert quorum.committed_index((1, 2, 3, 4), {1: 5, 2: 4, 3: 3, 4: 1}) == 3
    assert quorum.vote_result((1, 2, 3), {1: True}) == quorum.VoteResult.PENDING
    assert quorum.vote_result((1, 2, 3), {1: True, 2: True}) == quorum.VoteResult.WON
    assert quorum.vote_result((1, 2, 3), {2: False, 3: False}) == quorum.VoteResult.LOST
