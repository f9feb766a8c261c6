"""An in-memory stand-in for the member object that keelson.api talks to.

Theory of operation: one dict from key to KeyValue, a revision counter, leases with a
TTL (no expiry clock: leases live until revoked), and watch streams that receive every
event as it happens. It implements the server interface the api layer calls (async
methods taking and returning the generated protobuf messages, raising
``keelson.proto.errors`` for client errors) with etcd's visible semantics where cheap:
revisions, create/mod revision and version, prev_kv, range_end and "\\0" meaning "from
key", count_only/keys_only/limit, compare-and-swap txns, compaction errors on watch.
It is test support for the wire layer, not a model of consistency.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from keelson.proto import errors
from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.proto.mvccpb import kv_pb2


def _in_range(key: bytes, start: bytes, end: bytes) -> bool:
    if not end:
        return key == start
    if end == b"\0":
        return key >= start
    return start <= key < end


@dataclass
class _Watcher:
    watch_id: int
    key: bytes
    range_end: bytes
    prev_kv: bool


@dataclass
class FakeWatchStream:
    """The per-gRPC-stream watch object (create/cancel/request_progress/next/close)."""

    server: FakeServer
    watchers: dict[int, _Watcher] = field(default_factory=dict)
    queue: asyncio.Queue[pb.WatchResponse | None] = field(default_factory=asyncio.Queue)
    next_id: int = 0
    closed: bool = False

    def create(self, req: pb.WatchCreateRequest) -> pb.WatchResponse | None:
        if req.start_revision and req.start_revision <= self.server.compacted:
            return pb.WatchResponse(
                header=self.server.header(),
                watch_id=-1,
                created=True,
                canceled=True,
                compact_revision=self.server.compacted,
            )
        wid = req.watch_id or self.next_id
        self.next_id = max(self.next_id, wid) + 1
        w = _Watcher(wid, req.key, req.range_end, req.prev_kv)
        self.watchers[wid] = w
        resp = pb.WatchResponse(header=self.server.header(), watch_id=wid, created=True)
        if req.start_revision:
            self.queue.put_nowait(resp)
            events = [(rev, ev) for rev, ev in self.server.history if rev >= req.start_revision]
            batch = self._filter(w, [ev for _, ev in events])
            if batch:
                self.queue.put_nowait(
                    pb.WatchResponse(header=self.server.header(), watch_id=wid, events=batch)
                )
            return None
        return resp

    def cancel(self, watch_id: int) -> pb.WatchResponse | None:
        if self.watchers.pop(watch_id, None) is None:
            return None
        return pb.WatchResponse(header=self.server.header(), watch_id=watch_id, canceled=True)

    def request_progress(self) -> pb.WatchResponse | None:
        return pb.WatchResponse(header=self.server.header(), watch_id=-1)

    async def next(self) -> pb.WatchResponse | None:
        return await self.queue.get()

    async def next_encoded(self) -> bytes | None:
        """``next``, serialized (what the native front end's Watch loop takes)."""
        resp = await self.next()
        return None if resp is None else resp.SerializeToString()

    def close(self) -> None:
        self.closed = True
        self.watchers.clear()
        self.server.streams.discard(self)

    def _filter(self, w: _Watcher, events: list[kv_pb2.Event]) -> list[kv_pb2.Event]:
        out = []
        for ev in events:
            if _in_range(ev.kv.key, w.key, w.range_end):
                e = kv_pb2.Event()
                e.CopyFrom(ev)
                if not w.prev_kv:
                    e.ClearField("prev_kv")
                out.append(e)
        return out

    def notify(self, events: list[kv_pb2.Event]) -> None:
        for wid in sorted(self.watchers):
            batch = self._filter(self.watchers[wid], events)
            if batch:
                self.queue.put_nowait(
                    pb.WatchResponse(header=self.server.header(), watch_id=wid, events=batch)
                )

    __hash__ = object.__hash__


class FakeServer:
    """In-memory implementation of the interface keelson.api calls."""

    cluster_id = 0x1000
    member_id = 0x2000

    def __init__(self) -> None:
        self.kvs: dict[bytes, kv_pb2.KeyValue] = {}
        self.revision = 1
        self.compacted = 0
        self.history: list[tuple[int, kv_pb2.Event]] = []
        self.leases: dict[int, int] = {}
        self.lease_keys: dict[int, set[bytes]] = {}
        self.next_lease = 1
        self.streams: set[FakeWatchStream] = set()
        self.tokens_seen: list[str] = []
        self.fail_next: BaseException | None = None

    def header(self) -> pb.ResponseHeader:
        return pb.ResponseHeader(
            cluster_id=self.cluster_id,
            member_id=self.member_id,
            revision=self.revision,
            raft_term=2,
        )

    def _check(self, token: str | None) -> None:
        if token is not None:
            self.tokens_seen.append(token)
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc

    # --- KV ---------------------------------------------------------------------
    def _range(self, req: pb.RangeRequest) -> pb.RangeResponse:
        if not req.key:
            raise errors.EMPTY_KEY
        if req.revision and req.revision > self.revision:
            raise errors.FUTURE_REV
        if req.revision and req.revision <= self.compacted:
            raise errors.COMPACTED
        keys = sorted(k for k in self.kvs if _in_range(k, req.key, req.range_end))
        resp = pb.RangeResponse(header=self.header(), count=len(keys))
        if req.count_only:
            return resp
        limited = keys[: req.limit] if req.limit else keys
        resp.more = len(limited) < len(keys)
        for k in limited:
            kv = resp.kvs.add()
            kv.CopyFrom(self.kvs[k])
            if req.keys_only:
                kv.ClearField("value")
        return resp

    def _put(self, req: pb.PutRequest, events: list[kv_pb2.Event]) -> pb.PutResponse:
        if not req.key:
            raise errors.EMPTY_KEY
        if req.lease and req.lease not in self.leases:
            raise errors.LEASE_NOT_FOUND
        prev = self.kvs.get(req.key)
        if (req.ignore_value or req.ignore_lease) and prev is None:
            raise errors.KEY_NOT_FOUND
        kv = kv_pb2.KeyValue(
            key=req.key,
            create_revision=prev.create_revision if prev else self.revision + 1,
            mod_revision=self.revision + 1,
            version=(prev.version + 1) if prev else 1,
            value=prev.value if req.ignore_value and prev else req.value,
            lease=prev.lease if req.ignore_lease and prev else req.lease,
        )
        self.kvs[req.key] = kv
        if kv.lease:
            self.lease_keys.setdefault(kv.lease, set()).add(req.key)
        ev = kv_pb2.Event(type=kv_pb2.Event.PUT, kv=kv)
        if prev is not None:
            ev.prev_kv.CopyFrom(prev)
        events.append(ev)
        resp = pb.PutResponse()
        if req.prev_kv and prev is not None:
            resp.prev_kv.CopyFrom(prev)
        return resp

    def _delete(
        self, req: pb.DeleteRangeRequest, events: list[kv_pb2.Event]
    ) -> pb.DeleteRangeResponse:
        if not req.key:
            raise errors.EMPTY_KEY
        keys = sorted(k for k in self.kvs if _in_range(k, req.key, req.range_end))
        resp = pb.DeleteRangeResponse(deleted=len(keys))
        for k in keys:
            prev = self.kvs.pop(k)
            ev = kv_pb2.Event(
                type=kv_pb2.Event.DELETE,
                kv=kv_pb2.KeyValue(key=k, mod_revision=self.revision + 1),
            )
            ev.prev_kv.CopyFrom(prev)
            events.append(ev)
            if req.prev_kv:
                resp.prev_kvs.add().CopyFrom(prev)
        return resp

    def _commit(self, events: list[kv_pb2.Event]) -> None:
        if not events:
            return
        self.revision += 1
        for ev in events:
            self.history.append((self.revision, ev))
        for stream in sorted(self.streams, key=id):
            stream.notify(events)

    async def range(self, req: pb.RangeRequest, identity: str | None = None) -> pb.RangeResponse:
        self._check(identity)
        return self._range(req)

    async def put(self, req: pb.PutRequest, identity: str | None = None) -> pb.PutResponse:
        self._check(identity)
        events: list[kv_pb2.Event] = []
        resp = self._put(req, events)
        self._commit(events)
        resp.header.CopyFrom(self.header())
        return resp

    async def delete_range(
        self, req: pb.DeleteRangeRequest, identity: str | None = None
    ) -> pb.DeleteRangeResponse:
        self._check(identity)
        events: list[kv_pb2.Event] = []
        resp = self._delete(req, events)
        self._commit(events)
        resp.header.CopyFrom(self.header())
        return resp

    def _compare(self, c: pb.Compare) -> bool:
        kv = self.kvs.get(c.key)
        target = c.WhichOneof("target_union")
        if kv is None:
            actual: int | bytes = b"" if target == "value" else 0
        else:
            actual = getattr(kv, target or "version")
        expected = getattr(c, target or "version")
        r = c.result
        if r == pb.Compare.EQUAL:
            return bool(actual == expected)
        if r == pb.Compare.NOT_EQUAL:
            return bool(actual != expected)
        if r == pb.Compare.GREATER:
            return bool(actual > expected)
        return bool(actual < expected)

    async def txn(self, req: pb.TxnRequest, identity: str | None = None) -> pb.TxnResponse:
        self._check(identity)
        if len(req.success) > 128 or len(req.failure) > 128:
            raise errors.TOO_MANY_OPS
        ok = all(self._compare(c) for c in req.compare)
        ops = req.success if ok else req.failure
        events: list[kv_pb2.Event] = []
        resp = pb.TxnResponse(succeeded=ok)
        for op in ops:
            which = op.WhichOneof("request")
            out = resp.responses.add()
            if which == "request_range":
                out.response_range.CopyFrom(self._range(op.request_range))
            elif which == "request_put":
                out.response_put.CopyFrom(self._put(op.request_put, events))
            elif which == "request_delete_range":
                out.response_delete_range.CopyFrom(self._delete(op.request_delete_range, events))
        self._commit(events)
        resp.header.CopyFrom(self.header())
        return resp

    async def compact(
        self, req: pb.CompactionRequest, identity: str | None = None
    ) -> pb.CompactionResponse:
        self._check(identity)
        if req.revision <= self.compacted:
            raise errors.COMPACTED
        if req.revision > self.revision:
            raise errors.FUTURE_REV
        self.compacted = req.revision
        self.history = [(r, e) for r, e in self.history if r > req.revision]
        return pb.CompactionResponse(header=self.header())

    # --- leases -------------------------------------------------------------------
    async def lease_grant(
        self, req: pb.LeaseGrantRequest, identity: str | None = None
    ) -> pb.LeaseGrantResponse:
        self._check(identity)
        lid = req.ID or self.next_lease
        if lid in self.leases:
            raise errors.LEASE_EXIST
        if req.TTL > 9_000_000_000:
            raise errors.LEASE_TTL_TOO_LARGE
        self.next_lease = max(self.next_lease, lid) + 1
        self.leases[lid] = req.TTL
        return pb.LeaseGrantResponse(header=self.header(), ID=lid, TTL=req.TTL)

    async def lease_revoke(
        self, req: pb.LeaseRevokeRequest, identity: str | None = None
    ) -> pb.LeaseRevokeResponse:
        self._check(identity)
        if req.ID not in self.leases:
            raise errors.LEASE_NOT_FOUND
        del self.leases[req.ID]
        events: list[kv_pb2.Event] = []
        for key in sorted(self.lease_keys.pop(req.ID, set())):
            if key in self.kvs and self.kvs[key].lease == req.ID:
                self._delete(pb.DeleteRangeRequest(key=key), events)
        self._commit(events)
        return pb.LeaseRevokeResponse(header=self.header())

    async def lease_renew(self, lease_id: int, identity: str | None = None) -> int:
        if lease_id not in self.leases:
            raise errors.LEASE_NOT_FOUND
        return self.leases[lease_id]

    async def lease_time_to_live(
        self, req: pb.LeaseTimeToLiveRequest, identity: str | None = None
    ) -> pb.LeaseTimeToLiveResponse:
        if req.ID not in self.leases:
            raise errors.LEASE_NOT_FOUND
        ttl = self.leases[req.ID]
        resp = pb.LeaseTimeToLiveResponse(header=self.header(), ID=req.ID, TTL=ttl, grantedTTL=ttl)
        if req.keys:
            resp.keys.extend(sorted(self.lease_keys.get(req.ID, set())))
        return resp

    async def lease_leases(
        self, req: pb.LeaseLeasesRequest, identity: str | None = None
    ) -> pb.LeaseLeasesResponse:
        return pb.LeaseLeasesResponse(
            header=self.header(), leases=[pb.LeaseStatus(ID=i) for i in sorted(self.leases)]
        )

    # --- cluster and maintenance -------------------------------------------------------
    def _member(self) -> pb.Member:
        return pb.Member(
            ID=self.member_id,
            name="fake",
            peerURLs=["http://127.0.0.1:2380"],
            clientURLs=["http://127.0.0.1:2379"],
        )

    async def member_list(
        self, req: pb.MemberListRequest, identity: str | None = None
    ) -> pb.MemberListResponse:
        return pb.MemberListResponse(header=self.header(), members=[self._member()])

    async def member_add(self, req: pb.MemberAddRequest, identity: str | None = None) -> None:
        raise errors.MEMBER_BAD_URLS if not req.peerURLs else errors.NOT_CAPABLE

    async def member_remove(self, req: pb.MemberRemoveRequest, identity: str | None = None) -> None:
        raise errors.MEMBER_NOT_FOUND

    async def member_update(self, req: pb.MemberUpdateRequest, identity: str | None = None) -> None:
        raise errors.MEMBER_NOT_FOUND

    async def member_promote(
        self, req: pb.MemberPromoteRequest, identity: str | None = None
    ) -> None:
        raise errors.MEMBER_NOT_LEARNER if req.ID == self.member_id else errors.MEMBER_NOT_FOUND

    async def status(self, req: pb.StatusRequest, identity: str | None = None) -> pb.StatusResponse:
        return pb.StatusResponse(
            header=self.header(),
            version="3.4.0",
            dbSize=sum(len(k) + len(v.value) for k, v in self.kvs.items()),
            leader=self.member_id,
            raftIndex=self.revision,
            raftTerm=2,
            raftAppliedIndex=self.revision,
        )

    async def alarm(self, req: pb.AlarmRequest, identity: str | None = None) -> pb.AlarmResponse:
        return pb.AlarmResponse(header=self.header())

    async def defragment(
        self, req: pb.DefragmentRequest, identity: str | None = None
    ) -> pb.DefragmentResponse:
        return pb.DefragmentResponse(header=self.header())

    async def hash(self, req: pb.HashRequest, identity: str | None = None) -> pb.HashResponse:
        return pb.HashResponse(header=self.header(), hash=len(self.kvs))

    async def hash_kv(
        self, req: pb.HashKVRequest, identity: str | None = None
    ) -> pb.HashKVResponse:
        return pb.HashKVResponse(
            header=self.header(), hash=len(self.kvs), compact_revision=self.compacted
        )

    async def move_leader(self, req: pb.MoveLeaderRequest, identity: str | None = None) -> None:
        raise errors.BAD_LEADER_TRANSFEREE

    async def snapshot(self, identity: str | None = None) -> AsyncIterator[bytes]:
        blob = b"".join(k + b"=" + v.value + b"\n" for k, v in sorted(self.kvs.items()))
        blob += b"\0" * (-len(blob) % 512)  # a database file is whole pages
        for i in range(0, len(blob), 100):
            yield blob[i : i + 100]

    def new_watch_stream(self) -> FakeWatchStream:
        stream = FakeWatchStream(self)
        self.streams.add(stream)
        return stream
