"""The simulator catches real raft bugs: each test patches one known bug into the core
(monkeypatch, undone after the test) and requires the simulator to report the rule that
bug breaks within a bounded number of seeds. These tests read the core's internals
(keelson.raft.raft / log / rawnode); if the core is restructured, update the patches."""

from __future__ import annotations

import dataclasses

import pytest

from keelson.raft import log as raft_log
from keelson.raft import raft as raft_mod
from keelson.raft import rawnode as rawnode_mod
from keelson.raft.invariant import invariant
from keelson.raft.log import RaftLog
from keelson.raft.raft import Raft
from keelson.raft.rawnode import RawNode
from keelson.raft.sim import RunResult, run_seed
from keelson.raft.sim.checker import (
    COMMIT_MONOTONIC,
    ELECTION_SAFETY,
    LEADER_COMPLETENESS,
    LOG_MATCHING,
    PROGRESS,
    READ_LINEARIZABLE,
    STATE_MACHINE_SAFETY,
)
from keelson.raft.sim.run import report
from keelson.raft.types import Entry, EntryType, Message, MessageType, ReadState, Ready

MT = MessageType
STEPS = 1500


def _hunt(rule: str, nodes: int, max_seeds: int) -> RunResult:
    """Run seeds until one reports ``rule``; fail if none does."""
    seen: dict[str, int] = {}
    for seed in range(max_seeds):
        result = run_seed(seed, nodes, STEPS)
        for name in result.first:
            seen[name] = seen.get(name, 0) + 1
        if rule in result.first:
            text = report(result, STEPS)
            assert rule in text and f"--seed {seed} " in text
            return result
    pytest.fail(f"{rule} not reported in {max_seeds} seeds of {nodes} nodes; saw {seen}")


def test_two_votes_in_one_term_breaks_election_safety(monkeypatch: pytest.MonkeyPatch) -> None:
    def handle_vote_request(self: Raft, m: Message) -> None:
        # bug: ignores the vote already cast in this term
        resp = MT.VOTE_RESP if m.type == MT.VOTE else MT.PRE_VOTE_RESP
        if self.log.is_up_to_date(m.index, m.log_term):
            self.send(Message(resp, to=m.frm, term=m.term))
            if m.type == MT.VOTE:
                self.election_elapsed = 0
                self.vote = m.frm
        else:
            self.send(Message(resp, to=m.frm, term=self.term, reject=True))

    monkeypatch.setattr(raft_mod.Raft, "_handle_vote_request", handle_vote_request)
    _hunt(ELECTION_SAFETY, 3, 60)


def test_append_without_consistency_check_breaks_log_matching(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def maybe_append(
        self: RaftLog, index: int, log_term: int, committed: int, ents: tuple[Entry, ...]
    ) -> int | None:
        # bug: only checks that the previous index exists, not its term
        if not (self.first_index() - 1 <= index <= self.last_index()):
            return None
        lastnewi = index + len(ents)
        ci = self.find_conflict(ents)
        if ci:
            invariant(ci > self.committed, f"entry {ci} conflicts with committed")
            self.append(list(ents[ci - index - 1 :]))
        self.commit_to(min(committed, lastnewi))
        return lastnewi

    monkeypatch.setattr(raft_log.RaftLog, "maybe_append", maybe_append)
    _hunt(LOG_MATCHING, 3, 150)


def test_voting_for_a_stale_log_breaks_leader_completeness(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # bug: the candidate's log is never compared with the voter's
    monkeypatch.setattr(raft_log.RaftLog, "is_up_to_date", lambda self, i, t: True)
    _hunt(LEADER_COMPLETENESS, 3, 80)


def test_applying_a_different_entry_breaks_state_machine_safety(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_ready = rawnode_mod.RawNode.ready

    def ready(self: RawNode) -> Ready:
        rd = real_ready(self)
        if self.raft.id != 2 or not rd.committed_entries:
            return rd
        # bug: node 2 hands the application a different payload than it committed
        ents = tuple(
            dataclasses.replace(e, data=e.data + b"0")
            if e.type == EntryType.NORMAL and e.data
            else e
            for e in rd.committed_entries
        )
        return dataclasses.replace(rd, committed_entries=ents)

    monkeypatch.setattr(rawnode_mod.RawNode, "ready", ready)
    _hunt(STATE_MACHINE_SAFETY, 3, 20)


def test_commit_index_going_back_breaks_commit_monotonic(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def commit_to(self: RaftLog, tocommit: int) -> None:
        # bug: takes whatever the leader says, even a lower commit index
        if tocommit <= self.last_index():
            self.committed = tocommit

    monkeypatch.setattr(raft_log.RaftLog, "commit_to", commit_to)
    _hunt(COMMIT_MONOTONIC, 3, 20)


def test_read_index_without_quorum_confirmation_breaks_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def leader_read_index(self: Raft, m: Message) -> None:
        # bug: a (possibly deposed) leader answers at once, no heartbeat round
        self._respond_read_index(m, self.log.committed)

    monkeypatch.setattr(raft_mod.Raft, "_leader_read_index", leader_read_index)
    _hunt(READ_LINEARIZABLE, 3, 150)


def test_follower_using_wrong_read_index_breaks_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    real_step_follower = raft_mod.Raft._step_follower

    def step_follower(self: Raft, m: Message) -> None:
        if m.type == MT.READ_INDEX_RESP and len(m.entries) == 1:
            # bug: reads the commit field (unset) instead of the confirmed index
            self.read_states.append(ReadState(m.commit, m.entries[0].data))
            return
        real_step_follower(self, m)

    monkeypatch.setattr(raft_mod.Raft, "_step_follower", step_follower)
    _hunt(READ_LINEARIZABLE, 3, 60)


def test_election_timer_that_stops_firing_breaks_progress(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_reset = raft_mod.Raft.reset_randomized_election_timeout

    def reset_randomized_election_timeout(self: Raft) -> None:
        real_reset(self)
        if self.term > 2:
            # bug: the timeout overflows once terms grow, so nobody campaigns again
            self.randomized_election_timeout = 10**9

    monkeypatch.setattr(
        raft_mod.Raft, "reset_randomized_election_timeout", reset_randomized_election_timeout
    )
    result = _hunt(PROGRESS, 3, 20)
    assert "after faults healed" in result.first[PROGRESS].detail
