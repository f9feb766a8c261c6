"""One simulated cluster member: durable storage that survives crashes, and the volatile
RawNode and state machine that do not.

Durable state is exactly what the member persisted while handling Ready: the snapshot,
the log entries and the hard state (held in ``SimStorage``, a ``MemoryStorage`` the
simulator writes only from Ready), plus the state machine's own durable copy, committed
in batches the way keelson's LMDB backend records its consistent index: ``durable_sm`` is
(applied index, writes, membership) as of the last backend commit.

A crash drops the RawNode, the in-memory state machine and pending reads. A restart builds
a fresh RawNode over the same storage with ``applied`` set to the durable state machine's
index, or to the snapshot's index when the snapshot is newer (the state machine is then
rebuilt from the snapshot data); the membership raft starts from is the one recorded with
that state.

The state machine is an append-only list of client write ids; a snapshot's data is that
list, big-endian 8-byte integers.
"""

from __future__ import annotations

import random
import struct

from keelson.raft.config import Config
from keelson.raft.rawnode import RawNode
from keelson.raft.sim.clock import TICK
from keelson.raft.storage import MemoryStorage
from keelson.raft.types import ConfState, HardState

ELECTION_TICK = 10
HEARTBEAT_TICK = 1


class SimStorage(MemoryStorage):
    """MemoryStorage whose initial membership can be the state machine's durable one.

    etcd records the membership next to the applied data; when the state machine is newer
    than the snapshot, conf changes between the two are not replayed, so raft must start
    from the membership as of the applied index."""

    def __init__(self) -> None:
        super().__init__()
        self.boot_conf: ConfState | None = None

    def initial_state(self) -> tuple[HardState, ConfState]:
        hs, cs = super().initial_state()
        return hs, (self.boot_conf if self.boot_conf is not None else cs)


def encode_writes(writes: list[int]) -> bytes:
    return struct.pack(f">{len(writes)}Q", *writes)


def decode_writes(data: bytes) -> list[int]:
    if len(data) % 8:
        raise ValueError(f"snapshot data of {len(data)} bytes is not a list of write ids")
    return list(struct.unpack(f">{len(data) // 8}Q", data))


class SimNode:
    def __init__(
        self, node_id: int, rng: random.Random, max_msg_size: int = 16384, max_inflight: int = 16
    ) -> None:
        self.id = node_id
        self._rng = rng
        self._max_msg_size = max_msg_size
        self._max_inflight = max_inflight
        self.storage = SimStorage()
        self.durable_sm: tuple[int, tuple[int, ...], ConfState] = (0, (), ConfState())
        self.rn: RawNode | None = None
        self.incarnation = 0
        self.retired = False  # removed from the cluster and shut down for good
        self.tick_interval = TICK
        # volatile
        self.sm: list[int] = []
        self.applied = 0
        self.conf = ConfState()
        self.waiting_reads: list[tuple[bytes, int]] = []  # (ctx, read index), arrival order

    @property
    def up(self) -> bool:
        return self.rn is not None

    def _config(self, applied: int) -> Config:
        return Config(
            id=self.id,
            election_tick=ELECTION_TICK,
            heartbeat_tick=HEARTBEAT_TICK,
            applied=applied,
            check_quorum=True,
            pre_vote=True,
            max_size_per_msg=self._max_msg_size,
            max_inflight_msgs=self._max_inflight,
            rng=self._rng,
        )

    def start(self, voters: list[int] | None) -> RawNode:
        """Start (or restart) over the durable state. ``voters``: bootstrap a brand-new
        cluster member; None: start from whatever storage holds (a new member joining
        starts empty and learns everything from the leader)."""
        self.incarnation += 1
        self.tick_interval = TICK + self._rng.randint(-12, 12)  # clocks drift apart
        self.waiting_reads = []
        snap = self.storage.snapshot()
        sm_index, writes, conf = self.durable_sm
        if sm_index >= snap.metadata.index:
            self.sm, self.applied, self.conf = list(writes), sm_index, conf
            self.storage.boot_conf = conf if sm_index > 0 else None
        else:
            self.sm = decode_writes(snap.data)
            self.applied, self.conf = snap.metadata.index, snap.metadata.conf_state
            self.storage.boot_conf = None
        rn = RawNode(self._config(self.applied), self.storage)
        if voters is not None:
            rn.bootstrap(voters)
        self.rn = rn
        return rn

    def crash(self) -> None:
        self.rn = None
        self.sm = []
        self.waiting_reads = []

    def commit_state_machine(self) -> None:
        """The backend commits its batch: the applied state becomes durable."""
        self.durable_sm = (self.applied, tuple(self.sm), self.conf)
