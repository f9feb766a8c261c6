"""The simulator's invariant checker on hand-made histories: each rule accepts a correct
history and reports the one broken case it exists for."""

from __future__ import annotations

from keelson.raft.sim.checker import (
    COMMIT_MONOTONIC,
    ELECTION_SAFETY,
    LEADER_COMPLETENESS,
    LOG_MATCHING,
    PROGRESS,
    READ_LINEARIZABLE,
    STATE_MACHINE_SAFETY,
    Checker,
    TermAt,
    write_id,
)
from keelson.raft.types import Entry, EntryType


def _log(*terms: int, first: int = 1) -> TermAt:
    """A log holding entries first.. with the given terms (index first-1 is the dummy)."""

    def term_at(i: int) -> int | None:
        if i == 0:
            return 0
        if first <= i < first + len(terms):
            return terms[i - first]
        return None

    return term_at


def _w(index: int, term: int, w: int) -> Entry:
    return Entry(term, index, EntryType.NORMAL, b"w%d" % w)


def _rules(c: Checker) -> list[str]:
    return sorted(c.first)


def test_one_leader_per_term() -> None:
    c = Checker()
    c.observe_leader(1, 2, 1, 0, _log())
    c.observe_leader(1, 2, 1, 0, _log())  # the same leader seen again
    c.observe_leader(2, 3, 1, 0, _log())
    assert c.ok
    c.observe_leader(3, 3, 1, 0, _log())
    assert _rules(c) == [ELECTION_SAFETY]
    assert "nodes 2 and 3 both lead term 3" in c.first[ELECTION_SAFETY].detail


def test_log_matching_accepts_identical_copies_and_flags_different_data() -> None:
    c = Checker()
    c.observe_entries(1, [_w(1, 1, 1), _w(2, 1, 2)], 0)
    c.observe_entries(2, [_w(1, 1, 1)], 0)
    c.observe_entries(2, [_w(2, 1, 2), _w(3, 2, 3)], 1)
    assert c.ok
    c.observe_entries(3, [_w(3, 2, 99)], 1)
    assert _rules(c) == [LOG_MATCHING]


def test_log_matching_flags_same_entry_after_different_predecessor() -> None:
    c = Checker()
    c.observe_entries(1, [_w(4, 3, 7)], 2)
    c.observe_entries(2, [_w(4, 3, 7)], None)  # predecessor compacted: nothing to compare
    assert c.ok
    c.observe_entries(2, [_w(4, 3, 7)], 1)
    assert _rules(c) == [LOG_MATCHING]
    assert "follows term 2" in c.first[LOG_MATCHING].detail


def test_leader_completeness_on_election() -> None:
    c = Checker()
    c.observe_commit(1, 2, 3, _log(1, 1, 2))  # node 1 in term 2 commits 1..3
    c.observe_leader(2, 3, 1, 3, _log(1, 1, 2))
    assert c.ok
    c.observe_leader(3, 4, 1, 2, _log(1, 1))  # lacks index 3
    assert _rules(c) == [LEADER_COMPLETENESS]
    c2 = Checker()
    c2.observe_commit(1, 2, 3, _log(1, 1, 2))
    c2.observe_leader(3, 4, 1, 3, _log(1, 1, 3))  # holds a different entry at 3
    assert _rules(c2) == [LEADER_COMPLETENESS]


def test_leader_completeness_ignores_entries_committed_in_its_own_or_later_terms() -> None:
    c = Checker()
    c.observe_commit(1, 5, 3, _log(1, 1, 5))  # committed in term 5
    c.observe_leader(2, 4, 1, 2, _log(1, 1))  # a stale leader of term 4 need not hold it
    assert c.ok


def test_leader_completeness_for_commits_seen_while_leading() -> None:
    c = Checker()
    c.observe_leader(2, 4, 1, 2, _log(1, 1))
    fresh = c.observe_commit(1, 3, 3, _log(1, 1, 3))  # a stale term-3 commit seen late
    assert fresh == [(1, 1, 3), (2, 1, 3), (3, 3, 3)]
    c.check_leader_holds(2, 4, fresh, 2, _log(1, 1))
    assert _rules(c) == [LEADER_COMPLETENESS]


def test_leader_completeness_skips_compacted_entries() -> None:
    c = Checker()
    c.observe_commit(1, 2, 4, _log(1, 1, 2, 2))
    c.observe_leader(2, 3, 4, 4, _log(2, first=4))  # 1..3 compacted into a snapshot
    assert c.ok


def test_committed_entries_must_agree() -> None:
    c = Checker()
    c.observe_commit(1, 2, 2, _log(1, 2))
    c.observe_commit(2, 2, 2, _log(1, 2))
    assert c.ok
    c.observe_commit(3, 3, 2, _log(1, 3))
    assert _rules(c) == [STATE_MACHINE_SAFETY]


def test_applied_entries_must_agree() -> None:
    c = Checker()
    c.observe_apply(1, _w(1, 1, 1))
    c.observe_apply(2, _w(1, 1, 1))
    assert c.ok
    c.observe_apply(3, _w(1, 1, 2))
    assert _rules(c) == [STATE_MACHINE_SAFETY]


def test_snapshot_state_must_be_the_applied_history() -> None:
    c = Checker()
    c.observe_apply(1, Entry(1, 1, EntryType.CONF_CHANGE, b"x"))
    c.observe_apply(1, _w(2, 1, 10))
    c.observe_apply(1, Entry(2, 3))  # an empty entry of a new leader
    c.observe_apply(1, _w(4, 2, 11))
    c.observe_state(2, 4, [10, 11], "installed snapshot")
    c.observe_state(2, 3, [10], "snapshot")
    c.observe_state(2, 9, [1, 2, 3], "snapshot")  # beyond the known history: no opinion
    assert c.ok
    c.observe_state(2, 4, [10], "installed snapshot")
    assert _rules(c) == [STATE_MACHINE_SAFETY]


def test_commit_index_never_decreases() -> None:
    c = Checker()
    c.observe_commit(1, 1, 5, _log(1, 1, 1, 1, 1))
    c.observe_commit(1, 1, 5, _log(1, 1, 1, 1, 1))
    c.observe_persisted_commit(1, 4)
    c.observe_restart(1, 4)  # the volatile commit 5 was never persisted: fine
    c.observe_commit(1, 1, 4, _log(1, 1, 1, 1, 1))
    assert c.ok
    c.observe_commit(1, 1, 3, _log(1, 1, 1, 1, 1))
    assert _rules(c) == [COMMIT_MONOTONIC]


def test_persisted_commit_never_decreases_and_restart_starts_from_it() -> None:
    c = Checker()
    c.observe_persisted_commit(1, 4)
    c.observe_persisted_commit(1, 3)
    assert _rules(c) == [COMMIT_MONOTONIC]
    c2 = Checker()
    c2.observe_persisted_commit(1, 4)
    c2.observe_restart(1, 2)
    assert _rules(c2) == [COMMIT_MONOTONIC]


def test_read_must_see_writes_acknowledged_before_it_began() -> None:
    c = Checker()
    c.read_started(b"r0")  # nothing acknowledged yet: any state will do
    c.write_acked(1, 5)
    c.read_started(b"r1")
    c.write_acked(2, 6)  # acknowledged after r1 began: r1 need not see it
    c.read_served(b"r0", 1, 0, [])
    c.read_served(b"r1", 1, 5, [1])
    c.read_started(b"r2")
    c.read_abandoned(b"r2")
    c.read_served(b"r2", 1, 0, [])  # an abandoned read is not checked
    assert c.ok
    c.read_started(b"r3")
    c.read_served(b"r3", 2, 5, [1])
    assert _rules(c) == [READ_LINEARIZABLE]
    assert "w2" in c.first[READ_LINEARIZABLE].detail


def test_read_state_must_hold_the_write_not_just_the_index() -> None:
    c = Checker()
    c.write_acked(7, 3)
    c.read_started(b"r1")
    c.read_served(b"r1", 1, 3, [5, 6])
    assert _rules(c) == [READ_LINEARIZABLE]


def test_progress_and_first_violation_kept() -> None:
    c = Checker()
    c.step, c.time = 10, 1000
    c.progress_failed("no leader")
    c.step = 11
    c.progress_failed("still no leader")
    assert _rules(c) == [PROGRESS]
    assert c.first[PROGRESS].step == 10
    assert len(c.violations) == 2
    assert str(c.first[PROGRESS]).startswith("progress at step 10 (t=1000)")


def test_write_id() -> None:
    assert write_id(_w(1, 1, 42)) == 42
    assert write_id(Entry(1, 1)) is None
    assert write_id(Entry(1, 1, EntryType.CONF_CHANGE, b"w1")) is None
    assert write_id(Entry(1, 1, EntryType.NORMAL, b"wx")) is None
