"""The parallel-append rule (``keelson.raft.parallel_append.split_early``): which messages
a leader may send before its Ready is durable. Unit cases on hand-built Readies, the case
the raft core really produces with one voter and a learner, and the simulator with members
crashing between the early send and the persistence: zero violations with the rule, and
violations found when the rule is weakened (so the sweep can fail)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from keelson.raft import (
    ConfChange,
    Config,
    Entry,
    EntryType,
    HardState,
    MemoryStorage,
    Message,
    MessageType,
    RawNode,
    Ready,
    Snapshot,
    SnapshotMetadata,
    StateType,
)
from keelson.raft.parallel_append import split_early
from keelson.raft.sim import cluster as sim_cluster
from keelson.raft.sim import run_seed
from keelson.raft.sim.checker import PROGRESS
from keelson.raft.sim.cluster import RunResult, SimOptions, Simulation
from keelson.raft.sim.run import report

MT = MessageType


def _msgs() -> tuple[Message, ...]:
    return (
        Message(MT.APP, frm=1, to=2, term=3, index=9, commit=9, entries=(Entry(3, 10),)),
        Message(MT.HEARTBEAT, frm=1, to=3, term=3, commit=9),
        Message(MT.VOTE_RESP, frm=1, to=4, term=3),
        Message(MT.APP_RESP, frm=1, to=2, term=3, index=10),
        Message(MT.READ_INDEX_RESP, frm=1, to=3, term=3, index=9),
        Message(MT.HEARTBEAT_RESP, frm=1, to=2, term=3),
        Message(MT.TIMEOUT_NOW, frm=1, to=2, term=3),
        Message(MT.SNAP, frm=1, to=3, term=3),
    )


def test_leader_sends_only_appends_and_heartbeats_early_in_order() -> None:
    msgs = _msgs()
    rd = Ready(entries=(Entry(3, 10),), messages=msgs, must_sync=True)
    early, late = split_early(rd, is_leader=True, durable_term=3, durable_last_index=9)
    assert early == msgs[:2]
    assert late == msgs[2:]


def test_nothing_early_off_leader_or_when_term_or_snapshot_changes() -> None:
    msgs = _msgs()
    rd = Ready(messages=msgs, must_sync=True)
    assert split_early(rd, is_leader=False, durable_term=3, durable_last_index=9) == ((), msgs)
    moved = Ready(hard_state=HardState(term=4, vote=1, commit=9), messages=msgs)
    assert split_early(moved, is_leader=True, durable_term=3, durable_last_index=9) == (
        (),
        msgs,
    )
    snap = Snapshot(SnapshotMetadata(index=5, term=2))
    with_snap = Ready(snapshot=snap, messages=msgs)
    assert split_early(with_snap, is_leader=True, durable_term=3, durable_last_index=9) == (
        (),
        msgs,
    )
    # a hard state of the durable term (only the commit moved) does not hold anything back
    same = Ready(hard_state=HardState(term=3, vote=1, commit=9), messages=msgs)
    assert split_early(same, is_leader=True, durable_term=3, durable_last_index=9)[0] == msgs[:2]


def test_messages_of_another_term_or_beyond_the_durable_commit_wait() -> None:
    old_term = Message(MT.APP, frm=1, to=2, term=2, commit=5)
    ahead = Message(MT.APP, frm=1, to=2, term=3, commit=10, entries=(Entry(3, 10),))
    hb_ahead = Message(MT.HEARTBEAT, frm=1, to=3, term=3, commit=10)
    ok = Message(MT.HEARTBEAT, frm=1, to=3, term=3, commit=9)
    rd = Ready(messages=(old_term, ahead, hb_ahead, ok))
    early, late = split_early(rd, is_leader=True, durable_term=3, durable_last_index=9)
    assert early == (ok,)
    assert late == (old_term, ahead, hb_ahead)


def test_one_voter_with_a_learner_commits_on_append_so_the_append_waits() -> None:
    """The case the commit guard exists for, produced by the real core: a single voter
    commits its entry as it appends it, and the MsgApp to the learner carries that commit."""
    storage = MemoryStorage()
    rn = RawNode(Config(id=1, election_tick=10, heartbeat_tick=1, rng=random.Random(3)), storage)
    rn.bootstrap([1], learners=[2])

    def drain() -> None:
        while rn.has_ready():
            rd = rn.ready()
            if rd.hard_state is not None:
                storage.set_hard_state(rd.hard_state)
            storage.append(rd.entries)
            for e in rd.committed_entries:
                if e.type == EntryType.CONF_CHANGE:
                    rn.apply_conf_change(ConfChange.decode(e.data))
            rn.advance(rd)

    drain()
    rn.campaign()
    drain()
    assert rn.raft.state == StateType.LEADER
    rn.propose(b"x")
    rd = rn.ready()
    index = rd.entries[-1].index
    assert rd.committed_entries and rd.committed_entries[-1].index == index
    apps = [m for m in rd.messages if m.type == MT.APP and m.to == 2]
    assert apps and apps[0].commit == index
    early, late = split_early(
        rd,
        is_leader=True,
        durable_term=storage.hard_state.term,
        durable_last_index=storage.last_index(),
    )
    assert apps[0] in late and apps[0] not in early


def _sweep(nodes: int, seeds: range, crash: float) -> list[RunResult]:
    return [
        Simulation(
            s, SimOptions(nodes=nodes, steps=1200, parallel_append=True, mid_save_crash=crash)
        ).run()
        for s in seeds
    ]


@pytest.mark.parametrize(
    ("nodes", "seeds", "crash"),
    [(3, range(0, 40), 0.03), (5, range(0, 20), 0.03), (3, range(100, 120), 0.2),
     (1, range(0, 30), 0.2)],
)
def test_sim_with_parallel_append_and_mid_save_crashes_is_safe(
    nodes: int, seeds: range, crash: float
) -> None:
    results = _sweep(nodes, seeds, crash)
    # one voter: with 20% of saves crashing, the final phase may still be restarting it
    rules_checked = (lambda r: set(r.first) - {PROGRESS}) if nodes == 1 else (lambda r: r.first)
    failures = [report(r, 1200, True) for r in results if rules_checked(r)]
    assert not failures, "\n\n".join(failures)
    stats = {k: sum(r.stats[k] for r in results) for k in results[0].stats}
    assert stats["early_messages"] > 100, stats
    assert stats["leader_mid_save_crashes"] > 0, stats
    assert stats["acks"] > 0, stats


def test_default_sim_is_unchanged_by_the_option() -> None:
    """Off by default: the same seed gives the same trace as before the option existed
    (no extra random draws), and the option does change the schedule."""
    a = run_seed(5, 3, 400, full_trace=True)
    b = Simulation(5, SimOptions(nodes=3, steps=400)).run()
    assert a.stats["early_messages"] == 0 and a.stats["mid_save_crashes"] == 0
    assert a.stats == b.stats
    c = run_seed(5, 3, 400, full_trace=True, parallel_append=True)
    assert c.stats["early_messages"] > 0


def _hunt(monkeypatch: pytest.MonkeyPatch, rule: Any, nodes: int, max_seeds: int) -> RunResult:
    monkeypatch.setattr(sim_cluster, "split_early", rule)
    seen: dict[str, int] = {}
    for seed in range(max_seeds):
        result = Simulation(
            seed, SimOptions(nodes=nodes, steps=1500, parallel_append=True, mid_save_crash=0.2)
        ).run()
        bad = set(result.first) - {PROGRESS}
        if bad:
            assert "--parallel-append" in report(result, 1500, True)
            return result
        for name in result.first:
            seen[name] = seen.get(name, 0) + 1
    pytest.fail(f"no safety rule reported in {max_seeds} seeds; saw {seen}")


def test_acknowledging_appends_before_they_are_durable_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Control: followers answering MsgApp before their fsync lose committed entries."""

    def acks_early(rd: Ready, **_: Any) -> tuple[tuple[Message, ...], tuple[Message, ...]]:
        early = tuple(m for m in rd.messages if m.type == MT.APP_RESP)
        return early, tuple(m for m in rd.messages if m.type != MT.APP_RESP)

    _hunt(monkeypatch, acks_early, 3, 40)


def test_dropping_the_commit_guard_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Control: a lone voter telling its learners a commit before its own fsync."""

    def no_guard(rd: Ready, **kw: Any) -> tuple[tuple[Message, ...], tuple[Message, ...]]:
        kw["durable_last_index"] = 1 << 62
        return split_early(rd, **kw)

    _hunt(monkeypatch, no_guard, 1, 40)
