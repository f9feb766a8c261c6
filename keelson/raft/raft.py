"""The Raft state machine: follower, pre-candidate, candidate, leader.

``step(msg)`` is the only way state changes besides ``tick()``. Messages first pass a term
check common to all roles (a higher term makes us follow, a lower one is answered only so a
stale leader or candidate learns it is stale), then go to the role's step function. Output
accumulates in ``msgs`` and ``read_states`` and is collected by ``RawNode.ready()``.

Safety rules kept here, as in the Raft paper and etcd's raft:

* a vote is granted at most once per term, and only to a candidate whose log is at least as
  up to date as ours; learners never grant votes and never campaign;
* pre-vote: a candidate first asks "would you vote for me at term+1?" without bumping any
  term, so a partitioned node cannot inflate terms and disrupt the cluster on return;
* leader lease (check-quorum): a node that heard from a leader within an election timeout
  ignores (pre)vote requests with a higher term unless the election is a leadership
  transfer; a leader steps down if a quorum was not active within an election timeout;
* a leader commits only entries of its own term by counting replicas (Figure 8); older
  entries are committed indirectly;
* one unapplied conf change at a time: a second conf change proposal is refused with
  ProposalDropped (when proposed locally) or dropped (when forwarded by a follower).
"""

from __future__ import annotations

import dataclasses
import enum

from keelson.raft.config import Config
from keelson.raft.invariant import invariant
from keelson.raft.log import RaftLog
from keelson.raft.quorum import VoteResult, vote_result
from keelson.raft.read_only import ReadOnly
from keelson.raft.storage import Storage
from keelson.raft.tracker import PS, Progress, ProgressTracker
from keelson.raft.types import (
    MT,
    NONE,
    ST,
    CompactedError,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    ProposalDropped,
    RaftError,
    ReadState,
    Snapshot,
    SnapshotTemporarilyUnavailable,
    SoftState,
)

TRANSFER_CONTEXT = b"transfer"


class CampaignType(enum.Enum):
    PRE_ELECTION = "pre"
    ELECTION = "election"
    TRANSFER = "transfer"


class Raft:
    def __init__(self, config: Config, storage: Storage) -> None:
        self.config = config
        self.id = config.id
        self.storage = storage
        self.log = RaftLog(storage, config.max_committed_size_per_ready)
        self.tracker = ProgressTracker(config.max_inflight_msgs)
        self.term = 0
        self.vote = NONE
        self.lead = NONE
        self.state = ST.FOLLOWER
        self.is_learner = False
        self.msgs: list[Message] = []
        self.read_states: list[ReadState] = []
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = config.election_tick
        self.lead_transferee = NONE
        self.pending_conf_index = 0
        self.uncommitted_size = 0
        self.read_only = ReadOnly()
        self.pending_read_index_messages: list[Message] = []

        hs, cs = storage.initial_state()
        self._apply_conf_state(cs)
        if not hs.is_empty():
            if not (self.log.committed <= hs.commit <= self.log.last_index()):
                raise ValueError(
                    f"hard state commit {hs.commit} is out of range "
                    f"[{self.log.committed}, {self.log.last_index()}]"
                )
            self.log.committed = hs.commit
            self.term = hs.term
            self.vote = hs.vote
        if config.applied > 0:
            if config.applied > self.log.committed:
                raise ValueError(
                    f"config: applied {config.applied} is beyond commit {self.log.committed}"
                )
            self.log.applied_to(max(config.applied, self.log.applied))
        self.become_follower(self.term, NONE)

    # ------------------------------------------------------------ state views
    def soft_state(self) -> SoftState:
        return SoftState(self.lead, self.state)

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def is_leader(self) -> bool:
        return self.state == ST.LEADER

    def promotable(self) -> bool:
        pr = self.tracker.progress.get(self.id)
        return pr is not None and not pr.is_learner and self.log.unstable.snapshot is None

    def bootstrap(self, voters: list[int], learners: list[int]) -> None:
        if self.log.last_index() != 0 or self.term != 0:
            raise RaftError("bootstrap: storage is not empty")
        if not voters:
            raise RaftError("bootstrap: at least one voter is required")
        if set(voters) & set(learners):
            raise RaftError("bootstrap: a node cannot be both voter and learner")
        if any(n <= 0 for n in voters + learners):
            raise RaftError("bootstrap: node ids must be positive")
        self.become_follower(1, NONE)
        ents: list[Entry] = []
        ccs = [ConfChange(ConfChangeType.ADD_NODE, v) for v in sorted(set(voters))]
        ccs += [ConfChange(ConfChangeType.ADD_LEARNER_NODE, n) for n in sorted(set(learners))]
        for i, cc in enumerate(ccs):
            ents.append(Entry(1, i + 1, EntryType.CONF_CHANGE, cc.encode()))
        self.log.append(ents)
        self.log.committed = len(ents)
        for cc in ccs:
            self.apply_conf_change(cc)

    # ------------------------------------------------------------ sending
    def send(self, m: Message) -> None:
        """Queue ``m`` with our id as sender (unless it is forwarded) and our term (except
        (pre)votes, which carry their own, and proposals/read requests, which carry none).

        The messages of the replication path (appends, heartbeats and their responses) are
        instead built whole by their callers, ``frm=self.id, term=self.term``, and appended
        to ``msgs`` directly: stamping them here would build each message twice."""
        frm = self.id if m.frm == NONE else m.frm
        term = m.term
        if m.type in (MT.VOTE, MT.VOTE_RESP, MT.PRE_VOTE, MT.PRE_VOTE_RESP):
            invariant(m.term != 0, "term must be set for %s", m.type.name)
        elif m.type not in (MT.PROP, MT.READ_INDEX):
            invariant(m.term == 0, "term must not be set for %s", m.type.name)
            term = self.term
        if frm == m.frm and term == m.term:
            self.msgs.append(m)
            return
        self.msgs.append(
            Message(
                m.type,
                to=m.to,
                frm=frm,
                term=term,
                log_term=m.log_term,
                index=m.index,
                entries=m.entries,
                commit=m.commit,
                snapshot=m.snapshot,
                reject=m.reject,
                reject_hint=m.reject_hint,
                context=m.context,
            )
        )

    def send_append(self, to: int, send_if_empty: bool = True) -> bool:
        pr = self.tracker.progress[to]
        if pr.is_paused():
            return False
        if not send_if_empty and pr.next == self.log.last_index() + 1:
            return False  # the follower has been sent everything (the common case)
        prev_index = pr.next - 1
        try:
            prev_term = self.log.term(prev_index)
            ents = self.log.entries(pr.next, self.config.max_size_per_msg)
        except CompactedError:
            return self._send_snapshot(to, pr)
        if not ents and not send_if_empty:
            return False
        self.msgs.append(
            Message(
                MT.APP,
                to=to,
                frm=self.id,
                term=self.term,
                index=prev_index,
                log_term=prev_term,
                entries=tuple(ents),
                commit=self.log.committed,
            )
        )
        pr.sent_entries(ents[-1].index if ents else prev_index, len(ents))
        if pr.state == PS.PROBE:
            pr.probe_sent = True
        return True

    def _send_snapshot(self, to: int, pr: Progress) -> bool:
        if not pr.recent_active:
            return False
        try:
            snap = self.log.snapshot()
        except SnapshotTemporarilyUnavailable:
            return False
        invariant(not snap.is_empty(), "need a non-empty snapshot")
        self.send(Message(MT.SNAP, to=to, snapshot=snap))
        pr.become_snapshot(snap.metadata.index)
        return True

    def bcast_append(self) -> None:
        for pid in sorted(self.tracker.progress):
            if pid != self.id:
                self.send_append(pid)

    def bcast_heartbeat(self, ctx: bytes | None = None) -> None:
        if ctx is None:
            ctx = self.read_only.last_pending_request_ctx()
        for pid, pr in self.tracker.sorted_items():
            if pid == self.id:
                continue
            commit = min(pr.match, self.log.committed)
            self.msgs.append(
                Message(
                    MT.HEARTBEAT, to=pid, frm=self.id, term=self.term, commit=commit, context=ctx
                )
            )

    # ------------------------------------------------------------ role changes
    def reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = NONE
        self.lead = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.reset_randomized_election_timeout()
        self.lead_transferee = NONE
        self.tracker.reset_votes()
        last = self.log.last_index()
        for pid, old in list(self.tracker.progress.items()):
            pr = Progress(last + 1, self.config.max_inflight_msgs, old.is_learner)
            if pid == self.id:
                pr.match = last
                pr.recent_active = True
            self.tracker.progress[pid] = pr
        self.pending_conf_index = 0
        self.uncommitted_size = 0
        self.read_only = ReadOnly()
        self.pending_read_index_messages = []

    def reset_randomized_election_timeout(self) -> None:
        et = self.config.election_tick
        self.randomized_election_timeout = et + self.config.rng.randrange(et)

    def become_follower(self, term: int, lead: int) -> None:
        self.reset(term)
        self.lead = lead
        self.state = ST.FOLLOWER

    def become_pre_candidate(self) -> None:
        invariant(self.state != ST.LEADER, "invalid transition [leader -> pre-candidate]")
        self.tracker.reset_votes()
        self.lead = NONE
        self.state = ST.PRE_CANDIDATE

    def become_candidate(self) -> None:
        invariant(self.state != ST.LEADER, "invalid transition [leader -> candidate]")
        self.reset(self.term + 1)
        self.vote = self.id
        self.state = ST.CANDIDATE

    def become_leader(self) -> None:
        invariant(self.state != ST.FOLLOWER, "invalid transition [follower -> leader]")
        self.reset(self.term)
        self.lead = self.id
        self.state = ST.LEADER
        self.tracker.progress[self.id].become_replicate()
        self.pending_conf_index = self.log.last_index()
        invariant(self.append_entry([Entry(0, 0)]), "empty entry was dropped")

    # ------------------------------------------------------------ ticking
    def tick(self) -> None:
        if self.state == ST.LEADER:
            self._tick_heartbeat()
        else:
            self._tick_election()

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.promotable() and self.election_elapsed >= self.randomized_election_timeout:
            self.election_elapsed = 0
            self.step(Message(MT.HUP, frm=self.id))

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.config.election_tick:
            self.election_elapsed = 0
            if self.config.check_quorum:
                self.step(Message(MT.CHECK_QUORUM, frm=self.id))
            if self.state == ST.LEADER and self.lead_transferee != NONE:
                self.lead_transferee = NONE  # transfer did not finish in time: abort
        if self.state != ST.LEADER:
            return
        if self.heartbeat_elapsed >= self.config.heartbeat_tick:
            self.heartbeat_elapsed = 0
            self.step(Message(MT.BEAT, frm=self.id))

    # ------------------------------------------------------------ elections
    def hup(self, kind: CampaignType) -> None:
        if self.state == ST.LEADER or not self.promotable():
            return
        if self._has_unapplied_conf_changes():
            return
        if kind == CampaignType.PRE_ELECTION and not self.config.pre_vote:
            kind = CampaignType.ELECTION
        self.campaign(kind)

    def _has_unapplied_conf_changes(self) -> bool:
        if self.log.applied >= self.log.committed:
            return False
        lo = max(self.log.applied + 1, self.log.first_index())
        ents = self.log.slice(lo, self.log.committed + 1, 2**63 - 1)
        return any(e.type == EntryType.CONF_CHANGE for e in ents)

    def campaign(self, kind: CampaignType) -> None:
        if kind == CampaignType.PRE_ELECTION:
            self.become_pre_candidate()
            vote_type = MT.PRE_VOTE
            term = self.term + 1
        else:
            self.become_candidate()
            vote_type = MT.VOTE
            term = self.term
        self.tracker.record_vote(self.id, True)
        if self.tracker.tally_votes()[2] == VoteResult.WON:
            if kind == CampaignType.PRE_ELECTION:
                self.campaign(CampaignType.ELECTION)
            else:
                self.become_leader()
            return
        ctx = TRANSFER_CONTEXT if kind == CampaignType.TRANSFER else b""
        for v in self.tracker.voters:
            if v == self.id:
                continue
            self.send(
                Message(
                    vote_type,
                    to=v,
                    term=term,
                    index=self.log.last_index(),
                    log_term=self.log.last_term(),
                    context=ctx,
                )
            )

    # ------------------------------------------------------------ step
    def step(self, m: Message) -> None:
        if m.term == 0:
            pass  # local message
        elif m.term > self.term:
            if m.type in (MT.VOTE, MT.PRE_VOTE):
                force = m.context == TRANSFER_CONTEXT
                in_lease = (
                    self.config.check_quorum
                    and self.lead != NONE
                    and self.election_elapsed < self.config.election_tick
                )
                if not force and in_lease:
                    return  # leader lease: we heard from a leader recently
            if m.type == MT.PRE_VOTE:
                pass  # never change term on a pre-vote request
            elif m.type == MT.PRE_VOTE_RESP and not m.reject:
                pass  # a granted pre-vote carries the future term; counted below
            elif m.type in (MT.APP, MT.HEARTBEAT, MT.SNAP):
                self.become_follower(m.term, m.frm)
            else:
                self.become_follower(m.term, NONE)
        elif m.term < self.term:
            if (self.config.check_quorum or self.config.pre_vote) and m.type in (
                MT.HEARTBEAT,
                MT.APP,
            ):
                # tell a stale leader about the new term so it steps down
                self.send(Message(MT.APP_RESP, to=m.frm))
            elif m.type == MT.PRE_VOTE:
                self.send(Message(MT.PRE_VOTE_RESP, to=m.frm, term=self.term, reject=True))
            return

        if m.type == MT.HUP:
            self.hup(CampaignType.PRE_ELECTION)
        elif m.type in (MT.VOTE, MT.PRE_VOTE):
            self._handle_vote_request(m)
        elif self.state == ST.LEADER:
            self._step_leader(m)
        elif self.state in (ST.CANDIDATE, ST.PRE_CANDIDATE):
            self._step_candidate(m)
        else:
            self._step_follower(m)

    def _handle_vote_request(self, m: Message) -> None:
        resp = MT.VOTE_RESP if m.type == MT.VOTE else MT.PRE_VOTE_RESP
        can_vote = (
            self.vote == m.frm
            or (self.vote == NONE and self.lead == NONE)
            or (m.type == MT.PRE_VOTE and m.term > self.term)
        )
        # No check that this node is a voter: a learner promoted (or a voter added) by a
        # conf change it has not applied yet must still be able to help elect a leader.
        # Whether its vote counts is the candidate's decision; learners never campaign.
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            self.send(Message(resp, to=m.frm, term=m.term))
            if m.type == MT.VOTE:
                self.election_elapsed = 0
                self.vote = m.frm
        else:
            self.send(Message(resp, to=m.frm, term=self.term, reject=True))

    def _drop(self, m: Message, why: str) -> None:
        """Refuse a proposal: raise to a local caller, drop a forwarded one silently."""
        if m.frm in (NONE, self.id):
            raise ProposalDropped(why)

    # ------------------------------------------------------------ leader
    def _step_leader(self, m: Message) -> None:
        if m.type == MT.BEAT:
            self.bcast_heartbeat()
            return
        if m.type == MT.CHECK_QUORUM:
            if not self.tracker.quorum_active():
                self.become_follower(self.term, NONE)
            for pid, p in self.tracker.progress.items():
                p.recent_active = pid == self.id
            return
        if m.type == MT.PROP:
            self._leader_propose(m)
            return
        if m.type == MT.READ_INDEX:
            self._leader_read_index(m)
            return

        pr = self.tracker.progress.get(m.frm)
        if pr is None:
            return
        if m.type == MT.APP_RESP:
            self._handle_append_response(m, pr)
        elif m.type == MT.HEARTBEAT_RESP:
            pr.recent_active = True
            pr.probe_sent = False
            # A lost MsgApp would otherwise keep a full window full forever: the
            # follower is alive, so free one slot and let replication go on.
            if pr.state == PS.REPLICATE and pr.inflights.full():
                pr.inflights.free_first_one()
            if pr.match < self.log.last_index():
                self.send_append(m.frm)
            if not m.context:
                return
            acks = self.read_only.recv_ack(m.frm, m.context)
            if acks is None:
                return
            votes = {v: True for v in acks}
            votes[self.id] = True
            if vote_result(self.tracker.voters, votes) != VoteResult.WON:
                return
            for rs in self.read_only.advance(m.context):
                self._respond_read_index(rs.req, rs.index)
        elif m.type == MT.SNAP_STATUS:
            if pr.state != PS.SNAPSHOT:
                return
            if m.reject:
                pr.pending_snapshot = 0
            pr.become_probe()
            pr.probe_sent = True  # wait for an append response or heartbeat before probing
        elif m.type == MT.UNREACHABLE:
            if pr.state == PS.REPLICATE:
                pr.become_probe()
        elif m.type == MT.TRANSFER_LEADER:
            self._leader_transfer(m, pr)

    def _leader_propose(self, m: Message) -> None:
        if not m.entries:
            raise RaftError("stepped empty MsgProp")
        if self.id not in self.tracker.progress:
            self._drop(m, "proposal dropped: this node was removed from the cluster")
            return
        if self.lead_transferee != NONE:
            self._drop(m, "proposal dropped: leadership transfer in progress")
            return
        ents = list(m.entries)
        for i, e in enumerate(ents):
            if e.type != EntryType.CONF_CHANGE:
                continue
            try:
                ConfChange.decode(e.data)
            except ValueError as exc:
                self._drop(m, f"proposal dropped: malformed conf change: {exc}")
                return
            if self.pending_conf_index > self.log.applied:
                self._drop(
                    m,
                    "proposal dropped: a conf change is already pending "
                    f"(index {self.pending_conf_index}, applied {self.log.applied})",
                )
                return
            self.pending_conf_index = self.log.last_index() + i + 1
        if not self.append_entry(ents):
            self._drop(m, "proposal dropped: too many uncommitted entries")
            return
        self.bcast_append()

    def append_entry(self, ents: list[Entry]) -> bool:
        li = self.log.last_index()
        size = sum(len(e.data) for e in ents)
        if (
            self.uncommitted_size > 0
            and size > 0
            and self.uncommitted_size + size > self.config.max_uncommitted_entries_size
        ):
            return False
        self.uncommitted_size += size
        stamped = [Entry(self.term, li + 1 + i, e.type, e.data) for i, e in enumerate(ents)]
        li = self.log.append(stamped)
        self.tracker.progress[self.id].maybe_update(li)
        self.maybe_commit()
        return True

    def reduce_uncommitted_size(self, ents: tuple[Entry, ...]) -> None:
        if self.state != ST.LEADER:
            return
        self.uncommitted_size = max(0, self.uncommitted_size - sum(len(e.data) for e in ents))

    def maybe_commit(self) -> bool:
        return self.log.maybe_commit(self.tracker.committed(), self.term)

    def committed_entry_in_current_term(self) -> bool:
        return self.log.zero_term_on_err(self.log.committed) == self.term

    def _leader_read_index(self, m: Message) -> None:
        if self.tracker.is_singleton():
            self._respond_read_index(m, self.log.committed)
            return
        if not self.committed_entry_in_current_term():
            # the commit index of a new leader may lag; wait until it commits in its term
            self.pending_read_index_messages.append(m)
            return
        self.read_only.add_request(self.log.committed, m)
        self.read_only.recv_ack(self.id, m.entries[0].data)
        self.bcast_heartbeat(m.entries[0].data)

    def _respond_read_index(self, req: Message, index: int) -> None:
        ctx = req.entries[0].data
        if req.frm in (NONE, self.id):
            self.read_states.append(ReadState(index, ctx))
        else:
            self.send(Message(MT.READ_INDEX_RESP, to=req.frm, index=index, entries=req.entries))

    def _release_pending_read_index_messages(self) -> None:
        if not self.committed_entry_in_current_term():
            return
        pending, self.pending_read_index_messages = self.pending_read_index_messages, []
        for m in pending:
            self._leader_read_index(m)

    def _handle_append_response(self, m: Message, pr: Progress) -> None:
        pr.recent_active = True
        if m.reject:
            next_probe = m.reject_hint
            if m.log_term > 0:
                next_probe = self.log.find_conflict_by_term(m.reject_hint, m.log_term)[0]
            if pr.maybe_decr_to(m.index, next_probe):
                if pr.state == PS.REPLICATE:
                    pr.become_probe()
                self.send_append(m.frm)
            return
        old_paused = pr.is_paused()
        if not pr.maybe_update(m.index):
            return
        if pr.state == PS.PROBE:
            pr.become_replicate()
        elif pr.state == PS.SNAPSHOT and pr.match + 1 >= self.log.first_index():
            pr.become_probe()
            pr.become_replicate()
        elif pr.state == PS.REPLICATE:
            pr.inflights.free_le(m.index)
        if self.maybe_commit():
            self._release_pending_read_index_messages()
            self.bcast_append()
        elif old_paused:
            self.send_append(m.frm)
        while m.frm in self.tracker.progress and self.send_append(m.frm, send_if_empty=False):
            pass
        if m.frm == self.lead_transferee and pr.match == self.log.last_index():
            self.send(Message(MT.TIMEOUT_NOW, to=m.frm))

    def _leader_transfer(self, m: Message, pr: Progress) -> None:
        transferee = m.frm
        if pr.is_learner:
            return  # a learner cannot lead: refused
        if self.lead_transferee != NONE:
            if self.lead_transferee == transferee:
                return
            self.lead_transferee = NONE
        if transferee == self.id:
            return
        self.election_elapsed = 0  # the transfer must finish within one election timeout
        self.lead_transferee = transferee
        if pr.match == self.log.last_index():
            self.send(Message(MT.TIMEOUT_NOW, to=transferee))
        else:
            self.send_append(transferee)

    # ------------------------------------------------------------ candidate
    def _step_candidate(self, m: Message) -> None:
        my_resp = MT.PRE_VOTE_RESP if self.state == ST.PRE_CANDIDATE else MT.VOTE_RESP
        if m.type == MT.PROP:
            self._drop(m, "proposal dropped: no leader")
        elif m.type == MT.READ_INDEX:
            self._drop(m, "read index dropped: no leader")
        elif m.type == MT.APP:
            self.become_follower(m.term, m.frm)
            self._handle_append(m)
        elif m.type == MT.HEARTBEAT:
            self.become_follower(m.term, m.frm)
            self._handle_heartbeat(m)
        elif m.type == MT.SNAP:
            self.become_follower(m.term, m.frm)
            self._handle_snapshot(m)
        elif m.type == my_resp:
            self.tracker.record_vote(m.frm, not m.reject)
            result = self.tracker.tally_votes()[2]
            if result == VoteResult.WON:
                if self.state == ST.PRE_CANDIDATE:
                    self.campaign(CampaignType.ELECTION)
                else:
                    self.become_leader()
                    self.bcast_append()
            elif result == VoteResult.LOST:
                self.become_follower(self.term, NONE)

    # ------------------------------------------------------------ follower
    def _step_follower(self, m: Message) -> None:
        if m.type == MT.PROP:
            if self.lead == NONE:
                self._drop(m, "proposal dropped: no leader")
            elif self.config.disable_proposal_forwarding:
                self._drop(m, "proposal dropped: proposal forwarding is disabled")
            else:
                self.send(dataclasses.replace(m, to=self.lead))
        elif m.type == MT.APP:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_append(m)
        elif m.type == MT.HEARTBEAT:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_heartbeat(m)
        elif m.type == MT.SNAP:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_snapshot(m)
        elif m.type == MT.TRANSFER_LEADER:
            if self.lead != NONE:
                self.send(dataclasses.replace(m, to=self.lead, term=0))
        elif m.type == MT.TIMEOUT_NOW:
            self.hup(CampaignType.TRANSFER)
        elif m.type == MT.READ_INDEX:
            if self.lead == NONE:
                self._drop(m, "read index dropped: no leader")
            else:
                self.send(dataclasses.replace(m, to=self.lead))
        elif m.type == MT.READ_INDEX_RESP:
            if len(m.entries) == 1:
                self.read_states.append(ReadState(m.index, m.entries[0].data))

    def _handle_append(self, m: Message) -> None:
        if m.index < self.log.committed:
            self.msgs.append(
                Message(
                    MT.APP_RESP, to=m.frm, frm=self.id, term=self.term, index=self.log.committed
                )
            )
            return
        last = self.log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last is not None:
            self.msgs.append(
                Message(MT.APP_RESP, to=m.frm, frm=self.id, term=self.term, index=last)
            )
            return
        hint = min(m.index, self.log.last_index())
        hint, hint_term = self.log.find_conflict_by_term(hint, m.log_term)
        self.msgs.append(
            Message(
                MT.APP_RESP,
                to=m.frm,
                frm=self.id,
                term=self.term,
                index=m.index,
                reject=True,
                reject_hint=hint,
                log_term=hint_term,
            )
        )

    def _handle_heartbeat(self, m: Message) -> None:
        self.log.commit_to(min(m.commit, self.log.last_index()))
        self.msgs.append(
            Message(
                MT.HEARTBEAT_RESP, to=m.frm, frm=self.id, term=self.term, context=m.context
            )
        )

    def _handle_snapshot(self, m: Message) -> None:
        if m.snapshot is None:
            return
        if self.restore(m.snapshot):
            self.send(Message(MT.APP_RESP, to=m.frm, index=self.log.last_index()))
        else:
            self.send(Message(MT.APP_RESP, to=m.frm, index=self.log.committed))

    def restore(self, snap: Snapshot) -> bool:
        meta = snap.metadata
        if meta.index <= self.log.committed:
            return False
        if self.state != ST.FOLLOWER:
            self.become_follower(self.term + 1, NONE)
            return False
        cs = meta.conf_state
        if self.id not in cs.voters and self.id not in cs.learners:
            return False  # a snapshot that does not include us: ignore it
        if self.log.match_term(meta.index, meta.term):
            self.log.commit_to(meta.index)  # we already have it: fast-forward commit
            return False
        self.log.restore(snap)
        self.tracker = ProgressTracker(self.config.max_inflight_msgs)
        self._apply_conf_state(cs)
        return True

    # ------------------------------------------------------------ membership
    def _apply_conf_state(self, cs: ConfState) -> None:
        last = self.log.last_index()
        for v in cs.voters:
            self.tracker.progress[v] = Progress(last + 1, self.config.max_inflight_msgs, False)
        for n in cs.learners:
            self.tracker.progress[n] = Progress(last + 1, self.config.max_inflight_msgs, True)
        self.tracker.voters = tuple(sorted(cs.voters))
        self.tracker.learners = tuple(sorted(cs.learners))
        me = self.tracker.progress.get(self.id)
        if me is not None:
            me.match = last
        self.is_learner = me is not None and me.is_learner

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        if cc.node_id <= 0:
            return self.tracker.conf_state()  # invalid id: no-op, as etcd ignores id 0
        t = self.tracker
        voters, learners = set(t.voters), set(t.learners)
        nid = cc.node_id
        if cc.type == ConfChangeType.ADD_NODE:
            learners.discard(nid)
            voters.add(nid)
        elif cc.type == ConfChangeType.ADD_LEARNER_NODE:
            voters.discard(nid)
            learners.add(nid)
        elif cc.type == ConfChangeType.REMOVE_NODE:
            voters.discard(nid)
            learners.discard(nid)
        t.voters = tuple(sorted(voters))
        t.learners = tuple(sorted(learners))
        if nid in voters or nid in learners:
            existing = t.progress.get(nid)
            if existing is None:
                pr = Progress(self.log.last_index() + 1, self.config.max_inflight_msgs, False)
                pr.recent_active = True  # do not count a brand-new member as inactive
                t.progress[nid] = pr
            else:
                pr = existing
            pr.is_learner = nid in learners
        else:
            t.progress.pop(nid, None)
        me = t.progress.get(self.id)
        self.is_learner = me is not None and me.is_learner
        if self.state == ST.LEADER:
            if me is None or me.is_learner:
                self.become_follower(self.term, NONE)  # removed (or demoted) leader
            else:
                if self.lead_transferee != NONE and self.lead_transferee not in t.progress:
                    self.lead_transferee = NONE
                if self.maybe_commit():
                    self._release_pending_read_index_messages()
                self.bcast_append()
        return t.conf_state()
