"""The fault schedule: which fault to inject next, and the shapes partitions take.

Partitions are lists of cut (from, to) links over the member ids (sorted), built by one of:

* ``isolate``: one node (often the leader) cut off both ways;
* ``split``: a minority and a majority that cannot talk to each other;
* ``one-way``: one node can send but not receive, or receive but not send;
* ``bridge``: two halves that only one node can reach both of;
* ``random``: every directed link cut independently with probability 0.3.

``inject_fault`` draws the next action with fixed weights (``choose_fault``) and carries it
out on the simulation: a partition (healed after a random while), a crash (the member
restarts later from what it persisted), a crash of the leader, a membership change (one
at a time: add a learner or a voter with a fresh id, promote a learner, remove a learner
or a voter, keeping at least three voters), a leadership transfer, a change of network
quality, or a compaction that leaves lagging members needing a snapshot. Everything is
drawn from the run's ``random.Random`` in a fixed order.
"""

from __future__ import annotations

import enum
import random
from typing import TYPE_CHECKING

from keelson.raft.sim.clock import TICK, Event, EventKind
from keelson.raft.sim.network import PROFILES
from keelson.raft.sim.node import SimNode
from keelson.raft.sim.trace import fmt_conf_change
from keelson.raft.types import ConfChange, ConfChangeType, ProposalDropped, RaftError

if TYPE_CHECKING:
    from keelson.raft.sim.cluster import Simulation

MAX_NEW_MEMBERS = 4
MIN_VOTERS = 3


class Fault(enum.Enum):
    PARTITION = "partition"
    HEAL = "heal"
    CRASH = "crash"
    CRASH_LEADER = "crash-leader"
    CONF_CHANGE = "conf-change"
    TRANSFER = "transfer-leader"
    NETWORK = "network"
    COMPACT = "compact"


_WEIGHTS: tuple[tuple[Fault, int], ...] = (
    (Fault.PARTITION, 20),
    (Fault.HEAL, 8),
    (Fault.CRASH, 9),
    (Fault.CRASH_LEADER, 5),
    (Fault.CONF_CHANGE, 16),
    (Fault.TRANSFER, 14),
    (Fault.NETWORK, 10),
    (Fault.COMPACT, 10),
)
_TOTAL = sum(w for _, w in _WEIGHTS)


def choose_fault(rng: random.Random) -> Fault:
    x = rng.randrange(_TOTAL)
    for fault, w in _WEIGHTS:
        if x < w:
            return fault
        x -= w
    raise AssertionError("unreachable")


Links = list[tuple[int, int]]


def _both_ways(a: list[int], b: list[int]) -> Links:
    return [(x, y) for x in a for y in b] + [(y, x) for x in a for y in b]


def make_partition(rng: random.Random, ids: list[int], leader: int | None) -> tuple[Links, str]:
    """A partition of ``ids`` (sorted); ``leader`` is isolated more often than others."""
    ids = sorted(ids)
    if len(ids) < 2:
        return [], "none"
    kind = rng.randrange(6)
    if kind <= 1:
        victim = leader if leader is not None and kind == 0 else rng.choice(ids)
        rest = [i for i in ids if i != victim]
        return _both_ways([victim], rest), f"isolate {victim}"
    if kind == 2:
        shuffled = ids[:]
        rng.shuffle(shuffled)
        k = rng.randint(1, len(ids) // 2)
        minority, majority = sorted(shuffled[:k]), sorted(shuffled[k:])
        return _both_ways(minority, majority), f"split {minority} | {majority}"
    if kind == 3:
        victim = leader if leader is not None and rng.random() < 0.5 else rng.choice(ids)
        rest = [i for i in ids if i != victim]
        if rng.random() < 0.5:
            return [(victim, r) for r in rest], f"one-way: {victim} cannot send"
        return [(r, victim) for r in rest], f"one-way: {victim} cannot receive"
    if kind == 4 and len(ids) >= 3:
        shuffled = ids[:]
        rng.shuffle(shuffled)
        bridge = shuffled[0]
        half = (len(ids) - 1) // 2
        a, b = sorted(shuffled[1 : 1 + half]), sorted(shuffled[1 + half :])
        return _both_ways(a, b), f"bridge {bridge} between {a} and {b}"
    links = [(x, y) for x in ids for y in ids if x != y and rng.random() < 0.3]
    return links, "random links cut: " + ",".join(f"{x}>{y}" for x, y in links)


def inject_fault(sim: Simulation) -> None:
    """Carry out the next fault of the schedule on ``sim``."""
    fault = choose_fault(sim.rng)
    if fault == Fault.PARTITION:
        ids = [i for i in sorted(sim.nodes) if not sim.nodes[i].retired]
        leader = sim.leader()
        links, desc = make_partition(sim.rng, ids, leader.id if leader else None)
        gen = sim.net.cut(links, desc)
        sim.stats["partitions"] += 1
        sim.trace.add(f"fault: partition {desc}")
        sim.agenda.after(sim.rng.randint(2 * TICK, 25 * TICK), Event(EventKind.HEAL, arg=gen))
    elif fault == Fault.HEAL:
        if sim.net.partition:
            sim.net.heal()
            sim.trace.add("fault: heal partition")
    elif fault in (Fault.CRASH, Fault.CRASH_LEADER):
        leader = sim.leader()
        live = [n for n in sim.live() if not n.retired]
        victim = leader if fault == Fault.CRASH_LEADER else None
        if victim is None and live:
            victim = sim.rng.choice(live)
        if victim is not None:
            sim.crash(victim, "fault")
            sim.agenda.after(sim.rng.randint(TICK, 15 * TICK), Event(EventKind.RESTART, victim.id))
    elif fault == Fault.CONF_CHANGE:
        _conf_change(sim)
    elif fault == Fault.TRANSFER:
        _transfer(sim)
    elif fault == Fault.NETWORK:
        sim.net.quality = sim.rng.choice(PROFILES)
        sim.trace.add(f"fault: network {sim.net.quality.describe()}")
    elif fault == Fault.COMPACT:
        live = [n for n in sim.live() if not n.retired]
        if live:
            node = sim.rng.choice(live)
            sim.compact(node, 0)


def _conf_change(sim: Simulation) -> None:
    """Propose one membership change, unless one is still in flight."""
    now = sim.agenda.now
    if sim.conf_inflight is not None and now - sim.conf_inflight[0] < 30 * TICK:
        return
    voters, learners = list(sim.view.voters), list(sim.view.learners)
    new_budget = sim.next_id <= sim.options.nodes + MAX_NEW_MEMBERS
    rng = sim.rng
    choices: list[ConfChange] = []
    if learners:
        lid = rng.choice(learners)
        choices = [ConfChange(ConfChangeType.ADD_NODE, lid)] * 3 + [
            ConfChange(ConfChangeType.REMOVE_NODE, lid)
        ]
    else:
        if len(voters) > MIN_VOTERS:
            choices.append(ConfChange(ConfChangeType.REMOVE_NODE, rng.choice(voters)))
        if new_budget and len(voters) <= sim.options.nodes:
            choices.append(ConfChange(ConfChangeType.ADD_LEARNER_NODE, sim.next_id))
            choices.append(ConfChange(ConfChangeType.ADD_LEARNER_NODE, sim.next_id))
            choices.append(ConfChange(ConfChangeType.ADD_NODE, sim.next_id))
    if not choices:
        return
    cc = rng.choice(choices)
    leader = sim.leader()
    proposer = leader
    if proposer is None:
        live = [n for n in sim.live() if not n.retired]
        if not live:
            return
        proposer = rng.choice(live)
    rn = proposer.rn
    assert rn is not None
    try:
        rn.propose_conf_change(cc)
    except ProposalDropped as exc:
        sim.trace.add(f"fault: {fmt_conf_change(cc)} via n{proposer.id} dropped: {exc}")
        return
    except Exception as exc:
        sim.core_failure(proposer, "propose_conf_change", exc)
        return
    sim.conf_inflight = (now, cc)
    sim.stats["conf_changes"] += 1
    sim.trace.add(f"fault: propose {fmt_conf_change(cc)} via n{proposer.id}")
    sim.process(proposer)
    if cc.node_id == sim.next_id:
        # the new member starts empty, as etcd's does after "member add"
        sim.next_id += 1
        newcomer = SimNode(cc.node_id, sim.rng, sim.max_msg_size, sim.max_inflight)
        sim.nodes[cc.node_id] = newcomer
        sim.start_member(newcomer, None)


def _transfer(sim: Simulation) -> None:
    leader = sim.leader()
    if leader is None or leader.rn is None:
        return
    voters = [v for v in leader.rn.raft.tracker.voters if v != leader.id]
    if not voters:
        return
    to = sim.rng.choice(voters)
    sim.stats["transfers"] += 1
    sim.trace.add(f"fault: transfer leadership n{leader.id} -> n{to}")
    try:
        leader.rn.transfer_leader(to)
    except RaftError as exc:
        sim.trace.add(f"transfer refused: {exc}")
        return
    except Exception as exc:
        sim.core_failure(leader, "transfer_leader", exc)
        return
    sim.process(leader)
