"""Unit tests of RawNode's public API, Config validation and the Ready contract."""

from __future__ import annotations

import random

import pytest

from keelson.raft import (
    ConfChange,
    ConfChangeType,
    Config,
    MemoryStorage,
    Message,
    MessageType,
    ProposalDropped,
    RaftError,
    RawNode,
    StateType,
    StepLocalMessageError,
)


def _single(nid: int = 1) -> tuple[RawNode, MemoryStorage]:
    s = MemoryStorage()
    rn = RawNode(Config(id=nid, rng=random.Random(7)), s)
    rn.bootstrap([nid])
    return rn, s


def _drain(rn: RawNode, s: MemoryStorage) -> list[bytes]:
    applied: list[bytes] = []
    while rn.has_ready():
        rd = rn.ready()
        if rd.entries:
            assert rd.must_sync
        s.append(rd.entries)
        if rd.hard_state is not None:
            s.set_hard_state(rd.hard_state)
        for e in rd.committed_entries:
            if e.type.name == "CONF_CHANGE":
                rn.apply_conf_change(ConfChange.decode(e.data))
            elif e.data:
                applied.append(e.data)
        rn.advance(rd)
    return applied


@pytest.mark.parametrize(
    "kwargs",
    [{"id": 0}, {"id": 1, "heartbeat_tick": 0}, {"id": 1, "election_tick": 1},
     {"id": 1, "max_inflight_msgs": 0}, {"id": 1, "max_size_per_msg": 0}],
)
def test_config_validation(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="config"):
        Config(**kwargs)  # type: ignore[arg-type]


def test_single_node_campaign_propose_apply_restart() -> None:
    rn, s = _single()
    _drain(rn, s)
    rn.campaign()
    _drain(rn, s)
    assert rn.status().soft_state.raft_state == StateType.LEADER
    rn.propose(b"a")
    rn.propose(b"b")
    assert _drain(rn, s) == [b"a", b"b"]
    st = rn.status()
    assert st.applied == st.hard_state.commit == s.last_index()
    assert [pid for pid, _ in st.progress] == [1]
    # restart from storage: term, vote and commit survive
    rn2 = RawNode(Config(id=1, applied=st.applied, rng=random.Random(1)), s)
    assert rn2.status().hard_state == st.hard_state
    assert not rn2.has_ready()


def test_bootstrap_twice_and_bad_ids() -> None:
    rn, s = _single()
    with pytest.raises(RaftError):
        rn.bootstrap([1])
    rn2 = RawNode(Config(id=2), MemoryStorage())
    with pytest.raises(RaftError):
        rn2.bootstrap([])
    with pytest.raises(RaftError):
        rn2.bootstrap([2], [2])


def test_local_messages_rejected_from_network() -> None:
    rn, _ = _single()
    for t in (MessageType.HUP, MessageType.BEAT, MessageType.CHECK_QUORUM):
        with pytest.raises(StepLocalMessageError):
            rn.step(Message(t, to=1, frm=2, term=5))


def test_proposal_dropped_without_leader_and_pending_conf_change() -> None:
    s = MemoryStorage()
    rn = RawNode(Config(id=1), s)
    rn.bootstrap([1, 2, 3])
    with pytest.raises(ProposalDropped):
        rn.propose(b"x")
    rn1, s1 = _single()
    _drain(rn1, s1)
    rn1.campaign()
    _drain(rn1, s1)
    rn1.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER_NODE, 2))
    with pytest.raises(ProposalDropped):
        rn1.propose_conf_change(ConfChange(ConfChangeType.ADD_NODE, 3))
    _drain(rn1, s1)
    rn1.propose_conf_change(ConfChange(ConfChangeType.ADD_NODE, 3))  # accepted once applied


def test_learner_answers_a_vote_request() -> None:
    """As in etcd: a node that only knows itself as a learner may have been promoted by a
    conf change it has not applied yet, so it votes when asked (the simulator found that
    refusing can block every election); a candidate counts only voters' answers."""
    s = MemoryStorage()
    rn = RawNode(Config(id=3), s)
    rn.bootstrap([1, 2], [3])
    rn.step(Message(MessageType.VOTE, to=3, frm=1, term=5, index=10, log_term=4))
    rd = rn.ready()
    resp = [m for m in rd.messages if m.type == MessageType.VOTE_RESP]
    assert len(resp) == 1 and not resp[0].reject and resp[0].term == 5


def test_learner_never_campaigns() -> None:
    s = MemoryStorage()
    rn = RawNode(Config(id=3), s)
    rn.bootstrap([1, 2], [3])
    for _ in range(100):
        rn.tick()
    rn.campaign()
    assert rn.status().soft_state.raft_state == StateType.FOLLOWER
    assert not [m for m in rn.ready().messages if m.type != MessageType.APP_RESP]


def test_malformed_conf_change_from_peer_is_refused() -> None:
    rn, s = _single()
    _drain(rn, s)
    rn.campaign()
    _drain(rn, s)
    from keelson.raft import Entry, EntryType

    rn.step(Message(MessageType.PROP, to=1, frm=2,
                    entries=(Entry(0, 0, EntryType.CONF_CHANGE, b"\x01"),)))
    assert _drain(rn, s) == []


def test_bootstrap_hard_state_is_in_first_ready() -> None:
    s = MemoryStorage()
    rn = RawNode(Config(id=1), s)
    rn.bootstrap([1, 2])
    rd = rn.ready()
    assert rd.hard_state is not None and rd.hard_state.commit == 2 and rd.hard_state.term == 1
    assert [e.index for e in rd.entries] == [1, 2] and rd.must_sync


def test_propose_many_appends_in_order_and_sends_one_append() -> None:
    # leader of 3: one MsgProp with three entries -> one MsgApp per follower carrying all
    s = MemoryStorage()
    rn = RawNode(Config(id=1, rng=random.Random(3)), s)
    rn.bootstrap([1, 2, 3])
    _drain(rn, s)
    rn.campaign()
    _drain(rn, s)
    term = rn.status().hard_state.term + 1  # pre-vote first, then the real vote
    rn.step(Message(MessageType.PRE_VOTE_RESP, to=1, frm=2, term=term))
    _drain(rn, s)
    rn.step(Message(MessageType.VOTE_RESP, to=1, frm=2, term=term))
    _drain(rn, s)
    assert rn.status().soft_state.raft_state == StateType.LEADER
    for peer in (2, 3):  # followers caught up: appends go out in replicate state
        rn.step(Message(MessageType.APP_RESP, to=1, frm=peer,
                        term=rn.status().hard_state.term, index=s.last_index()))
    _drain(rn, s)
    before = s.last_index()
    rn.propose_many([b"a", b"b", b"c"])
    rd = rn.ready()
    assert [e.data for e in rd.entries] == [b"a", b"b", b"c"]
    assert [e.index for e in rd.entries] == [before + 1, before + 2, before + 3]
    apps = [m for m in rd.messages if m.type == MessageType.APP]
    assert sorted(m.to for m in apps) == [2, 3]
    assert all([e.data for e in m.entries][-3:] == [b"a", b"b", b"c"] for m in apps)


def test_propose_many_without_leader_drops_all() -> None:
    s = MemoryStorage()
    rn = RawNode(Config(id=1), s)
    rn.bootstrap([1, 2, 3])
    with pytest.raises(ProposalDropped):
        rn.propose_many([b"x", b"y"])
    assert s.last_index() == 0 or not any(e.data in (b"x", b"y") for e in rn.ready().entries)
