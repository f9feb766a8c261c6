"""One cluster member: drives raft, persists to the WAL, applies to mvcc, serves requests.

Theory of operation. ``EtcdServer`` owns a ``RawNode`` over a ``MemoryStorage`` that mirrors
the WAL. A single task, the raft loop, takes each ``Ready`` and, in this order: saves the
entries and hard state to the WAL (fsync when raft says so), appends them to the storage,
hands messages to the transport (only after they are durable), applies the committed entries
to the backend's pending transaction (one nested write transaction per Ready, holding the
consistent index too), wakes the waiters of the applied requests by request id, and calls
``advance``. Proposals are handed to raft once per event loop turn, all of that turn's
requests in one MsgProp (``_flush_proposals``), so raft sends one append per follower for
them rather than one per request; requests that arrive during a save are read after it and
go out together in the next Ready (the group commit).

WAL save on the loop's thread. The save (a buffered write and one fdatasync, ~0.2 ms here)
runs on the event loop's thread, as etcd's raft goroutine blocks on its own fsync: handing
it to a worker thread and back cost more than the fsync itself (3 members, put at 1 client:
~250 puts/s through ``asyncio.to_thread`` against ~500/s inline, 1.1 ms less CPU per put
over the members; no difference at 256 clients; bench/README.md). Raft makes no progress
during a save either way; what a slow disk now also delays is this member's serializable
reads and watch events.

Backend commit (etcd's batch transaction). Applies go to the backend's pending transaction,
committed with one fsync every ``--backend-batch-interval`` (100 ms), every
``--backend-batch-limit`` writes (10000) or ``BACKEND_BATCH_BYTES``, before a snapshot
releases WAL segments, before a worker thread reads or rewrites the backend, and at stop
(``keelson.backend``). So a write is answered once it is durable in the WAL of a quorum and
applied, not once the backend fsynced it; reads on this member see the pending writes. A
crash loses the pending transaction together with its consistent index, and the restart
re-applies those entries from the WAL.

Parallel append (on by default; ``KEELSON_PARALLEL_APPEND=0`` turns it off, read once when
the ``MemberConfig`` is built). A leader sends its appends and heartbeats
*before* its own WAL fsync (Raft thesis §10.2.1), so its fsync overlaps the followers'
ones; the rule and why it is safe are in ``keelson/raft/parallel_append.py``. What this loop
guarantees for it: the next Ready is taken only after this one's save returned, so a commit
index that counted the leader's not yet durable entries reaches no one before they are
durable. The save runs on the loop's thread as in the default mode; the early appends go out
before it because the transport writes a message to an idle peer's socket at once
(``Transport._write_now``), so the followers' fsyncs overlap the leader's.

Inline Ready (on by default; ``KEELSON_INLINE_READY=0`` leaves every Ready to the loop task).
Whoever just fed raft (the transport after a read of peer messages, the proposal flush, a
read index request) calls ``drive``, which handles the resulting Readys there and then when
no Ready is being handled, instead of waking the loop task for them: one event loop turn
less per hop of a write. The loop task remains for what ``drive`` leaves (a tick, a Ready
that installs a snapshot, anything fed while a Ready was being handled). Measured with
``bench.ab`` against the loop-task-only tree: put 3 members 16/256 +9% requests/s and
-8% CPU per request, linearizable range 16/256 +5%, put 1/1 +3-7%.

Commit notices (``keelson.server.commit_notice``): while writes come often, a leader holds
the entry-less appends that only tell a follower the new commit index for up to 2 ms, and
drops them when the next append carries the same news, saving every follower a wake-up per
write; a follower waiting for its own forwarded proposal is told at once. Tuned (or turned
off with 0) by ``KEELSON_COMMIT_NOTICE_HOLD_MS``.

Durability: a write is acknowledged only after its entry is committed, durable in the WAL of
a quorum and applied to the backend's pending transaction. Replay after a crash is
idempotent: entries at or below the backend's consistent index are not re-applied to the key
space.

Reads: linearizable reads ask raft for a read index and wait until it is applied;
serializable reads are served from the local store at once.

Layout, as etcd's server: this module owns construction, start/stop, the raft loop (ticker,
Ready handling, persistence, sending, snapshots) and the propose/read-index plumbing;
``apply.py`` (``Applier``) applies committed entries; ``v3.py`` holds the client-facing
requests, one mixin per etcd service. ``parts.py`` declares, for the type checker only,
what those mixins use of the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keelson import mvcc
from keelson.auth import AuthStore
from keelson.backend import Backend
from keelson.lease import LEASE_BUCKET, Lessor, NotPrimary, min_lease_ttl
from keelson.proto import errors
from keelson.proto.etcdserverpb import raft_internal_pb2 as ipb
from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.raft import (
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
from keelson.raft.parallel_append import split_early
from keelson.server import envvars
from keelson.server.apply import ALARM_BUCKET, NOSPACE, Applier
from keelson.server.auth import MemberAuth
from keelson.server.commit_notice import HOLD_S, CommitNotices
from keelson.server.compactor import Compactor, parse_retention
from keelson.server.disk_metrics import DurationHistogram
from keelson.server.membership import MEMBERS_BUCKET, MemberTable
from keelson.server.snapshot import backend_image, install_image
from keelson.server.v3 import ClusterRequests, KVRequests, LeaseRequests, MaintenanceRequests
from keelson.server.watch import (
    WATCH_RESPONSE_OVERHEAD_BYTES,
    WatchHub,
    WatchStream,
    progress_notify_interval,
)
from keelson.wal import WAL, Snapshotter

log = logging.getLogger(__name__)

DEFAULT_QUOTA_BYTES = 2 * 1024 * 1024 * 1024
PROPOSAL_BATCH_BYTES = 1024 * 1024
"""Most bytes of requests proposed to raft in one MsgProp (raft's max_size_per_msg)."""
DEFAULT_BACKEND_BATCH_INTERVAL_S = 0.1
DEFAULT_BACKEND_BATCH_LIMIT = 10000
BACKEND_BATCH_BYTES = 32 * 1024 * 1024
"""Pending key+value bytes that commit the backend at once (bounds LMDB's dirty pages)."""
PARALLEL_APPEND_ENV = "KEELSON_PARALLEL_APPEND"
"""``=0`` turns off parallel append (see the module docstring); ``=1`` or unset: on."""

COMMIT_NOTICE_HOLD_ENV = "KEELSON_COMMIT_NOTICE_HOLD_MS"

COALESCE_FORWARDED_S = 0.001
"""A forwarded proposal this soon after the previous proposal waits for the loop turn's
Ready instead of being driven on delivery (``EtcdServer.drive_delivered``)."""

INLINE_READY_ENV = "KEELSON_INLINE_READY"
"""``=0``: only the raft loop task handles Readys (see ``EtcdServer.drive``); ``=1`` or unset:
the callers that fed raft handle them at once."""


def commit_notice_hold_from_env() -> float:
    """Seconds a leader may hold a commit-only append (``keelson.server.commit_notice``):
    ``KEELSON_COMMIT_NOTICE_HOLD_MS`` (0 turns the hold off; unset or not a number from 0
    to 100: the default, ``HOLD_S``)."""
    ms = envvars.number(os.environ, COMMIT_NOTICE_HOLD_ENV, float, 0.0, 100.0, HOLD_S * 1000,
                        "milliseconds from 0 to 100")
    return ms / 1000


def inline_ready_from_env() -> bool:
    """``KEELSON_INLINE_READY`` (the MemberConfig default)."""
    return envvars.switch(os.environ, INLINE_READY_ENV, "inline Ready")


def parallel_append_from_env() -> bool:
    """``KEELSON_PARALLEL_APPEND`` (the MemberConfig default)."""
    return envvars.switch(os.environ, PARALLEL_APPEND_ENV, "parallel append")


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
    client_cert_auth: bool = False  # --client-cert-auth: a certificate's CN names the user
    watch_progress_notify_interval_s: float = 600.0  # <= 0: etcd's 10 minutes
    request_timeout_s: float = 7.0
    backend_batch_interval_s: float = 0.0  # --backend-batch-interval; <= 0: 100 ms
    backend_batch_limit: int = 0  # --backend-batch-limit; <= 0: 10000 writes
    fsync: bool = True
    parallel_append: bool = field(default_factory=parallel_append_from_env)
    """The leader sends appends before its own WAL fsync (module docstring)."""
    commit_notice_hold_s: float = field(default_factory=commit_notice_hold_from_env)
    """How long a leader may hold a commit-only append (``keelson.server.commit_notice``);
    0 sends every one at once."""
    inline_ready: bool = field(default_factory=inline_ready_from_env)
    """Readys are handled by whoever fed raft, at once, when the raft loop is idle
    (``EtcdServer.drive``)."""


class _Waiter:
    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future[Any]) -> None:
        self.future = future


class EtcdServer(KVRequests, LeaseRequests, ClusterRequests, MaintenanceRequests, Applier):
    """See the module docstring. Build, ``await start()``, serve, ``await stop()``."""

    def __init__(
        self,
        cfg: MemberConfig,
        send: Callable[[list[Message]], None] | None = None,
        faults: Callable[[str], None] | None = None,
        forward: Callable[[int, str, bytes], Awaitable[bytes]] | None = None,
    ):
        self.cfg = cfg
        if not cfg.parallel_append:
            log.info("parallel append off (%s=0): the leader fsyncs before sending appends",
                     PARALLEL_APPEND_ENV)
        self._forward = forward
        self._send = send
        hold = cfg.commit_notice_hold_s
        self._notices: CommitNotices | None = None
        if send is not None and hold > 0:
            self._notices = CommitNotices(
                send, lambda d, f: asyncio.get_running_loop().call_later(d, f), hold_s=hold)
        self._faults = faults or _no_faults
        member_dir = Path(cfg.data_dir) / "member"
        self._wal_dir = Path(cfg.wal_dir) if cfg.wal_dir else member_dir / "wal"
        self._db_dir = member_dir / "snap" / "db"
        os.makedirs(member_dir / "snap", exist_ok=True)
        parse_retention(cfg.auto_compaction_mode, cfg.auto_compaction_retention)  # validate
        self.wal_fsync_seconds = DurationHistogram()
        """Every WAL fdatasync (etcd_disk_wal_fsync_duration_seconds)."""
        self.backend_commit_seconds = DurationHistogram()
        """Every durable backend commit (etcd_disk_backend_commit_duration_seconds)."""
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
        self._reads: dict[bytes, _ReadBatch] = {}
        """Read index requests sent to raft and not answered yet, by request context."""
        self._applied_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._ids = itertools.count(secrets.randbits(40) << 16)
        self._wake = asyncio.Event()
        self._in_ready = False
        """A Ready is being handled (by the loop task or ``drive``): no other may be taken."""
        self._forwarded_pending = False
        """A follower's MsgProp came while proposals are frequent and no Ready has taken it
        yet (``drive_delivered`` leaves it to the next turn's Ready)."""
        self._last_proposal_at = 0.0  # monotonic time of the last proposal made or forwarded
        self._tasks: list[asyncio.Task[None]] = []
        self._bg: set[asyncio.Task[None]] = set()
        self._read_batch: _ReadBatch | None = None
        self._proposals: _Proposals | None = None
        """Proposals made in this loop turn, handed to raft together by _flush_proposals."""
        self._stopped = False
        self._batch_interval = (
            cfg.backend_batch_interval_s if cfg.backend_batch_interval_s > 0
            else DEFAULT_BACKEND_BATCH_INTERVAL_S
        )
        self._batch_limit = (
            cfg.backend_batch_limit if cfg.backend_batch_limit > 0 else DEFAULT_BACKEND_BATCH_LIMIT
        )
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
        self.wal.sync_observer = self.wal_fsync_seconds.observe
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
        self.kv = mvcc.KVStore(self.backend, lessor=self.leases, deferred=True)
        self.backend.commit_observer = self.backend_commit_seconds.observe
        self._alarms: set[tuple[int, int]] = set()
        with self.backend.read() as tx:
            for k, _ in tx.range(ALARM_BUCKET, b"", None):
                if len(k) == 9:
                    self._alarms.add((int.from_bytes(k[:8], "big"), k[8]))
        self._consistent_index = self.backend.consistent_index()[0]

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
            self.backend.flush()  # the image must reach at least the snapshot's index
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
        # not ``while True``: on Python 3.11 ``wait_for`` (in _propose) swallows a
        # cancellation that arrives as its future completes, and stop() would then wait
        # for this loop forever (seen as a 300 s hang of test_auto_compaction_revision_mode)
        while not self._stopped:
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
            asyncio.create_task(self._backend_committer(), name="backend-committer"),
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
        if self._notices is not None:
            self._notices.drop()
        self.wal.close()
        self.backend.close()

    def _fail_all(self, err: errors.EtcdError) -> None:
        futs: list[asyncio.Future[Any]] = list(self._waiters.values())
        for batch in self._reads.values():
            futs += batch.waiters
        futs += [f for _, f in self._applied_waiters]
        _fail_pending(futs, err)

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
        if msg.type == MessageType.PROP:
            self._note_proposed(len(msg.entries), msg.frm)
            now = time.monotonic()
            if now - self._last_proposal_at < COALESCE_FORWARDED_S:
                self._forwarded_pending = True
            self._last_proposal_at = now
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._in_ready:  # ``drive`` is handling one; it sets the event again if needed
                continue
            try:
                while self.node.has_ready():
                    rd = self._take_ready()
                    try:
                        await self._handle_ready(rd)
                    finally:
                        self._in_ready = False
            except asyncio.CancelledError:
                raise
            except Exception:
                self._loop_failed()
                return

    def _take_ready(self) -> Ready:
        """Take raft's Ready; no other is taken until ``_in_ready`` is cleared after it is
        handled. It holds every proposal stepped so far, forwarded ones included."""
        rd = self.node.ready()
        self._forwarded_pending = False
        self._in_ready = True
        return rd

    def _loop_failed(self) -> None:
        log.exception("raft loop failed; member stops serving requests")
        self._stopped = True
        self._fail_all(errors.STOPPED)

    def drive_delivered(self) -> None:
        """``drive`` after a read of peer messages (the transport's ``on_delivered``),
        except when those included a follower's forwarded proposal that came less than
        ``COALESCE_FORWARDED_S`` after the previous proposal: that one waits for the next
        Ready, taken in this loop turn by the proposal flush or the loop task, so the
        proposals of every follower and of this member's clients that arrive together are
        appended, fsynced and sent in one Ready (group commit) rather than one per read.
        Driving each at once cost the leader 1.6x the fsyncs per put at 16/256 (0.028
        against 0.017-0.019); a lone proposal is driven at once, saving the loop turn."""
        if not self._forwarded_pending:
            self.drive()

    def drive(self) -> None:
        """Handle raft's pending Readys now, on the caller's stack, if no Ready is being
        handled: called right after raft was fed (a batch of peer messages, a batch of
        proposals, a read index request), it saves the raft loop task's wake-up, one event
        loop turn per hop of a write (a leader's append, a follower's answer, the commit).
        A Ready that installs a snapshot needs the loop task (it awaits a thread), so
        ``drive`` stops before one and leaves it to the task, as it leaves everything when
        ``inline_ready`` is off. The order of Readys is the one the loop task keeps: one at a
        time, the next taken only after the previous one's save returned."""
        if self._in_ready or self._stopped or not self._tasks or not self.cfg.inline_ready:
            return  # busy, stopped, not started yet (the loop task takes over at start), off
        node = self.node
        try:
            while node.has_ready():
                if node.raft.log.unstable.snapshot is not None:
                    self._wake.set()
                    return
                rd = self._take_ready()
                try:
                    self._handle_ready_now(rd)
                finally:
                    self._in_ready = False
        except Exception:
            self._loop_failed()
            for task in self._tasks:
                if task.get_name() == "raft-loop":
                    task.cancel()

    async def _handle_ready(self, rd: Ready) -> None:
        self._note_soft_state(rd)
        if rd.snapshot is not None and not rd.snapshot.is_empty():
            self.backend.flush()  # the worker thread closes the backend
            await asyncio.to_thread(self._install_snapshot, rd.snapshot)
            self.watches.rebind(self.kv)  # on the loop's thread, like every watch call
        self._handle_ready_now(rd, soft_state_noted=True)

    def _note_soft_state(self, rd: Ready) -> None:
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

    def _handle_ready_now(self, rd: Ready, *, soft_state_noted: bool = False) -> None:
        """Everything a Ready asks for except installing a snapshot (``_handle_ready``
        did that first): save, send, apply, advance."""
        if not soft_state_noted:
            self._note_soft_state(rd)
        messages = rd.messages
        if self.cfg.parallel_append:
            early, messages = split_early(
                rd,
                is_leader=self._state == StateType.LEADER,
                durable_term=self.storage.hard_state.term,
                durable_last_index=self.storage.last_index(),
            )
            if early and self._send is not None:
                self._send_peers(list(early))
                self._faults("after-early-send")
        if rd.entries or rd.hard_state is not None:
            self.wal.save(rd.hard_state, rd.entries, rd.must_sync)
        if rd.hard_state is not None:
            self.storage.set_hard_state(rd.hard_state)
            self._term = rd.hard_state.term
        if rd.entries:
            self.storage.append(rd.entries)
        if messages and self._send is not None:
            snaps = [m for m in messages if m.type == MessageType.SNAP]
            self._send_peers([m for m in messages if m.type != MessageType.SNAP])
            if snaps:
                task = asyncio.create_task(self._send_with_image(snaps))
                self._bg.add(task)
                task.add_done_callback(self._bg.discard)
        for rs in rd.read_states:
            batch = self._reads.pop(rs.request_ctx, None)
            if batch is not None:
                self._read_index_known(batch, rs.index)
        if rd.committed_entries:
            self._faults("before-apply")
            self._apply(rd)
            self._maybe_flush_backend()
            self.watches.sync()
        self.node.advance(rd)
        self._notify_applied()
        if rd.committed_entries:
            # A snapshot sent to a new member must name it in its conf state, so a conf
            # change forces a snapshot once the log has been compacted at least once.
            conf = any(e.type == EntryType.CONF_CHANGE for e in rd.committed_entries)
            self._maybe_snapshot(force=conf and self._snap_index > 0)

    def _maybe_flush_backend(self) -> None:
        """Commit the backend's pending transaction once it holds the batch limit of writes
        or bytes; the timer (``_backend_committer``) commits it otherwise."""
        b = self.backend
        if b.pending_writes >= self._batch_limit or b.pending_bytes >= BACKEND_BATCH_BYTES:
            b.flush()

    async def _backend_committer(self) -> None:
        """Every batch interval, commit what the applies left pending (etcd's batch tx
        ticker): bounds how much a restart re-applies from the WAL."""
        while True:
            await asyncio.sleep(self._batch_interval)
            if self.backend.pending_age() >= self._batch_interval * 0.5:
                self.backend.flush()

    def quota_bytes(self) -> int:
        """The backend quota in force (``--quota-backend-bytes``, 0 meaning etcd's default)."""
        return self.cfg.quota_backend_bytes or DEFAULT_QUOTA_BYTES

    def key_count(self) -> int:
        """Keys existing at the current revision (O(1); etcd's keys gauge in /metrics)."""
        return self.kv.key_count()

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
        batch = self._proposals
        if batch is None:
            batch = self._proposals = _Proposals()
            batch.timer = loop.call_later(self.cfg.request_timeout_s, batch.time_out)
            loop.call_soon(self._flush_proposals)
        batch.items.append((data, fut))
        batch.waiting += 1
        try:
            return await fut
        finally:
            batch.settled()
            self._waiters.pop(rid, None)

    def _flush_proposals(self) -> None:
        """Hand every proposal made since the last flush to raft as one MsgProp (group
        proposal): one append and one MsgApp per follower for the batch instead of one per
        request, and on a follower one forwarded MsgProp. Raft accepts or drops a MsgProp
        as a whole; a dropped batch fails each of its callers with NO_LEADER. Batches are cut
        at PROPOSAL_BATCH_BYTES so a forwarded MsgProp stays the size of one MsgApp."""
        batch, self._proposals = self._proposals, None
        if batch is None:
            return
        pending = batch.items
        start = size = 0
        for i, (data, _) in enumerate(pending):
            size += len(data)
            if size >= PROPOSAL_BATCH_BYTES or i == len(pending) - 1:
                self._propose_batch(pending[start : i + 1])
                start, size = i + 1, 0
        self.drive()

    def _propose_batch(self, batch: list[tuple[bytes, asyncio.Future[Any]]]) -> None:
        try:
            self.node.propose_many([data for data, _ in batch])
        except Exception as exc:  # noqa: BLE001 - each caller gets it, as a direct call would
            err = errors.NO_LEADER if isinstance(exc, ProposalDropped) else exc
            _fail_pending((fut for _, fut in batch), err)
            return
        self._note_proposed(len(batch))
        self._last_proposal_at = time.monotonic()
        self._wake.set()

    def _note_proposed(self, n: int, forwarded_by: int = 0) -> None:
        """Tell the commit notice hold that this leader just appended ``n`` proposed
        entries (its own, or ``forwarded_by`` a follower)."""
        if self._notices is not None and self._state == StateType.LEADER:
            last = self.node.raft.log.last_index()
            self._notices.proposed(time.monotonic(), last - n + 1, last, forwarded_by)

    def _send_peers(self, msgs: list[Message]) -> None:
        """Hand raft's messages (no snapshots) to the transport, through the commit
        notice hold when it is on."""
        if self._notices is not None:
            self._notices.send(msgs, self._state == StateType.LEADER)
        elif self._send is not None:
            self._send(msgs)

    def _issue_read(self, ctx: bytes) -> None:
        self._read_batch = None
        if ctx not in self._reads:
            return
        self._send_read_index(ctx)

    def _send_read_index(self, ctx: bytes) -> None:
        """Ask raft for a read index; during an election (no leader: raft drops it) ask
        again every heartbeat until the batch is answered or given up."""
        if ctx not in self._reads or self._stopped:
            return
        try:
            self.node.read_index(ctx)
        except ProposalDropped:
            asyncio.get_running_loop().call_later(
                self.cfg.heartbeat_interval_ms / 1000, self._send_read_index, ctx
            )
            return
        self._wake.set()
        self.drive()

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
        batch = self._read_batch
        if batch is None:
            ctx = secrets.token_bytes(8)
            batch = _ReadBatch(ctx)
            self._reads[ctx] = batch
            self._read_batch = batch
            loop.call_soon(self._issue_read, ctx)
            # A read index that never comes back (leader lost) fails the batch.
            loop.call_later(self.cfg.request_timeout_s, self._read_index_lost, batch)
        mine: asyncio.Future[None] = loop.create_future()
        batch.waiters.append(mine)
        await mine

    def _read_index_known(self, batch: _ReadBatch, index: int) -> None:
        """The batch's read index came back: its callers may read once ``index`` is
        applied here (now, or within another request timeout)."""
        if self._applied >= index:
            for fut in batch.waiters:
                if not fut.done():
                    fut.set_result(None)
            return
        for fut in batch.waiters:
            self._applied_waiters.append((index, fut))
        asyncio.get_running_loop().call_later(
            self.cfg.request_timeout_s, _fail_pending, batch.waiters, errors.TIMEOUT)

    def _read_index_lost(self, batch: _ReadBatch) -> None:
        if self._reads.get(batch.ctx) is batch:
            del self._reads[batch.ctx]
            _fail_pending(batch.waiters, errors.TIMEOUT)

    # -- response headers -------------------------------------------------------------

    def header(self) -> pb.ResponseHeader:
        return self._header_at(self.kv.current_revision)

    def _cluster_header(self) -> pb.ResponseHeader:
        """The header of Cluster service responses: etcd leaves the revision out."""
        return pb.ResponseHeader(
            cluster_id=self.cfg.cluster_id, member_id=self.cfg.member_id, raft_term=self._term
        )

    def _header_at(self, revision: int) -> pb.ResponseHeader:
        """The header of a response about ``revision``: as etcd, a read or write reports the
        revision it read or wrote, not whatever is newest when the response is sent (other
        writes may be applied in the same batch before the caller resumes)."""
        # Field by field: a third less time than the keyword constructor, on every answer.
        h = pb.ResponseHeader()
        h.cluster_id = self.cfg.cluster_id
        h.member_id = self.cfg.member_id
        h.revision = revision
        h.raft_term = self._term
        return h

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


class _ReadBatch:
    """One ReadIndex round shared by every linearizable read that arrived before it was
    sent; each caller awaits its own future (so a caller's cancellation is its own), all
    resolved together. One future per read instead of ``wait_for(shield(batch))``'s
    three, and one timer per batch instead of one per read."""

    __slots__ = ("ctx", "waiters")

    def __init__(self, ctx: bytes) -> None:
        self.ctx = ctx
        self.waiters: list[asyncio.Future[None]] = []


def _fail_pending(futs: Iterable[asyncio.Future[Any]], err: BaseException) -> None:
    """Fail every future of ``futs`` that is not done yet with ``err``."""
    for fut in futs:
        if not fut.done():
            fut.set_exception(err)


class _Proposals:
    """The proposals of one loop turn and their one request timer: a timer per request
    (``call_later`` + ``cancel``) cost 2 µs of every put. The timer fails every waiter
    still waiting with etcd's "request timed out"; it is cancelled once none is."""

    __slots__ = ("items", "waiting", "timer")

    def __init__(self) -> None:
        self.items: list[tuple[bytes, asyncio.Future[Any]]] = []
        self.waiting = 0
        self.timer: asyncio.TimerHandle | None = None

    def settled(self) -> None:
        """One caller stopped waiting (answered, failed or cancelled)."""
        self.waiting -= 1
        if not self.waiting and self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def time_out(self) -> None:
        self.timer = None
        _fail_pending((fut for _, fut in self.items), errors.TIMEOUT)


def _no_faults(point: str) -> None:
    """Failpoints (``before-apply``: entries durable in the WAL, backend not yet written;
    ``after-early-send``: with parallel append, a leader's appends sent, its own WAL write
    not started); tests pass a hook that raises to simulate a crash exactly there."""

