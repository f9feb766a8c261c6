"""keelson.raft: Raft consensus as a pure state machine (no I/O, no clock).

Drive a ``RawNode``: ``tick()``, ``step(msg)``, ``propose(data)``; then ``ready()``,
persist, send, apply, ``advance(rd)``. See ``types.Ready`` for the contract.
"""

from keelson.raft.config import NO_LIMIT, Config, ReadOnlyOption
from keelson.raft.rawnode import (
    PeerProgress,
    RawNode,
    Status,
    StepLocalMessageError,
    StepPeerNotFoundError,
)
from keelson.raft.storage import MemoryStorage, Storage
from keelson.raft.tracker import ProgressState
from keelson.raft.types import (
    EMPTY_HARD_STATE,
    EMPTY_SNAPSHOT,
    NONE,
    CompactedError,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ProposalDropped,
    RaftError,
    ReadState,
    Ready,
    Snapshot,
    SnapshotMetadata,
    SnapshotOutOfDate,
    SnapshotTemporarilyUnavailable,
    SoftState,
    StateType,
    UnavailableError,
)

__all__ = [
    "EMPTY_HARD_STATE",
    "EMPTY_SNAPSHOT",
    "NONE",
    "NO_LIMIT",
    "CompactedError",
    "Config",
    "ConfChange",
    "ConfChangeType",
    "ConfState",
    "Entry",
    "EntryType",
    "HardState",
    "MemoryStorage",
    "Message",
    "MessageType",
    "PeerProgress",
    "ProgressState",
    "ProposalDropped",
    "RaftError",
    "RawNode",
    "ReadOnlyOption",
    "ReadState",
    "Ready",
    "Snapshot",
    "SnapshotMetadata",
    "SnapshotOutOfDate",
    "SnapshotTemporarilyUnavailable",
    "SoftState",
    "StateType",
    "Status",
    "StepLocalMessageError",
    "StepPeerNotFoundError",
    "Storage",
    "UnavailableError",
]
