"""One cluster member: drives raft, persists to the WAL, applies to mvcc, serves requests.

Theory of operation. ``EtcdServer`` owns a ``RawNode`` over a ``MemoryStorage`` that mirrors
the WAL. A single task, the raft loop, takes each ``Ready`` and, in this order: saves the
entries and hard state to the WAL (fsync when raft says so, in a worker thread so the event
loop keeps accepting proposals: every proposal made meanwhile joins the next Ready, which is
the group commit), appends them to the storage, hands messages to the transport (only after
they are durable), applies the committed entries in one backend write transaction per Ready
(the consistent index is written in the same transaction), wakes the waiters of the applied
requests by request id, and calls ``advance``. Proposals are handed to raft once per event
loop turn, all of that turn's requests in one MsgProp (``_flush_proposals``), so raft sends
one append per follower for them rather than one per request.

Durability: a write is acknowledged only after its entry is committed, durable in the WAL of
a quorum and applied to the backend. Replay after a crash is idempotent: entries at or below
the backend's consistent index are not re-applied to the key space.

Reads: linearizable reads ask raft for a read index and wait until it is applied;
serializable reads are served from the local store at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import itertools
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from keelson import mvcc
from keelson.auth import AuthStore
from keelson.backend import Backend
from keelson.backend.bolt_image import write_bolt_image
from keelson.lease import LEASE_BUCKET, MAX_LEASE_TTL, Lessor, NotPrimary, min_lease_ttl
from keelson.mvcc import apply as mvcc_apply
from keelson.proto import errors
from keelson.proto.etcdserverpb import raft_internal_pb2 as ipb
from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.raft import (
    ConfChange,
    ConfChangeType,
    Config,
    ConfState,
    EntryType,
    MemoryStorage,
    Message,
    MessageType,
    ProposalDropped,
    RaftError,
    RawNode,
    Ready,
    Snapshot,
    StateType,
)
from keelson.server import convert, reconfig
from keelson.server.auth import PEER_CHECKED, MemberAuth
from keelson.server.compactor import Compactor, parse_retention
from keelson.server.membership import MEMBERS_BUCKET, MemberTable, decode_context, encode_context
from keelson.server.snapshot import backend_image, install_image
from keelson.server.watch import (
    WATCH_RESPONSE_OVERHEAD_BYTES,
    WatchHub,
    WatchStream,
    progress_notify_interval,
)
from keelson.wal import WAL, Snapshotter

log = logging.getLogger(__name__)

ALARM_BUCKET = b"alarm"
DEFAULT_QUOTA_BYTES = 2 * 1024 * 1024 * 1024
NOSPACE: Any = pb.AlarmType.Value("NOSPACE")
SERVER_VERSION = "3.4.0"
PROPOSAL_BATCH_BYTES = 1024 * 1024
"""Most bytes of requests proposed to raft in one MsgProp (raft's max_size_per_msg)."""
"""The version reported by Status: keelson speaks etcd 3.4's API."""


@dataclass(frozen=True)
class MemberConfig:
    """What one member needs to start; the CLI builds it from etcd's flags."""

    name: str
    data_dir: str
    member_id: int
    cluster_id: int
    peers: dict[int, tuple[str, ...]] = field(default_factory=dict)  # id -> peer urls
    peer_names: dict[int, str] = field(default_factory=dict)
    client_urls: tuple[str, ...] = ()
    wal_dir: str = ""
    new_cluster: bool = True
    heartbeat_interval_ms: int = 100
    election_timeout_ms: int = 1000
    snapshot_count: int = 100000
    snapshot_catchup_entries: int = 5000
    auto_compaction_mode: str = "periodic"
    auto_compaction_retention: str = "0"
    quota_backend_bytes: int = 0
    max_request_bytes: int = 1572864
    max_txn_ops: int = 128
    auth_token: str = "simple"  # --auth-token
    auth_token_ttl: int = 300  # --auth-token-ttl, seconds
    bcrypt_cost: int = 10  # --bcrypt-cost
    watch_progress_notify_interval_s: float = 600.0  # <= 0: etcd's 10 minutes
    request_timeout_s: float = 7.0
    fsync: bool = True


class _Waiter:
    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future[Any]) -> None:
        self.future = future


class EtcdServer:
    """See the module docstring. Build, ``await start()``, serve, ``await stop()``."""

    def __init__(
        self,
        cfg: MemberConfig,
        send: Callable[[list[Message]], None] | None = None,
        faults: Callable[[str], None] | None = None,
        forward: Callable[[int, str, bytes], Awaitable[bytes]] | None = None,
    ):
        self.cfg = cfg
        self._forward = forward
        self._send = send
        self._faults = faults or _no_faults
        member_dir = Path(cfg.data_dir) / "member"
        self._wal_dir = Path(cfg.wal_dir) if cfg.wal_dir else member_dir / "wal"
        self._db_dir = member_dir / "snap" / "db"
        os.makedirs(member_dir / "snap", exist_ok=True)
        parse_retention(cfg.auto_compaction_mode, cfg.auto_compaction_retention)  # validate
        self._open_state()
        self.auth = MemberAuth.for_member(self, self.backend)
        self._revoking: set[int] = set()
        self.storage = MemoryStorage()
        self.watches = WatchHub(
            self.kv, self.header,
            progress_interval=progress_notify_interval(cfg.watch_progress_notify_interval_s),
            max_response_bytes=cfg.max_request_bytes + WATCH_RESPONSE_OVERHEAD_BYTES,
        )
        self.snapshotter = Snapshotter(member_dir / "snap")
        self._snap_index = 0
        self._conf_state = ConfState()
        self._term = 0
        self._lead = 0
        self.leader_changes = 0
        """How many times this member saw a new leader (etcd_server_leader_changes_seen_total)."""
        self._state = StateType.FOLLOWER
        self._applied = 0
        self._waiters: dict[int, asyncio.Future[Any]] = {}
        self._reads: dict[bytes, asyncio.Future[int]] = {}
        self._applied_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._ids = itertools.count(secrets.randbits(40) << 16)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._bg: set[asyncio.Task[None]] = set()
        self._read_batch: asyncio.Future[int] | None = None
        self._proposals: list[tuple[bytes, asyncio.Future[Any]]] = []
        """Proposals made in this loop turn, handed to raft together by _flush_proposals."""
        self._stopped = False
        wal_exists = self._wal_dir.exists() and any(self._wal_dir.glob("*.wal"))
        ticks_per_election = max(2, cfg.election_timeout_ms // max(1, cfg.heartbeat_interval_ms))
        rcfg = Config(
            id=cfg.member_id,
            election_tick=ticks_per_election,
            heartbeat_tick=1,
            rng=__import__("random").Random(cfg.member_id ^ secrets.randbits(32)),
        )
        if wal_exists:
            self.wal, contents = WAL.open(self._wal_dir)
            snap = None
            if contents.snapshot.index > 0:
                snap = self.snapshotter.load_newest([contents.snapshot])
                if snap is None:
                    raise RuntimeError(
                        f"{self.snapshotter.directory}: snapshot at index "
                        f"{contents.snapshot.index} named by the WAL is missing"
                    )
                self.storage.apply_snapshot(snap)
                self._snap_index = snap.metadata.index
                self._conf_state = snap.metadata.conf_state
                self._applied = snap.metadata.index
                rcfg = dataclasses.replace(rcfg, applied=snap.metadata.index)
            self.storage.set_hard_state(contents.hard_state)
            self.storage.append(contents.entries)
            self.node = RawNode(rcfg, self.storage)
        else:
            meta = cfg.member_id.to_bytes(8, "big") + cfg.cluster_id.to_bytes(8, "big")
            self.wal = WAL.create(self._wal_dir, meta)
            self.node = RawNode(rcfg, self.storage)
            if cfg.new_cluster:
                self.node.bootstrap(sorted(cfg.peers) or [cfg.member_id])
        self.members = MemberTable(self.backend)
        if not self.members.members:
            with self.backend.write() as btx:
                for mid in sorted(cfg.peers):
                    self.members.put(btx, pb.Member(
                        ID=mid,
                        name=cfg.peer_names.get(mid, ""),
                        peerURLs=list(cfg.peers[mid]),
                    ))
        self.on_members_changed: Callable[[list[pb.Member], list[int]], None] | None = None

    def _open_state(self) -> None:
        """Open the backend and the state kept in it (key space, leases, alarms)."""
        cfg = self.cfg
        self.backend = Backend(
            str(self._db_dir),
            buckets=(
                *mvcc.KVStore.BUCKETS, MEMBERS_BUCKET, LEASE_BUCKET, ALARM_BUCKET,
                *AuthStore.BUCKETS,
            ),
            sync=cfg.fsync,
        )
        election_ticks = max(2, cfg.election_timeout_ms // max(1, cfg.heartbeat_interval_ms))
        self._lease_writer: mvcc.TxnWrite | None = None
        self.leases = Lessor(
            self._delete_lease_keys,
            min_ttl=min_lease_ttl(election_ticks, max(1, cfg.heartbeat_interval_ms)),
        )
        self.leases.recover(self.backend)  # before the KVStore, which re-attaches keys
        self.kv = mvcc.KVStore(self.backend, lessor=self.leases)
        self._alarms: set[tuple[int, int]] = set()
        with self.backend.read() as tx:
            for k, _ in tx.range(ALARM_BUCKET, b"", None):
                if len(k) == 9:
                    self._alarms.add((int.from_bytes(k[:8], "big"), k[8]))
        self._consistent_index = self.backend.consistent_index()[0]

    def _delete_lease_keys(self, keys: list[bytes]) -> None:
        """The lessor's revoke callback: delete the keys in the revoke's one mvcc write."""
        tw = self._lease_writer
        if tw is None:
            raise RuntimeError("lease keys deleted outside a revoke being applied")
        for key in keys:
            tw.delete_range(key, None)

    def _install_snapshot(self, snap: Snapshot) -> None:
        """Replace the whole applied state by a snapshot received from the leader."""
        self.backend.close()
        install_image(self._db_dir, snap.data)
        self._open_state()
        self.auth.recover(self.backend)
        if self.state_is_leader_hint():
            self.leases.promote(time.monotonic())
        self.members = MemberTable(self.backend)
        meta_only = Snapshot(snap.metadata, b"")
        self.snapshotter.save(meta_only)
        self.wal.save_snapshot_marker(snap.metadata.index, snap.metadata.term)
        self.storage.apply_snapshot(meta_only)
        self._snap_index = snap.metadata.index
        self._conf_state = snap.metadata.conf_state
        self._applied = max(self._applied, snap.metadata.index)
        if self.on_members_changed is not None:
            self.on_members_changed(self.members.sorted(), [])

    def state_is_leader_hint(self) -> bool:
        return self._state == StateType.LEADER

    def _maybe_snapshot(self, force: bool = False) -> None:
        """Every snapshot_count applied entries: snapshot metadata, compact the raft log
        (keeping catch-up entries) and release WAL segments."""
        if self._applied <= self._snap_index:
            return
        if not force and self._applied - self._snap_index < self.cfg.snapshot_count:
            return
        index = self._applied
        snap = self.storage.create_snapshot(index, self._conf_state, b"")
        self.backend.sync()
        self.snapshotter.save(snap)
        self.wal.save_snapshot_marker(index, snap.metadata.term)
        self._snap_index = index
        compact_to = index - self.cfg.snapshot_catchup_entries
        if compact_to > self.storage.first_index():
            self.storage.compact(compact_to)
        self.wal.release_to(max(0, compact_to))
        log.info("snapshot at index %d; raft log compacted to %d", index, compact_to)

    async def _send_with_image(self, msgs: list[Message]) -> None:
        assert self._send is not None
        try:
            image = await asyncio.to_thread(backend_image, self.backend)
        except Exception:  # noqa: BLE001 - the follower retries; raft is told it failed
            log.exception("building backend image for a snapshot")
            for m in msgs:
                self.node.report_snapshot(m.to, True)
            return
        out = []
        for m in msgs:
            assert m.snapshot is not None
            out.append(dataclasses.replace(m, snapshot=Snapshot(m.snapshot.metadata, image)))
        self._send(out)

    # -- lifecycle ---------------------------------------------------------------------

    async def _auto_compact(self) -> None:
        comp = Compactor(
            self.cfg.auto_compaction_mode,
            parse_retention(self.cfg.auto_compaction_mode, self.cfg.auto_compaction_retention),
        )
        if not comp.enabled:
            return
        while True:
            await asyncio.sleep(comp.interval())
            now = time.monotonic()
            rev = self.kv.current_revision
            comp.observe(now, rev)
            if self._state != StateType.LEADER:
                continue
            target = comp.due(now, rev, self.kv.compact_revision)
            if target:
                try:
                    await self.compact(pb.CompactionRequest(revision=target))
                    log.info("auto compaction at revision %d", target)
                except errors.EtcdError as exc:
                    log.warning("auto compaction at revision %d failed: %s", target, exc)

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._auto_compact(), name="auto-compaction"),
            asyncio.create_task(self._ticker(), name="raft-ticker"),
            asyncio.create_task(self._run(), name="raft-loop"),
        ]
        self._wake.set()

    async def stop(self) -> None:
        self._stopped = True
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._fail_all(errors.STOPPED)
        self.wal.close()
        self.backend.close()

    def _fail_all(self, err: errors.EtcdError) -> None:
        futs: list[asyncio.Future[Any]] = [*self._waiters.values(), *self._reads.values()]
        futs += [f for _, f in self._applied_waiters]
        for fut in futs:
            if not fut.done():
                fut.set_exception(err)

    async def _ticker(self) -> None:
        interval = self.cfg.heartbeat_interval_ms / 1000
        last_expiry_check = 0.0
        last_watch_sync = 0.0
        while True:
            await asyncio.sleep(interval)
            self.node.tick()
            self._wake.set()
            now = time.monotonic()
            if now - last_watch_sync >= 0.1:
                last_watch_sync = now
                self.watches.sync()
            if self._state == StateType.LEADER and now - last_expiry_check >= 0.1:
                last_expiry_check = now
                try:
                    expired = self.leases.expired(now)
                except NotPrimary:
                    expired = []
                for lid in expired:
                    if lid not in self._revoking:
                        self._revoking.add(lid)
                        asyncio.create_task(self._revoke_expired(lid))

    async def _revoke_expired(self, lease_id: int) -> None:
        """Revoke a lease this leader saw expire, once a ReadIndex round confirmed it still
        leads. A leader that was stopped (SIGSTOP, a long fsync, a starved CPU) resumes
        believing it leads, with deadlines that ignore the keep-alives its successor took;
        without the check its revoke, flushed after it stepped down, is forwarded to and
        committed by the new leader (etcd-io/etcd#15247, fixed the same way in #16822).
        The deadline is read again after the round: a renewal or a re-promotion moved it."""
        try:
            await self._linearizable_barrier()
            if (
                self._state != StateType.LEADER
                or not self.leases.lease_exists(lease_id)
                or self.leases.expiry(lease_id) > time.monotonic()
            ):
                return
            await self._propose(
                self.auth.as_root(
                    ipb.InternalRaftRequest(lease_revoke=pb.LeaseRevokeRequest(ID=lease_id))
                )
            )
        except errors.EtcdError as exc:
            log.debug("revoking expired lease %x: %s", lease_id, exc)
        finally:
            self._revoking.discard(lease_id)

    def step(self, msg: Message) -> None:
        """Feed a message from a peer (transport callback); bad messages are logged."""
        try:
            self.node.step(msg)
        except RaftError as exc:
            log.debug("dropping message %s from %d: %s", msg.type.name, msg.frm, exc)
            return
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                while self.node.has_ready():
                    rd = self.node.ready()
                    await self._handle_ready(rd)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("raft loop failed; member stops serving requests")
                self._stopped = True
                self._fail_all(errors.STOPPED)
                return

    async def _handle_ready(self, rd: Ready) -> None:
        if rd.soft_state is not None:
            was_leader = self._state == StateType.LEADER
            if rd.soft_state.lead not in (0, self._lead):
                self.leader_changes += 1
            self._lead = rd.soft_state.lead
            self._state = rd.soft_state.raft_state
            if self._state == StateType.LEADER and not was_leader:
                self.leases.promote(time.monotonic())
            elif was_leader and self._state != StateType.LEADER:
                self.leases.demote()
        if rd.snapshot is not None and not rd.snapshot.is_empty():
            await asyncio.to_thread(self._install_snapshot, rd.snapshot)
            self.watches.rebind(self.kv)  # on the loop's thread, like every watch call
        if rd.entries or rd.hard_state is not None:
            await asyncio.to_thread(self.wal.save, rd.hard_state, rd.entries, rd.must_sync)
        if rd.hard_state is not None:
            self.storage.set_hard_state(rd.hard_state)
            self._term = rd.hard_state.term
        if rd.entries:
            self.storage.append(rd.entries)
        if rd.messages and self._send is not None:
            snaps = [m for m in rd.messages if m.type == MessageType.SNAP]
            self._send([m for m in rd.messages if m.type != MessageType.SNAP])
            if snaps:
                task = asyncio.create_task(self._send_with_image(snaps))
                self._bg.add(task)
                task.add_done_callback(self._bg.discard)
        for rs in rd.read_states:
            fut = self._reads.pop(rs.request_ctx, None)
            if fut is not None and not fut.done():
                fut.set_result(rs.index)
        if rd.committed_entries:
            self._faults("before-apply")
            self._apply(rd)
            self.watches.sync()
        self.node.advance(rd)
        self._notify_applied()
        if rd.committed_entries:
            # A snapshot sent to a new member must name it in its conf state, so a conf
            # change forces a snapshot once the log has been compacted at least once.
            conf = any(e.type == EntryType.CONF_CHANGE for e in rd.committed_entries)
            self._maybe_snapshot(force=conf and self._snap_index > 0)

    # -- apply -------------------------------------------------------------------------

    def _apply(self, rd: Ready) -> None:
        results: list[tuple[int, Any]] = []
        with self.kv.batch() as btx:
            for e in rd.committed_entries:
                if e.type == EntryType.CONF_CHANGE:
                    fresh = e.index > self._consistent_index
                    results.append(self._apply_conf_change(btx if fresh else None, e.data))
                elif e.index > self._consistent_index and e.data:
                    results.append(self._apply_request(btx, e.data, e.index))
                if e.index > self._consistent_index:
                    btx.set_consistent_index(e.index, e.term)
                    self._consistent_index = e.index
        self._applied = rd.committed_entries[-1].index
        for rid, result in results:
            fut = self._waiters.pop(rid, None)
            if fut is None or fut.done():
                continue
            if isinstance(result, BaseException):
                fut.set_exception(result)
            else:
                fut.set_result(result)
        while self.kv.compaction_pending():
            self.kv.compaction_step()

    def _apply_conf_change(self, btx: Any, data: bytes) -> tuple[int, Any]:
        try:
            cc = ConfChange.decode(data)
            self._conf_state = self.node.apply_conf_change(cc)
        except (ValueError, RaftError) as exc:
            log.warning("ignoring bad conf change entry: %s", exc)
            return 0, None
        if not cc.context:
            return 0, None  # bootstrap entries: the members came from the configuration
        try:
            rid, member = decode_context(cc.context)
        except ValueError as exc:
            log.warning("conf change for %x without a valid member: %s", cc.node_id, exc)
            return 0, None
        if cc.type == ConfChangeType.REMOVE_NODE:
            self.members.remove(btx, cc.node_id)
            removed = [cc.node_id]
            if cc.node_id == self.cfg.member_id:
                log.warning("this member was removed from the cluster; it stops serving")
                self._stopped = True
        else:
            existing = self.members.members.get(cc.node_id)
            if cc.type == ConfChangeType.ADD_NODE and existing is not None:
                existing.isLearner = False  # promotion
                if member.peerURLs:
                    existing.peerURLs[:] = list(member.peerURLs)
                member = existing
            elif cc.type == ConfChangeType.UPDATE_NODE and existing is not None:
                existing.peerURLs[:] = list(member.peerURLs)
                if member.name:  # a publish (see ``publish``) also sets name and client URLs
                    existing.name = member.name
                    existing.clientURLs[:] = list(member.clientURLs)
                member = existing
            else:
                member.isLearner = cc.type == ConfChangeType.ADD_LEARNER_NODE
            self.members.put(btx, member)
            removed = []
        if self.on_members_changed is not None:
            try:
                self.on_members_changed(self.members.sorted(), removed)
            except Exception:  # noqa: BLE001 - transport trouble must not stop apply
                log.exception("updating peers after conf change")
        return rid, self.members.sorted()

    def _apply_request(self, btx: Any, data: bytes, index: int = 0) -> tuple[int, Any]:
        req = ipb.InternalRaftRequest()
        try:
            req.ParseFromString(data)
        except Exception as exc:  # noqa: BLE001 - a corrupt entry must not stop the member
            log.error("skipping undecodable raft entry: %s", exc)
            return 0, None
        rid = req.header.ID or req.ID
        try:
            which = req.WhichOneof("request") if _has_oneof(req) else _first_set(req)
            self.auth.check_apply(req, which)
            if which is not None and self.auth.handles(which):
                return rid, self.auth.apply(btx, req, which, index)
            if which == "put":
                if self._alarm_nospace:
                    raise errors.NO_SPACE
                return rid, self.kv.put(btx, convert.put_from_pb(req.put))
            if which == "delete_range":
                return rid, self.kv.delete_range(btx, convert.delete_from_pb(req.delete_range))
            if which == "txn":
                txn = convert.txn_from_pb(req.txn)
                if self._alarm_nospace and not mvcc_apply.is_txn_read_only(txn):
                    raise errors.NO_SPACE
                return rid, self.kv.txn(btx, txn)
            if which == "alarm":
                return rid, self._apply_alarm(btx, req.alarm)
            if which == "member_attr_set":
                return rid, self._apply_member_attrs(btx, req.member_attr_set)
            if which == "txn":
                return rid, self.kv.txn(btx, convert.txn_from_pb(req.txn))
            if which == "lease_grant":
                g = req.lease_grant
                if self.leases.lease_exists(g.ID):
                    raise errors.LEASE_EXIST
                if self._alarm_nospace:
                    raise errors.NO_SPACE
                ttl = self.leases.grant(btx, g.ID, g.TTL, time.monotonic())
                return rid, (g.ID, ttl)
            if which == "lease_revoke":
                lid = req.lease_revoke.ID
                if not self.leases.lease_exists(lid):
                    raise errors.LEASE_NOT_FOUND
                with self.kv.write(btx) as tw:
                    self._lease_writer = tw
                    try:
                        self.leases.revoke(btx, lid)
                    finally:
                        self._lease_writer = None
                return rid, None
            if which == "compaction":
                self.kv.compact(btx, req.compaction.revision)
                return rid, self.kv.current_revision
            return rid, errors.NOT_CAPABLE
        except mvcc.MvccError as exc:
            return rid, _mvcc_error(exc)
        except errors.EtcdError as exc:
            return rid, exc
        except ValueError as exc:
            log.warning("request %d rejected at apply: %s", rid, exc)
            return rid, errors.EtcdError(errors.Code.INVALID_ARGUMENT, str(exc))

    def _apply_member_attrs(self, btx: Any, attrs: pb.Member) -> None:
        """Record a started member's name and client URLs (published by that member); an
        entry for a member removed meanwhile changes nothing."""
        m = self.members.members.get(attrs.ID)
        if m is None:
            return
        m.name = attrs.name
        m.clientURLs[:] = list(attrs.clientURLs)
        self.members.put(btx, m)
        if self.on_members_changed is not None:
            self.on_members_changed(self.members.sorted(), [])

    @property
    def _alarm_nospace(self) -> bool:
        return any(a == NOSPACE for _, a in self._alarms)

    def _apply_alarm(self, btx: Any, req: pb.AlarmRequest) -> list[pb.AlarmMember]:
        key = req.memberID.to_bytes(8, "big") + bytes([req.alarm & 0xFF])
        if req.action == pb.AlarmRequest.ACTIVATE and req.alarm != 0:
            self._alarms.add((req.memberID, req.alarm))
            btx.put(ALARM_BUCKET, key, b"")
            return [pb.AlarmMember(memberID=req.memberID, alarm=req.alarm)]
        if req.action == pb.AlarmRequest.DEACTIVATE:
            if (req.memberID, req.alarm) not in self._alarms:
                return []
            self._alarms.discard((req.memberID, req.alarm))
            btx.delete(ALARM_BUCKET, key)
            return [pb.AlarmMember(memberID=req.memberID, alarm=req.alarm)]
        return []

    def quota_bytes(self) -> int:
        """The backend quota in force (``--quota-backend-bytes``, 0 meaning etcd's default)."""
        return self.cfg.quota_backend_bytes or DEFAULT_QUOTA_BYTES

    def pending_proposals(self) -> int:
        """Proposals made by this member and not yet applied."""
        return len(self._waiters)

    def _check_quota(self, cost: int) -> None:
        """Refuse a write that would grow the backend past the quota, raising NOSPACE."""
        if self._alarm_nospace:
            raise errors.NO_SPACE
        quota = self.cfg.quota_backend_bytes or DEFAULT_QUOTA_BYTES
        if quota < 0:
            return
        if self.backend.size() + cost > quota:
            alarm = pb.AlarmRequest(
                action=pb.AlarmRequest.ACTIVATE, memberID=self.cfg.member_id, alarm=NOSPACE
            )
            task = asyncio.create_task(self._propose(ipb.InternalRaftRequest(alarm=alarm)))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            raise errors.NO_SPACE

    async def alarm(self, req: pb.AlarmRequest, identity: Any = None) -> pb.AlarmResponse:
        """etcd answers every alarm action from its apply loop, so a GET sees every alarm
        committed before it (here: a ReadIndex barrier) and no response carries a header."""
        await self.auth.check_alarm(identity, req)
        if req.action == pb.AlarmRequest.GET:
            await self._linearizable_barrier()
            alarms = [
                pb.AlarmMember(memberID=m, alarm=cast(Any, a))
                for m, a in sorted(self._alarms)
                if req.alarm == 0 or a == req.alarm
            ]
            return pb.AlarmResponse(alarms=alarms)
        r = _ok(await self._propose(ipb.InternalRaftRequest(alarm=req)))
        return pb.AlarmResponse(alarms=r)

    async def wait_applied(self, index: int) -> None:
        """Return once this member has applied ``index`` (no timeout: the caller's)."""
        if self._applied >= index:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (index, done)
        self._applied_waiters.append(entry)
        try:
            await done
        finally:
            if not done.done() or done.cancelled():  # the caller gave up: forget the waiter
                with contextlib.suppress(ValueError):
                    self._applied_waiters.remove(entry)

    def _notify_applied(self) -> None:
        keep = []
        for idx, fut in self._applied_waiters:
            if self._applied >= idx:
                if not fut.done():
                    fut.set_result(None)
            else:
                keep.append((idx, fut))
        self._applied_waiters = keep

    # -- proposals and reads -------------------------------------------------------------

    @property
    def is_learner(self) -> bool:
        me = self.members.members.get(self.cfg.member_id)
        return me is not None and me.isLearner

    async def _propose(self, req: ipb.InternalRaftRequest, *, internal: bool = False) -> Any:
        """Propose ``req`` and wait until it is applied; its result, or the error raised.
        ``internal`` proposals are the member's own (publish): raft forwards them to the
        leader even from a learner, which refuses clients' proposals as etcd does."""
        if self._stopped:
            raise errors.STOPPED
        if self.is_learner and not internal:
            raise errors.NOT_SUPPORTED_FOR_LEARNER
        rid = next(self._ids)
        req.header.ID = rid
        data = req.SerializeToString()
        if len(data) > self.cfg.max_request_bytes:
            raise errors.REQUEST_TOO_LARGE
        if self._lead == 0:
            await self._wait_leader()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._waiters[rid] = fut
        if not self._proposals:
            loop.call_soon(self._flush_proposals)
        self._proposals.append((data, fut))
        try:
            return await asyncio.wait_for(fut, self.cfg.request_timeout_s)
        except TimeoutError:
            raise errors.TIMEOUT from None
        finally:
            self._waiters.pop(rid, None)

    def _flush_proposals(self) -> None:
        """Hand every proposal made since the last flush to raft as one MsgProp (group
        proposal): one append and one MsgApp per follower for the batch instead of one per
        request, and on a follower one forwarded MsgProp. Raft accepts or drops a MsgProp
        as a whole; a dropped batch fails each of its callers with NO_LEADER. Batches are cut
        at PROPOSAL_BATCH_BYTES so a forwarded MsgProp stays the size of one MsgApp."""
        pending, self._proposals = self._proposals, []
        start = size = 0
        for i, (data, _) in enumerate(pending):
            size += len(data)
            if size >= PROPOSAL_BATCH_BYTES or i == len(pending) - 1:
                self._propose_batch(pending[start : i + 1])
                start, size = i + 1, 0

    def _propose_batch(self, batch: list[tuple[bytes, asyncio.Future[Any]]]) -> None:
        try:
            self.node.propose_many([data for data, _ in batch])
        except Exception as exc:  # noqa: BLE001 - each caller gets it, as a direct call would
            err = errors.NO_LEADER if isinstance(exc, ProposalDropped) else exc
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(err)
            return
        self._wake.set()

    def _issue_read(self, ctx: bytes) -> None:
        self._read_batch = None
        fut = self._reads.get(ctx)
        if fut is None or fut.done():
            return
        self.node.read_index(ctx)
        self._wake.set()
        # a read index that never comes back (leader lost) fails at the callers' timeout
        asyncio.get_running_loop().call_later(
            self.cfg.request_timeout_s, lambda: self._reads.pop(ctx, None)
        )

    async def _wait_leader(self) -> None:
        """Wait for a known leader, up to the request timeout, as etcd's raft node holds a
        proposal while there is none; then fail as etcd does (a loaded machine or a
        partition heal can take several election timeouts to produce a leader)."""
        deadline = asyncio.get_running_loop().time() + self.cfg.request_timeout_s
        while self._lead == 0:
            if asyncio.get_running_loop().time() > deadline:
                raise errors.TIMEOUT_DUE_TO_LEADER_FAIL
            await asyncio.sleep(self.cfg.heartbeat_interval_ms / 1000)

    async def _linearizable_barrier(self) -> None:
        """Wait until this member has applied everything committed when the call began.

        Concurrent callers share one ReadIndex round (etcd's linearizableReadLoop): the
        first caller opens a batch that is sent on the next loop iteration; everyone who
        arrives before then joins it."""
        if self._lead == 0:
            await self._wait_leader()
        loop = asyncio.get_running_loop()
        if self._read_batch is None:
            ctx = secrets.token_bytes(8)
            batch: asyncio.Future[int] = loop.create_future()
            self._reads[ctx] = batch
            self._read_batch = batch
            loop.call_soon(self._issue_read, ctx)
        fut = self._read_batch
        try:
            index = await asyncio.wait_for(asyncio.shield(fut), self.cfg.request_timeout_s)
        except TimeoutError:
            raise errors.TIMEOUT from None
        if self._applied < index:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._applied_waiters.append((index, done))
            try:
                await asyncio.wait_for(done, self.cfg.request_timeout_s)
            except TimeoutError:
                raise errors.TIMEOUT from None

    # -- the interface keelson.api calls ---------------------------------------------------

    def header(self) -> pb.ResponseHeader:
        return pb.ResponseHeader(
            cluster_id=self.cfg.cluster_id,
            member_id=self.cfg.member_id,
            revision=self.kv.current_revision,
            raft_term=self._term,
        )

    def _cluster_header(self) -> pb.ResponseHeader:
        """The header of Cluster service responses: etcd leaves the revision out."""
        return pb.ResponseHeader(
            cluster_id=self.cfg.cluster_id, member_id=self.cfg.member_id, raft_term=self._term
        )

    def _header_at(self, revision: int) -> pb.ResponseHeader:
        """The header of a response about ``revision``: as etcd, a read or write reports the
        revision it read or wrote, not whatever is newest when the response is sent (other
        writes may be applied in the same batch before the caller resumes)."""
        h = self.header()
        h.revision = revision
        return h

    async def range(self, req: pb.RangeRequest, identity: Any = None) -> pb.RangeResponse:
        if not req.serializable:
            if self.is_learner:
                raise errors.NOT_SUPPORTED_FOR_LEARNER
            await self._linearizable_barrier()
        info = await self.auth.check_range(identity, req)
        try:
            resp = self.kv.range(convert.range_from_pb(req))
        except ValueError as exc:
            raise errors.EtcdError(errors.Code.INVALID_ARGUMENT, f"etcdserver: {exc}") from None
        except mvcc.MvccError as exc:
            raise _mvcc_error(exc) from None
        self.auth.check_revision(info)
        return convert.range_to_pb(resp, self._header_at(resp.revision))

    async def put(self, req: pb.PutRequest, identity: Any = None) -> pb.PutResponse:
        self._check_quota(len(req.key) + len(req.value))
        stamped = await self.auth.stamp(ipb.InternalRaftRequest(put=req), identity)
        r = _ok(await self._propose(stamped))
        return convert.put_to_pb(r, self._header_at(r.revision))

    async def delete_range(
        self, req: pb.DeleteRangeRequest, identity: Any = None
    ) -> pb.DeleteRangeResponse:
        r = _ok(await self._propose(
            await self.auth.stamp(ipb.InternalRaftRequest(delete_range=req), identity)
        ))
        return convert.delete_to_pb(r, self._header_at(r.revision))

    async def txn(self, req: pb.TxnRequest, identity: Any = None) -> pb.TxnResponse:
        if convert.count_txn_ops(req) > self.cfg.max_txn_ops:
            raise errors.TOO_MANY_OPS
        try:
            parsed = convert.txn_from_pb(req)
        except ValueError as exc:
            raise errors.EtcdError(errors.Code.INVALID_ARGUMENT, f"etcdserver: {exc}") from None
        if mvcc_apply.is_txn_read_only(parsed):
            # served like a linearizable range, without a log entry (as etcd does)
            if self.is_learner:
                raise errors.NOT_SUPPORTED_FOR_LEARNER
            await self._linearizable_barrier()
            info = await self.auth.check_read_txn(identity, req)
            try:
                got = self.kv.read_txn(parsed)
                self.auth.check_revision(info)
                return convert.txn_to_pb(got, self._header_at(got.revision))
            except mvcc.MvccError as exc:
                raise _mvcc_error(exc) from None
        self._check_quota(req.ByteSize())
        stamped = await self.auth.stamp(ipb.InternalRaftRequest(txn=req), identity)
        r = _ok(await self._propose(stamped))
        return convert.txn_to_pb(r, self._header_at(r.revision))

    async def compact(
        self, req: pb.CompactionRequest, identity: Any = None
    ) -> pb.CompactionResponse:
        _ok(await self._propose(
            await self.auth.stamp(ipb.InternalRaftRequest(compaction=req), identity)
        ))
        return pb.CompactionResponse(header=self.header())

    async def lease_grant(
        self, req: pb.LeaseGrantRequest, identity: Any = None
    ) -> pb.LeaseGrantResponse:
        await self.auth.require_info(identity)
        if req.TTL > MAX_LEASE_TTL:
            raise errors.LEASE_TTL_TOO_LARGE
        self._check_quota(64)
        g = pb.LeaseGrantRequest(TTL=req.TTL, ID=req.ID)
        if g.ID == 0:
            g.ID = next(self._ids) & ((1 << 63) - 1)
        lid, ttl = _ok(await self._propose(ipb.InternalRaftRequest(lease_grant=g)))
        return pb.LeaseGrantResponse(header=self.header(), ID=lid, TTL=ttl)

    async def lease_revoke(
        self, req: pb.LeaseRevokeRequest, identity: Any = None
    ) -> pb.LeaseRevokeResponse:
        await self.auth.require_info(identity)
        _ok(await self._propose(
            await self.auth.stamp(ipb.InternalRaftRequest(lease_revoke=req), identity)
        ))
        return pb.LeaseRevokeResponse(header=self.header())

    async def lease_renew(self, lease_id: int, identity: Any = None) -> int:
        """Keep a lease alive; on a follower the leader is asked (it owns expiry)."""
        await self.auth.check_lease_renew(identity, lease_id)
        if self._state != StateType.LEADER:
            if self._lead == 0:
                await self._wait_leader()
            if self._forward is None or self._lead == self.cfg.member_id:
                raise errors.NO_LEADER
            try:
                answer = await self._forward(
                    self._lead, "lease_renew", lease_id.to_bytes(8, "big", signed=True)
                )
            except Exception as exc:  # noqa: BLE001 - any transport failure: retry later
                if "requested lease not found" in str(exc):
                    raise errors.LEASE_NOT_FOUND from None
                log.debug("forwarding lease renew to %x: %s", self._lead, exc)
                raise errors.TIMEOUT from None
            return int.from_bytes(answer, "big", signed=True)
        try:
            return self.leases.renew(lease_id, time.monotonic())
        except NotPrimary:
            raise errors.NOT_LEADER from None
        except errors.EtcdError:
            if not self.leases.lease_exists(lease_id):
                raise
            # Expired but not yet revoked: as etcd's lessor, answer "not found" only once the
            # revoke is applied, so a client told its lease is gone finds its keys gone too.
            await self._wait_lease_revoked(lease_id)
            raise

    async def _wait_lease_revoked(self, lease_id: int) -> None:
        """Wait until ``lease_id`` is revoked; NOT_LEADER if this member stops leading first
        (the client retries with the new leader, which restarted the lease's TTL)."""
        deadline = time.monotonic() + self.cfg.request_timeout_s
        while self.leases.lease_exists(lease_id):
            if self._state != StateType.LEADER:
                raise errors.NOT_LEADER
            if time.monotonic() > deadline:
                raise errors.TIMEOUT
            await asyncio.sleep(self.cfg.heartbeat_interval_ms / 1000)

    async def handle_forwarded_renew(self, payload: bytes) -> bytes:
        """Transport handler for ``lease_renew`` from a follower."""
        if len(payload) != 8:
            raise ValueError("bad lease renew payload")
        ttl = await self.lease_renew(
            int.from_bytes(payload, "big", signed=True), identity=PEER_CHECKED
        )
        return ttl.to_bytes(8, "big", signed=True)

    async def lease_time_to_live(
        self, req: pb.LeaseTimeToLiveRequest, identity: Any = None
    ) -> pb.LeaseTimeToLiveResponse:
        auth_info = await self.auth.check_lease_time_to_live(identity, req)
        if self._state != StateType.LEADER and identity is not PEER_CHECKED:
            answer = await self._time_to_live_via_leader(req)
            if answer is not None:
                return answer
        try:
            info = self.leases.time_to_live(req.ID, time.monotonic())
        except errors.EtcdError:
            return pb.LeaseTimeToLiveResponse(header=self.header(), ID=req.ID, TTL=-1)
        out = pb.LeaseTimeToLiveResponse(
            header=self.header(), ID=req.ID, TTL=info.remaining_ttl, grantedTTL=info.granted_ttl
        )
        if req.keys:
            out.keys.extend(sorted(info.keys))  # etcd's order is Go map order; ours is stable
            self.auth.check_revision(auth_info)
        return out

    async def _time_to_live_via_leader(
        self, req: pb.LeaseTimeToLiveRequest
    ) -> pb.LeaseTimeToLiveResponse | None:
        """Only the leader runs lease expiry (a follower's lessor holds every lease at its
        full TTL), so, as etcd, a follower asks the leader for the remaining TTL. None when
        the leader cannot be asked (no forwarding, no handler, transport trouble): the
        caller answers from its own lessor, with the granted TTL as the remaining one."""
        if self._forward is None or self._lead in (0, self.cfg.member_id):
            return None
        try:
            answer = await self._forward(
                self._lead, "lease_time_to_live", req.SerializeToString()
            )
        except Exception as exc:  # noqa: BLE001 - answered locally instead
            log.debug("forwarding lease time-to-live to %x: %s", self._lead, exc)
            return None
        resp = pb.LeaseTimeToLiveResponse()
        resp.ParseFromString(answer)
        resp.header.CopyFrom(self.header())
        return resp

    async def handle_forwarded_time_to_live(self, payload: bytes) -> bytes:
        """Transport handler for ``lease_time_to_live`` from a follower (answered from this
        member's lessor, never forwarded again)."""
        req = pb.LeaseTimeToLiveRequest()
        req.ParseFromString(payload)
        resp = await self.lease_time_to_live(req, PEER_CHECKED)
        return bytes(resp.SerializeToString())

    async def lease_leases(
        self, req: pb.LeaseLeasesRequest, identity: Any = None
    ) -> pb.LeaseLeasesResponse:
        await self.auth.check_lease_leases(identity, self.leases.leases())
        return pb.LeaseLeasesResponse(
            header=self.header(), leases=[pb.LeaseStatus(ID=i) for i in self.leases.leases()]
        )

    async def status(self, req: pb.StatusRequest, identity: Any = None) -> pb.StatusResponse:
        await self.auth.identify(identity)  # etcd 3.4 checks the token, not the role
        hs = self.storage.hard_state
        return pb.StatusResponse(
            header=self.header(),
            version=SERVER_VERSION,
            dbSize=self.backend.size(),
            dbSizeInUse=self.backend.size_in_use(),
            leader=self._lead,
            raftIndex=max(hs.commit, self.storage.last_index()),
            raftTerm=hs.term,
            raftAppliedIndex=self._applied,
            errors=[
                f"memberID:{m} alarm:{pb.AlarmType.Name(a)} " for m, a in sorted(self._alarms)
            ],
            isLearner=self.is_learner,
        )

    async def member_list(
        self, req: pb.MemberListRequest, identity: Any = None
    ) -> pb.MemberListResponse:
        return pb.MemberListResponse(
            header=self._cluster_header(), members=self.members.sorted()
        )

    async def _propose_conf_change(self, cc_type: ConfChangeType, member: pb.Member) -> Any:
        if self._stopped:
            raise errors.STOPPED
        if self._lead == 0:
            await self._wait_leader()
        rid = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters[rid] = fut
        try:
            self.node.propose_conf_change(
                ConfChange(cc_type, member.ID, encode_context(rid, member))
            )
        except ProposalDropped:
            self._waiters.pop(rid, None)
            raise errors.NO_LEADER from None
        self._wake.set()
        try:
            return _ok(await asyncio.wait_for(fut, self.cfg.request_timeout_s))
        except TimeoutError:
            raise errors.TIMEOUT from None
        finally:
            self._waiters.pop(rid, None)

    async def member_add(
        self, req: pb.MemberAddRequest, identity: Any = None
    ) -> pb.MemberAddResponse:
        await self.auth.check_admin(identity)
        urls = list(req.peerURLs)
        if not urls or any("://" not in u for u in urls):
            raise errors.MEMBER_BAD_URLS
        # etcd's order: quorum check, then the id (urls + time in seconds) removed or taken,
        # then the urls taken, then the learner limit
        reconfig.check_add_quorum(
            self.members.members.values(), req.isLearner, self.cfg.member_id
        )
        data = "".join(sorted(urls)) + str(self.cfg.cluster_id) + str(int(time.time()))
        mid = int.from_bytes(hashlib.sha1(data.encode()).digest()[:8], "big")
        if mid in self.members.removed:
            raise errors.MEMBER_NOT_FOUND
        if mid in self.members.members:
            raise errors.MEMBER_EXIST
        if self.members.url_in_use(urls):
            raise errors.PEER_URL_EXIST
        reconfig.check_learners(self.members.members.values(), req.isLearner)
        m = pb.Member(ID=mid, peerURLs=urls, isLearner=req.isLearner)
        kind = ConfChangeType.ADD_LEARNER_NODE if req.isLearner else ConfChangeType.ADD_NODE
        members = await self._propose_conf_change(kind, m)
        return pb.MemberAddResponse(header=self._cluster_header(), member=m, members=members)

    async def member_remove(
        self, req: pb.MemberRemoveRequest, identity: Any = None
    ) -> pb.MemberRemoveResponse:
        await self.auth.check_admin(identity)
        if req.ID not in self.members.members:
            raise errors.MEMBER_NOT_FOUND
        reconfig.check_remove(self.members.members.values(), req.ID, self.cfg.member_id)
        members = await self._propose_conf_change(
            ConfChangeType.REMOVE_NODE, pb.Member(ID=req.ID)
        )
        return pb.MemberRemoveResponse(header=self._cluster_header(), members=members)

    async def member_update(
        self, req: pb.MemberUpdateRequest, identity: Any = None
    ) -> pb.MemberUpdateResponse:
        await self.auth.check_admin(identity)
        if req.ID not in self.members.members:
            raise errors.MEMBER_NOT_FOUND
        urls = list(req.peerURLs)
        if not urls or any("://" not in u for u in urls):
            raise errors.MEMBER_BAD_URLS
        if self.members.url_in_use(urls, except_id=req.ID):
            raise errors.PEER_URL_EXIST
        members = await self._propose_conf_change(
            ConfChangeType.UPDATE_NODE, pb.Member(ID=req.ID, peerURLs=urls)
        )
        return pb.MemberUpdateResponse(header=self._cluster_header(), members=members)

    async def _promote_via_leader(self, req: pb.MemberPromoteRequest) -> pb.MemberPromoteResponse:
        """On a follower, etcd forwards a promote to the leader, which alone knows whether
        the learner is in sync; the leader's error (e.g. not in sync) comes back as is."""
        if self._lead == 0:
            await self._wait_leader()
        if self._forward is None or self._lead in (0, self.cfg.member_id):
            raise errors.NOT_LEADER
        try:
            answer = await self._forward(self._lead, "member_promote", req.SerializeToString())
        except Exception as exc:  # noqa: BLE001 - the leader's EtcdError, or transport trouble
            found = errors.by_message(str(exc))
            if found is not None:
                raise found from None
            log.debug("forwarding member promote to %x: %s", self._lead, exc)
            raise errors.TIMEOUT from None
        resp = pb.MemberPromoteResponse()
        resp.ParseFromString(answer)
        resp.header.CopyFrom(self.header())
        return resp

    async def handle_forwarded_promote(self, payload: bytes) -> bytes:
        """Transport handler for ``member_promote`` from a follower (never forwarded again)."""
        req = pb.MemberPromoteRequest()
        req.ParseFromString(payload)
        if self._state != StateType.LEADER:
            raise errors.NOT_LEADER
        return bytes((await self.member_promote(req, PEER_CHECKED)).SerializeToString())

    async def publish(self, name: str, client_urls: list[str]) -> None:
        """Record this member's name and client URLs in the replicated member list, as etcd's
        ``publish`` does once a member has started; until then ``member list`` shows it as
        unstarted. Raises an EtcdError when the proposal fails (the caller retries)."""
        me = self.members.members.get(self.cfg.member_id)
        if me is None:
            raise errors.MEMBER_NOT_FOUND
        _ok(await self._propose(ipb.InternalRaftRequest(
            member_attr_set=pb.Member(ID=me.ID, name=name, clientURLs=client_urls)
        ), internal=True))

    async def member_promote(
        self, req: pb.MemberPromoteRequest, identity: Any = None
    ) -> pb.MemberPromoteResponse:
        await self.auth.check_admin(identity)
        m = self.members.members.get(req.ID)
        if m is None:
            raise errors.MEMBER_NOT_FOUND
        if not m.isLearner:
            raise errors.MEMBER_NOT_LEARNER
        if self._state != StateType.LEADER:
            return await self._promote_via_leader(req)
        progress = dict(self.node.status().progress)
        mine = progress.get(self.cfg.member_id)
        theirs = progress.get(req.ID)
        if mine is None or theirs is None or theirs.match < 0.9 * mine.match:
            raise errors.LEARNER_NOT_READY
        reconfig.check_promote(self.members.members.values(), self.cfg.member_id)
        members = await self._propose_conf_change(ConfChangeType.ADD_NODE, pb.Member(ID=req.ID))
        return pb.MemberPromoteResponse(header=self._cluster_header(), members=members)

    async def hash(self, req: pb.HashRequest, identity: Any = None) -> pb.HashResponse:
        await self.auth.check_maintenance(identity)
        h, _ = self.kv.hash()
        return pb.HashResponse(header=self.header(), hash=h)

    async def hash_kv(self, req: pb.HashKVRequest, identity: Any = None) -> pb.HashKVResponse:
        await self.auth.check_maintenance(identity)
        try:
            h, _, compact = self.kv.hash_kv(req.revision)
        except mvcc.MvccError as exc:
            raise _mvcc_error(exc) from None
        # etcd reports compact revision -1 until the first compaction
        return pb.HashKVResponse(
            header=self.header(), hash=h, compact_revision=compact if compact > 0 else -1
        )

    async def defragment(
        self, req: pb.DefragmentRequest, identity: Any = None
    ) -> pb.DefragmentResponse:
        await self.auth.check_maintenance(identity)
        await asyncio.to_thread(self.backend.defragment)
        return pb.DefragmentResponse(header=self.header())

    async def move_leader(
        self, req: pb.MoveLeaderRequest, identity: Any = None
    ) -> pb.MoveLeaderResponse:
        await self.auth.check_admin(identity)
        if self._state != StateType.LEADER:
            raise errors.NOT_LEADER
        target = self.members.members.get(req.targetID)
        if target is None or target.isLearner:
            raise errors.BAD_LEADER_TRANSFEREE
        if req.targetID == self.cfg.member_id:
            return pb.MoveLeaderResponse(header=self.header())  # already there, as etcd
        self.node.transfer_leader(req.targetID)
        self._wake.set()
        deadline = asyncio.get_running_loop().time() + self.cfg.request_timeout_s
        while self._lead != req.targetID:
            if asyncio.get_running_loop().time() > deadline:
                raise errors.TIMEOUT
            await asyncio.sleep(self.cfg.heartbeat_interval_ms / 1000)
        return pb.MoveLeaderResponse(header=self.header())

    async def snapshot(self, identity: Any = None) -> AsyncIterator[bytes]:
        """One consistent view of every bucket, as a bbolt file (etcd's snapshot format, which
        ``etcdctl snapshot status/restore`` open), in chunks; built in a temporary file."""
        await self.auth.check_maintenance(identity)
        tmp = Path(self.cfg.data_dir) / "member" / "snap" / f"snapshot.{secrets.token_hex(4)}"
        try:
            await asyncio.to_thread(self._write_bolt_snapshot, tmp)
            with open(tmp, "rb") as f:
                while chunk := f.read(32 * 1024):
                    yield chunk
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _write_bolt_snapshot(self, path: Path) -> None:
        with open(path, "wb") as out, self.backend.read() as tx:
            write_bolt_image(
                ((name, tx.range(name, b"", None)) for name in self.backend.bucket_names()), out
            )

    def new_watch_stream(self) -> WatchStream:
        return self.watches.new_stream()

    # -- status for tests and the member process ---------------------------------------

    @property
    def is_leader(self) -> bool:
        return self._state == StateType.LEADER

    @property
    def leader_id(self) -> int:
        return self._lead

    @property
    def applied_index(self) -> int:
        return self._applied


def _no_faults(point: str) -> None:
    """Failpoints (``before-apply``: entries durable in the WAL, backend not yet written);
    tests pass a hook that raises to simulate a crash exactly there."""


def _has_oneof(req: ipb.InternalRaftRequest) -> bool:
    return bool(req.DESCRIPTOR.oneofs)


def _first_set(req: ipb.InternalRaftRequest) -> str | None:
    for fd, _ in req.ListFields():
        if fd.name not in ("header", "ID"):
            return str(fd.name)
    return None


def _ok(result: Any) -> Any:
    if isinstance(result, BaseException):
        raise result
    return result


def _mvcc_error(exc: mvcc.MvccError) -> errors.EtcdError:
    found = errors.by_message(exc.client_message())
    if found is not None:
        return found
    return errors.EtcdError(errors.Code.INVALID_ARGUMENT, exc.client_message())
