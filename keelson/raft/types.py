"""The values the raft core exchanges with the world: messages, entries, state, Ready.

This module is the contract between the sans-I/O core and everything around it (the
simulator, the WAL, the transport, the server). Every value is an immutable dataclass so a
``Ready`` handed out can be kept, persisted and sent without copying. Node ids are positive
integers; ``NONE`` (0) means "no node" (no leader, no vote).
"""

from __future__ import annotations

import dataclasses
import enum
import struct
from dataclasses import dataclass, field
from typing import Any, TypeVar

NONE = 0
"""The id that means "nobody": no leader known, no vote cast."""

_T = TypeVar("_T")


def _fast_init(cls: type[_T]) -> type[_T]:
    """Give a frozen, slotted dataclass an ``__init__`` that stores each field through its
    slot descriptor; applied to the values the write path builds several times per entry.

    Same signature and defaults, and the instance is as frozen as before (assigning an
    attribute raises FrozenInstanceError): only how the constructor writes the fields
    changes. dataclass's frozen ``__init__`` goes through ``object.__setattr__`` for every
    field, which made building a Message (twelve fields) cost ~2.6 µs on CPython 3.11;
    this one costs about half. Fields with a default factory, ``__post_init__``, keyword-only
    or init=False fields are not supported (refused at import).
    """
    env: dict[str, Any] = {}
    params: list[str] = []
    body: list[str] = []
    if not dataclasses.is_dataclass(cls) or hasattr(cls, "__post_init__"):
        raise TypeError(f"_fast_init: {cls.__name__} is not a plain dataclass")
    for f in dataclasses.fields(cls):
        if not f.init or f.kw_only or f.default_factory is not dataclasses.MISSING:
            raise TypeError(f"_fast_init: field {cls.__name__}.{f.name} is not supported")
        env[f"_set_{f.name}"] = cls.__dict__[f.name].__set__  # the slot's member descriptor
        if f.default is dataclasses.MISSING:
            params.append(f.name)
        else:
            env[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
        body.append(f"    _set_{f.name}(self, {f.name})")
    exec(f"def __init__(self, {', '.join(params)}):\n" + "\n".join(body), env)
    init = env["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__doc__ = f"Build a {cls.__name__} (fields stored through their slot descriptors)."
    init.__annotations__ = dict(cls.__init__.__annotations__)
    setattr(cls, "__init__", init)  # noqa: B010 (mypy refuses assigning to a method)
    return cls


class MessageType(enum.IntEnum):
    """Kinds of messages; local ones (HUP, BEAT, PROP...) never cross the network except PROP
    and READ_INDEX forwarded from a follower to its leader."""

    HUP = 0  # local: start an election
    BEAT = 1  # local: leader sends heartbeats
    PROP = 2  # propose entries (local, or forwarded to the leader)
    APP = 3  # append entries
    APP_RESP = 4
    VOTE = 5
    VOTE_RESP = 6
    SNAP = 7  # install snapshot
    HEARTBEAT = 8
    HEARTBEAT_RESP = 9
    UNREACHABLE = 10  # local: transport could not reach a peer
    SNAP_STATUS = 11  # local: result of sending a snapshot
    CHECK_QUORUM = 12  # local
    TRANSFER_LEADER = 13
    TIMEOUT_NOW = 14
    READ_INDEX = 15
    READ_INDEX_RESP = 16
    PRE_VOTE = 17
    PRE_VOTE_RESP = 18


class MT:
    """``MessageType``'s members as plain class attributes, for the raft core's hot paths:
    ``MT.APP is MessageType.APP``.

    On CPython 3.11 a member looked up on its enum class goes through ``EnumType``'s
    ``__getattr__`` hook, about five times slower than a plain class attribute, and the
    step functions compare message types a dozen times per message."""

    HUP = MessageType.HUP
    BEAT = MessageType.BEAT
    PROP = MessageType.PROP
    APP = MessageType.APP
    APP_RESP = MessageType.APP_RESP
    VOTE = MessageType.VOTE
    VOTE_RESP = MessageType.VOTE_RESP
    SNAP = MessageType.SNAP
    HEARTBEAT = MessageType.HEARTBEAT
    HEARTBEAT_RESP = MessageType.HEARTBEAT_RESP
    UNREACHABLE = MessageType.UNREACHABLE
    SNAP_STATUS = MessageType.SNAP_STATUS
    CHECK_QUORUM = MessageType.CHECK_QUORUM
    TRANSFER_LEADER = MessageType.TRANSFER_LEADER
    TIMEOUT_NOW = MessageType.TIMEOUT_NOW
    READ_INDEX = MessageType.READ_INDEX
    READ_INDEX_RESP = MessageType.READ_INDEX_RESP
    PRE_VOTE = MessageType.PRE_VOTE
    PRE_VOTE_RESP = MessageType.PRE_VOTE_RESP


class EntryType(enum.IntEnum):
    NORMAL = 0
    CONF_CHANGE = 1


class StateType(enum.IntEnum):
    FOLLOWER = 0
    CANDIDATE = 1
    LEADER = 2
    PRE_CANDIDATE = 3


class ST:
    """``StateType``'s members as plain class attributes (see ``MT``)."""

    FOLLOWER = StateType.FOLLOWER
    CANDIDATE = StateType.CANDIDATE
    LEADER = StateType.LEADER
    PRE_CANDIDATE = StateType.PRE_CANDIDATE


class ConfChangeType(enum.IntEnum):
    """One membership change. Promoting a learner is ADD_NODE on a learner's id."""

    ADD_NODE = 0
    REMOVE_NODE = 1
    UPDATE_NODE = 2
    ADD_LEARNER_NODE = 3


@_fast_init
@dataclass(frozen=True, slots=True)
class Entry:
    term: int
    index: int
    type: EntryType = EntryType.NORMAL
    data: bytes = b""

    def size(self) -> int:
        """Approximate encoded size, used for message and batch size limits."""
        return len(self.data) + 24


@_fast_init
@dataclass(frozen=True, slots=True)
class HardState:
    """What must be durable before any message of the same Ready is sent."""

    term: int = 0
    vote: int = NONE
    commit: int = 0

    def is_empty(self) -> bool:
        return self.term == 0 and self.vote == NONE and self.commit == 0


EMPTY_HARD_STATE = HardState()


@dataclass(frozen=True, slots=True)
class ConfState:
    """The membership as of a point in the log. Ids are kept sorted."""

    voters: tuple[int, ...] = ()
    learners: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class SnapshotMetadata:
    index: int = 0
    term: int = 0
    conf_state: ConfState = field(default_factory=ConfState)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The application state up to ``metadata.index``; ``data`` is opaque to raft."""

    metadata: SnapshotMetadata = field(default_factory=SnapshotMetadata)
    data: bytes = b""

    def is_empty(self) -> bool:
        return self.metadata.index == 0


EMPTY_SNAPSHOT = Snapshot()


@dataclass(frozen=True, slots=True)
class ConfChange:
    """A membership change carried in the ``data`` of a CONF_CHANGE entry."""

    type: ConfChangeType
    node_id: int
    context: bytes = b""

    _HEADER = struct.Struct(">BQ")

    def encode(self) -> bytes:
        return self._HEADER.pack(int(self.type), self.node_id) + self.context

    @classmethod
    def decode(cls, data: bytes) -> ConfChange:
        """Decode; raises ValueError on malformed input (data may come from a peer)."""
        if len(data) < cls._HEADER.size:
            raise ValueError("conf change too short")
        kind, node_id = cls._HEADER.unpack_from(data)
        return cls(ConfChangeType(kind), node_id, bytes(data[cls._HEADER.size :]))


@_fast_init
@dataclass(frozen=True, slots=True)
class Message:
    type: MessageType
    to: int = NONE
    frm: int = NONE
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    snapshot: Snapshot | None = None
    reject: bool = False
    reject_hint: int = 0
    context: bytes = b""


@_fast_init
@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state worth telling the application about; never persisted."""

    lead: int = NONE
    raft_state: StateType = StateType.FOLLOWER


@_fast_init
@dataclass(frozen=True, slots=True)
class ReadState:
    """A ReadIndex answer: once the application has applied ``index``, a read for
    ``request_ctx`` may be served from local state and is linearizable."""

    index: int
    request_ctx: bytes


@_fast_init
@dataclass(frozen=True, slots=True)
class Ready:
    """Everything the application must do, in this order:

    1. persist ``snapshot`` (if any), ``entries`` and ``hard_state`` (fsync if ``must_sync``);
    2. send ``messages`` (only after step 1 is durable; a leader may send some of them
       before, see ``parallel_append.split_early``);
    3. apply ``snapshot`` then ``committed_entries`` to the state machine;
    4. call ``advance(ready)``.
    """

    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    read_states: tuple[ReadState, ...] = ()
    entries: tuple[Entry, ...] = ()
    snapshot: Snapshot | None = None
    committed_entries: tuple[Entry, ...] = ()
    messages: tuple[Message, ...] = ()
    must_sync: bool = False


class RaftError(Exception):
    """Base class of errors the raft core reports to its caller."""


class ProposalDropped(RaftError):
    """The proposal was not accepted: no leader is known, a leadership transfer is in
    progress, a conf change is pending, or this member was removed. Safe to retry."""


class CompactedError(RaftError):
    """The requested index is older than the first index kept in storage."""


class UnavailableError(RaftError):
    """The requested index is newer than the last index in storage."""


class SnapshotOutOfDate(RaftError):
    """A snapshot older than the current one was offered to storage."""


class SnapshotTemporarilyUnavailable(RaftError):
    """Storage cannot produce a snapshot right now; raft retries later."""
