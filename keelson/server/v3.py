"""The client-facing requests of one member, grouped by etcd's v3 services, as mixins of
EtcdServer: ``KVRequests`` (Range, Put, DeleteRange, Txn, Compact), ``LeaseRequests``
(LeaseGrant/Revoke/KeepAlive/TimeToLive/Leases, and the leader side of renewals and
time-to-live forwarded by followers), ``ClusterRequests`` (MemberAdd/Remove/Update/Promote/
List and this member's ``publish``) and ``MaintenanceRequests`` (Alarm, Status, Hash,
HashKV, Defragment, MoveLeader, Snapshot).

Theory of operation. ``keelson.api`` translates the wire and calls these methods; each checks
the caller's permission through ``self.auth``, validates the request with etcd's errors,
then either reads local state (after a ReadIndex barrier when linearizable) or proposes an
``InternalRaftRequest`` and waits until the ``Applier`` has applied it. Invariants: a write
is answered only after it is applied; nothing here changes replicated state except through
a proposal; every error a client can cause is an ``errors.EtcdError`` with etcd's code and
message.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

from keelson import mvcc
from keelson.backend.bolt_image import write_bolt_image
from keelson.lease import MAX_LEASE_TTL, NotPrimary
from keelson.mvcc import apply as mvcc_apply
from keelson.proto import errors
from keelson.proto.etcdserverpb import raft_internal_pb2 as ipb
from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.raft import ConfChange, ConfChangeType, ProposalDropped, StateType
from keelson.server import convert, reconfig
from keelson.server.apply import mvcc_error, unwrap
from keelson.server.auth import PEER_CHECKED
from keelson.server.membership import encode_context
from keelson.server.parts import ServerParts

log = logging.getLogger(__name__)

SERVER_VERSION = "3.4.0"
"""The version reported by Status: keelson speaks etcd 3.4's API."""


class KVRequests(ServerParts):
    """The KV service: reads served locally, writes proposed and awaited."""

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
            raise mvcc_error(exc) from None
        self.auth.check_revision(info)
        return convert.range_to_pb(resp, self._header_at(resp.revision))

    async def put(self, req: pb.PutRequest, identity: Any = None) -> pb.PutResponse:
        self._check_quota(len(req.key) + len(req.value))
        stamped = ipb.InternalRaftRequest(put=req)
        if identity is not None:  # without credentials there is nothing to stamp
            stamped = await self.auth.stamp(stamped, identity)
        r = unwrap(await self._propose(stamped))
        return convert.put_to_pb(r, self._header_at(r.revision))

    async def delete_range(
        self, req: pb.DeleteRangeRequest, identity: Any = None
    ) -> pb.DeleteRangeResponse:
        r = unwrap(await self._propose(
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
                raise mvcc_error(exc) from None
        self._check_quota(req.ByteSize())
        stamped = await self.auth.stamp(ipb.InternalRaftRequest(txn=req), identity)
        r = unwrap(await self._propose(stamped))
        return convert.txn_to_pb(r, self._header_at(r.revision))

    async def compact(
        self, req: pb.CompactionRequest, identity: Any = None
    ) -> pb.CompactionResponse:
        unwrap(await self._propose(
            await self.auth.stamp(ipb.InternalRaftRequest(compaction=req), identity)
        ))
        return pb.CompactionResponse(header=self.header())


class LeaseRequests(ServerParts):
    """The Lease service; only the leader runs expiry, so followers forward."""

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
        lid, ttl = unwrap(await self._propose(ipb.InternalRaftRequest(lease_grant=g)))
        return pb.LeaseGrantResponse(header=self.header(), ID=lid, TTL=ttl)

    async def lease_revoke(
        self, req: pb.LeaseRevokeRequest, identity: Any = None
    ) -> pb.LeaseRevokeResponse:
        await self.auth.require_info(identity)
        unwrap(await self._propose(
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


class ClusterRequests(ServerParts):
    """The Cluster service: membership changes are raft conf changes."""

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
            return unwrap(await asyncio.wait_for(fut, self.cfg.request_timeout_s))
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
        unwrap(await self._propose(ipb.InternalRaftRequest(
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


class MaintenanceRequests(ServerParts):
    """The Maintenance service."""

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
        r = unwrap(await self._propose(ipb.InternalRaftRequest(alarm=req)))
        return pb.AlarmResponse(alarms=r)

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

    async def hash(self, req: pb.HashRequest, identity: Any = None) -> pb.HashResponse:
        await self.auth.check_maintenance(identity)
        h, _ = self.kv.hash()
        return pb.HashResponse(header=self.header(), hash=h)

    async def hash_kv(self, req: pb.HashKVRequest, identity: Any = None) -> pb.HashKVResponse:
        await self.auth.check_maintenance(identity)
        try:
            h, _, compact = self.kv.hash_kv(req.revision)
        except mvcc.MvccError as exc:
            raise mvcc_error(exc) from None
        # etcd reports compact revision -1 until the first compaction
        return pb.HashKVResponse(
            header=self.header(), hash=h, compact_revision=compact if compact > 0 else -1
        )

    async def defragment(
        self, req: pb.DefragmentRequest, identity: Any = None
    ) -> pb.DefragmentResponse:
        await self.auth.check_maintenance(identity)
        self.backend.flush()  # the worker thread needs the writer lock
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
            self.backend.flush()  # the worker thread sees the flushed state only
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
