"""RawNode: the application's handle on one raft state machine.

The application drives it: ``tick()`` on a timer, ``step(msg)`` for every message from a
peer, ``propose``/``propose_conf_change``/``read_index``/``transfer_leader`` for requests.
Then, whenever ``has_ready()``, it takes ``ready()``, persists the entries and hard state,
sends the messages, applies the committed entries, and calls ``advance(rd)``. Nothing here
does I/O; the Ready contract is described on ``types.Ready``.

Messages are only released after their Ready's entries and hard state are handed out
(non-async-storage-writes mode, as etcd's raft): one Ready at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from keelson.raft.config import Config
from keelson.raft.raft import Raft
from keelson.raft.storage import Storage
from keelson.raft.tracker import ProgressState
from keelson.raft.types import (
    MT,
    ConfChange,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    RaftError,
    Ready,
    SoftState,
)

LOCAL_MESSAGES = frozenset(
    {
        MessageType.HUP,
        MessageType.BEAT,
        MessageType.UNREACHABLE,
        MessageType.SNAP_STATUS,
        MessageType.CHECK_QUORUM,
    }
)


RESPONSES = frozenset(
    {
        MessageType.APP_RESP,
        MessageType.VOTE_RESP,
        MessageType.HEARTBEAT_RESP,
        MessageType.PRE_VOTE_RESP,
    }
)
"""Message types that answer a request of ours: only a member of the cluster sends them."""


class StepLocalMessageError(RaftError):
    """A local message type arrived from the network."""


class StepPeerNotFoundError(RaftError):
    """A response arrived from a node that is not a member."""


@dataclass(frozen=True, slots=True)
class PeerProgress:
    match: int
    next: int
    state: ProgressState
    recent_active: bool
    paused: bool
    inflight: int
    is_learner: bool


@dataclass(frozen=True, slots=True)
class Status:
    id: int
    hard_state: HardState
    soft_state: SoftState
    applied: int
    lead_transferee: int
    progress: tuple[tuple[int, PeerProgress], ...]  # sorted by id; empty unless leader


class RawNode:
    def __init__(self, config: Config, storage: Storage) -> None:
        self._raft = Raft(config, storage)
        self._prev_soft = self._raft.soft_state()
        self._prev_hard = self._raft.hard_state()

    @property
    def raft(self) -> Raft:
        """The state machine itself (for tests and the simulator's invariant checks)."""
        return self._raft

    def bootstrap(self, voters: list[int], learners: list[int] | None = None) -> None:
        """Start a brand-new cluster: only valid on empty storage. Every member of a new
        cluster must bootstrap with the same lists. Raises RaftError otherwise."""
        self._raft.bootstrap(voters, learners or [])
        # the bootstrap entries and hard state come out in the next Ready, to be persisted

    def tick(self) -> None:
        self._raft.tick()

    def campaign(self) -> None:
        self._raft.step(Message(MT.HUP, frm=self._raft.id))

    def propose(self, data: bytes) -> None:
        """Raises ProposalDropped when the proposal cannot be accepted now."""
        self._raft.step(
            Message(
                MT.PROP,
                frm=self._raft.id,
                entries=(Entry(0, 0, EntryType.NORMAL, bytes(data)),),
            )
        )

    def propose_many(self, datas: Sequence[bytes]) -> None:
        """Propose several normal entries in one MsgProp, in order: raft appends them (and
        sends them to followers, or forwards them to the leader) as one batch. All or none
        are accepted; raises ProposalDropped when they cannot be accepted now."""
        self._raft.step(
            Message(
                MT.PROP,
                frm=self._raft.id,
                entries=tuple(Entry(0, 0, EntryType.NORMAL, bytes(d)) for d in datas),
            )
        )

    def propose_conf_change(self, cc: ConfChange) -> None:
        self._raft.step(
            Message(
                MT.PROP,
                frm=self._raft.id,
                entries=(Entry(0, 0, EntryType.CONF_CHANGE, cc.encode()),),
            )
        )

    def step(self, msg: Message) -> None:
        """Feed a message from a peer. Raises StepLocalMessageError for local types and
        StepPeerNotFoundError for responses from unknown peers."""
        if msg.type in LOCAL_MESSAGES:
            raise StepLocalMessageError(f"cannot step local message {msg.type.name}")
        if msg.type in RESPONSES and not self._raft.tracker.has(msg.frm):
            raise StepPeerNotFoundError(f"response from unknown peer {msg.frm}")
        self._raft.step(msg)

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        return self._raft.apply_conf_change(cc)

    def transfer_leader(self, transferee: int) -> None:
        self._raft.step(Message(MT.TRANSFER_LEADER, frm=transferee))

    def read_index(self, ctx: bytes) -> None:
        self._raft.step(
            Message(MT.READ_INDEX, frm=self._raft.id, entries=(Entry(0, 0, data=ctx),))
        )

    def report_unreachable(self, peer: int) -> None:
        self._raft.step(Message(MT.UNREACHABLE, frm=peer))

    def report_snapshot(self, peer: int, failed: bool) -> None:
        self._raft.step(Message(MT.SNAP_STATUS, frm=peer, reject=failed))

    def _soft_changed(self) -> bool:
        """Whether ``soft_state()`` differs from the last one handed out (compared field by
        field: building a SoftState to compare it costs more than the comparison)."""
        r, prev = self._raft, self._prev_soft
        return r.lead != prev.lead or r.state != prev.raft_state

    def _hard_changed(self) -> bool:
        """Whether ``hard_state()`` differs from the last one handed out."""
        r, prev = self._raft, self._prev_hard
        return r.term != prev.term or r.vote != prev.vote or r.log.committed != prev.commit

    def has_ready(self) -> bool:
        r = self._raft
        if self._soft_changed():
            return True
        if self._hard_changed() and not r.hard_state().is_empty():
            return True
        u = r.log.unstable
        if u.snapshot is not None:
            return True
        if r.msgs or r.read_states:
            return True
        if u.entries:
            return True
        return r.log.has_next_committed_ents()

    def ready(self) -> Ready:
        r = self._raft
        soft = r.soft_state() if self._soft_changed() else None
        hard = r.hard_state() if self._hard_changed() else None
        prev_hard = self._prev_hard
        u = r.log.unstable
        entries = tuple(u.entries) if u.entries else ()
        rd = Ready(
            soft_state=soft,
            hard_state=hard,
            read_states=tuple(r.read_states) if r.read_states else (),
            entries=entries,
            snapshot=u.snapshot,
            committed_entries=tuple(r.log.next_committed_ents()),
            messages=tuple(r.msgs) if r.msgs else (),
            must_sync=bool(entries) or r.term != prev_hard.term or r.vote != prev_hard.vote,
        )
        if r.msgs:
            r.msgs = []
        if r.read_states:
            r.read_states = []
        if soft is not None:
            self._prev_soft = soft
        if hard is not None:
            self._prev_hard = hard
        return rd

    def advance(self, rd: Ready) -> None:
        r = self._raft
        if rd.committed_entries:
            r.log.applied_to(rd.committed_entries[-1].index)
        if rd.snapshot is not None:
            r.log.stable_snap_to(rd.snapshot.metadata.index)
            r.log.applied_to(max(r.log.applied, rd.snapshot.metadata.index))
        if rd.entries:
            last = rd.entries[-1]
            r.log.stable_to(last.index, last.term)
        r.reduce_uncommitted_size(rd.committed_entries)

    def status(self) -> Status:
        r = self._raft
        progress: tuple[tuple[int, PeerProgress], ...] = ()
        if r.is_leader():
            progress = tuple(
                (
                    pid,
                    PeerProgress(
                        pr.match,
                        pr.next,
                        pr.state,
                        pr.recent_active,
                        pr.is_paused(),
                        pr.inflights.count(),
                        pr.is_learner,
                    ),
                )
                for pid, pr in r.tracker.sorted_items()
            )
        return Status(
            r.id, r.hard_state(), r.soft_state(), r.log.applied, r.lead_transferee, progress
        )

