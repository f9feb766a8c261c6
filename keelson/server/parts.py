"""What the mixins of ``EtcdServer`` use of one another, declared for the type checker only.

Theory of operation. ``EtcdServer`` (etcdserver.py: construction, the raft loop, proposals
and reads) is assembled from mixins: ``Applier`` (apply.py) and the request mixins of v3.py.
Each mixin subclasses ``ServerParts`` so that mypy knows the state and plumbing it reaches
through ``self``. Every declaration sits under ``TYPE_CHECKING``: at run time ``ServerParts``
is an empty class, so it adds no attribute, no method and no behaviour, and the definitions
that run are the server's own.

Invariant: each declaration here has exactly the type or signature of the definition in
etcdserver.py, apply.py or v3.py that it stands for; no code outside those modules uses it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio
    import itertools
    from collections.abc import Awaitable, Callable
    from typing import Any

    from keelson import mvcc
    from keelson.backend import Backend
    from keelson.lease import Lessor
    from keelson.proto.etcdserverpb import raft_internal_pb2 as ipb
    from keelson.proto.etcdserverpb import rpc_pb2 as pb
    from keelson.raft import ConfState, MemoryStorage, RawNode, StateType
    from keelson.server.auth import MemberAuth
    from keelson.server.etcdserver import MemberConfig
    from keelson.server.membership import MemberTable


class ServerParts:
    """The server's state and plumbing the mixins use (see the module docstring)."""

    if TYPE_CHECKING:
        cfg: MemberConfig
        auth: MemberAuth
        backend: Backend
        kv: mvcc.KVStore
        leases: Lessor
        members: MemberTable
        node: RawNode
        storage: MemoryStorage
        on_members_changed: Callable[[list[pb.Member], list[int]], None] | None
        _forward: Callable[[int, str, bytes], Awaitable[bytes]] | None
        _alarms: set[tuple[int, int]]
        _applied: int
        _conf_state: ConfState
        _consistent_index: int
        _ids: itertools.count[int]
        _lead: int
        _lease_writer: mvcc.TxnWrite | None
        _state: StateType
        _stopped: bool
        _waiters: dict[int, asyncio.Future[Any]]
        _wake: asyncio.Event

        @property
        def is_learner(self) -> bool: ...

        def header(self) -> pb.ResponseHeader: ...

        def _cluster_header(self) -> pb.ResponseHeader: ...

        def _header_at(self, revision: int) -> pb.ResponseHeader: ...

        def _check_quota(self, cost: int) -> None: ...

        async def _propose(
            self, req: ipb.InternalRaftRequest, *, internal: bool = False
        ) -> Any: ...

        async def _wait_leader(self) -> None: ...

        async def _linearizable_barrier(self) -> None: ...
