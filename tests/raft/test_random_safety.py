"""Seeded random runs of a 5-node cluster checking Raft's safety properties.

Random ticks, proposals, message drops, partitions, crash-restarts, membership changes of
nodes 4 and 5, and log compaction
(so lagging nodes need snapshots); after every step:
at most one leader per term, and the applied entries of every pair of nodes agree on
their common prefix (state machine safety). A failure names the seed that replays it.
"""

from __future__ import annotations

import random

import pytest

from keelson.raft.types import ConfChange, ConfChangeType, ProposalDropped, StateType
from keelson.testing.datadriven import TestCase, parse_args
from keelson.testing.raft_env import RaftEnv


def _check(env: RaftEnv, leaders: dict[int, int], seed: int) -> None:
    for nid, node in env.nodes.items():
        r = node.rn.raft
        if r.state == StateType.LEADER:
            prev = leaders.setdefault(r.term, nid)
            assert prev == nid, f"seed={seed}: two leaders {prev},{nid} in term {r.term}"
    applied = [{e.index: e for e in n.applied} for n in env.nodes.values()]
    for a in applied:
        for b in applied:
            for i in a.keys() & b.keys():
                assert a[i] == b[i], f"seed={seed}: applied entries differ at index {i}"


@pytest.mark.parametrize("seed", range(40))
def test_random_cluster_is_safe(seed: int) -> None:
    rng = random.Random(seed)
    env = RaftEnv(seed=seed)
    env.handle(TestCase("setup", "add-nodes", parse_args("5 voters=(1,2,3,4,5) index=1".split())))
    leaders: dict[int, int] = {}
    ids = sorted(env.nodes)
    for step in range(400):
        op = rng.random()
        nid = rng.choice(ids)
        if op < 0.45:
            env.nodes[nid].rn.tick()
        elif op < 0.6:
            try:
                env.nodes[nid].rn.propose(f"v{step}".encode())
            except ProposalDropped:
                pass
        elif op < 0.85:
            env._process_ready(nid)
            env._deliver(nid, drop=rng.random() < 0.1)
        elif op < 0.9:
            env.isolated = {rng.choice(ids)} if rng.random() < 0.5 else set()
        elif op < 0.92:
            env.handle(TestCase("restart", "restart", parse_args([str(nid)])))
        elif op < 0.96:
            leaders_now = [i for i in ids if env.nodes[i].rn.raft.state == StateType.LEADER]
            nid = leaders_now[0] if leaders_now else nid
            kind = rng.choice(["v", "l", "r"])
            target = rng.choice([4, 5])
            try:
                env.nodes[nid].rn.propose_conf_change(
                    ConfChange({"v": ConfChangeType.ADD_NODE, "l": ConfChangeType.ADD_LEARNER_NODE,
                                "r": ConfChangeType.REMOVE_NODE}[kind], target)
                )
            except ProposalDropped:
                pass
        elif op < 0.98:
            node = env.nodes[nid]
            idx = node.rn.raft.log.applied
            if idx > node.storage.snapshot().metadata.index:
                env.handle(TestCase("compact", "compact", parse_args([str(nid), str(idx)])))
        _check(env, leaders, seed)
    env.isolated = set()
    for _ in range(200):
        for n in ids:
            env.nodes[n].rn.tick()
        env.handle(TestCase("stabilize", "stabilize", []))
        _check(env, leaders, seed)
    assert leaders, f"seed={seed}: no leader was ever elected"
    # liveness once healed: every member applies the same entries
    lead = [n for n in env.nodes.values() if n.rn.raft.state == StateType.LEADER]
    assert len(lead) == 1, f"seed={seed}: no single leader at the end"
    members = [env.nodes[i] for i, _ in lead[0].rn.raft.tracker.sorted_items()]
    final = [[e.index for e in n.applied if e.index > 1] for n in members]
    commits = {n.rn.raft.log.committed for n in members}
    assert len(commits) == 1, f"seed={seed}: commit indexes differ {commits}"
    assert all(f[-1:] == final[0][-1:] for f in final), f"seed={seed}: not converged"

