"""The api layer through a real gRPC channel against the in-memory fake server."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
import pytest

from keelson.proto import errors
from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.proto.etcdserverpb import rpc_pb2_grpc as pbg
from keelson.testing.fake_server import FakeServer
from keelson.testing.front_end import serve_grpc


def run(body: Callable[[FakeServer, grpc.aio.Channel], Awaitable[None]], **kw: Any) -> None:
    async def main() -> None:
        fake = FakeServer()
        srv, port = serve_grpc(fake, **kw)
        await srv.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                await asyncio.wait_for(body(fake, ch), 10)
        finally:
            await srv.stop(None)

    asyncio.run(main())


async def expect_error(call: Awaitable[Any], err: errors.EtcdError) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code().value[0] == int(err.code)
    assert info.value.details() == err.message


def test_put_get_delete_and_header() -> None:
    async def body(fake: FakeServer, ch: grpc.aio.Channel) -> None:
        kv = pbg.KVStub(ch)
        put = await kv.Put(pb.PutRequest(key=b"a", value=b"1"))
        assert put.header.revision == 2 and put.header.cluster_id == fake.cluster_id
        got = await kv.Range(pb.RangeRequest(key=b"a"))
        assert [(x.key, x.value, x.version) for x in got.kvs] == [(b"a", b"1", 1)]
        d = await kv.DeleteRange(pb.DeleteRangeRequest(key=b"a", prev_kv=True))
        assert d.deleted == 1 and d.prev_kvs[0].value == b"1"

    run(body)


def test_error_mapping_exact_code_and_message() -> None:
    async def body(fake: FakeServer, ch: grpc.aio.Channel) -> None:
        kv = pbg.KVStub(ch)
        await expect_error(kv.Range(pb.RangeRequest(key=b"")), errors.EMPTY_KEY)
        await expect_error(kv.Range(pb.RangeRequest(key=b"a", revision=99)), errors.FUTURE_REV)
        await kv.Put(pb.PutRequest(key=b"a"))
        await kv.Put(pb.PutRequest(key=b"a"))
        await kv.Compact(pb.CompactionRequest(revision=2))
        await expect_error(kv.Range(pb.RangeRequest(key=b"a", revision=1)), errors.COMPACTED)
        lease = pbg.LeaseStub(ch)
        await expect_error(lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=42)), errors.LEASE_NOT_FOUND)

    run(body)


def test_unexpected_exception_is_unavailable_without_traceback() -> None:
    async def body(fake: FakeServer, ch: grpc.aio.Channel) -> None:
        fake.fail_next = ZeroDivisionError("boom")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await pbg.KVStub(ch).Range(pb.RangeRequest(key=b"a"))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "boom" not in (info.value.details() or "")
        assert "Traceback" not in (info.value.details() or "")
        # The member keeps serving.
        await pbg.KVStub(ch).Range(pb.RangeRequest(key=b"a"))

    run(body)


def test_token_metadata_reaches_server() -> None:
    async def body(fake: FakeServer, ch: grpc.aio.Channel) -> None:
        await pbg.KVStub(ch).Range(pb.RangeRequest(key=b"a"), metadata=(("token", "t0k"),))
        assert fake.tokens_seen == ["t0k"]

    run(body)


def test_txn_compare_and_swap() -> None:
    async def body(fake: FakeServer, ch: grpc.aio.Channel) -> None:
        kv = pbg.KVStub(ch)
        cmp = pb.Compare(key=b"k", target=pb.Compare.VERSION, result=pb.Compare.EQUAL, version=0)
        put = pb.RequestOp(request_put=pb.PutRequest(key=b"k", value=b"v"))
        first = await kv.Txn(pb.TxnRequest(compare=[cmp], success=[put]))
        second = await kv.Txn(pb.TxnRequest(compare=[cmp], success=[put]))
        assert first.succeeded and not second.succeeded

    run(body)


def test_watch_create_events_cancel_and_progress() -> None:
    async def body(fake: FakeServer, ch: grpc.aio.Channel) -> None:
        kv = pbg.KVStub(ch)
        requests: asyncio.Queue[pb.WatchRequest | None] = asyncio.Queue()

        async def gen() -> Any:
            while (r := await requests.get()) is not None:
                yield r

        call = pbg.WatchStub(ch).Watch(gen())
        create = pb.WatchCreateRequest(key=b"a", range_end=b"b", prev_kv=True)
        await requests.put(pb.WatchRequest(create_request=create))
        created = await call.read()
        assert created.created and created.watch_id == 0
        await requests.put(pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"z")))
        created2 = await call.read()
        assert created2.created and created2.watch_id == 1
        await kv.Put(pb.PutRequest(key=b"a1", value=b"x"))
        await kv.Put(pb.PutRequest(key=b"a1", value=b"y"))
        await kv.Put(pb.PutRequest(key=b"c", value=b"out of range"))
        ev1 = await call.read()
        ev2 = await call.read()
        assert ev1.watch_id == 0 and ev1.events[0].kv.value == b"x"
        assert ev2.events[0].prev_kv.value == b"x" and ev2.header.revision >= 3
        await requests.put(pb.WatchRequest(progress_request=pb.WatchProgressRequest()))
        prog = await call.read()
        assert prog.watch_id == -1 and not prog.events
        await requests.put(pb.WatchRequest(cancel_request=pb.WatchCancelRequest(watch_id=0)))
        canceled = await call.read()
        assert canceled.canceled and canceled.watch_id == 0
        await kv.Put(pb.PutRequest(key=b"z", value=b"1"))
        ev3 = await call.read()
        assert ev3.watch_id == 1 and ev3.events[0].kv.key == b"z"
        # Half-close: events still flow until the client cancels.
        await requests.put(None)
        await kv.Put(pb.PutRequest(key=b"z", value=b"2"))
        ev4 = await call.read()
        assert ev4.events[0].kv.value == b"2"
        call.cancel()
        for _ in range(50):
            if not fake.streams:
                break
            await asyncio.sleep(0.02)
        assert not fake.streams, "server watch stream not closed after the RPC ended"

    run(body)


def test_watch_compacted_start_revision() -> None:
    async def body(fake: FakeServer, ch: grpc.aio.Channel) -> None:
        kv = pbg.KVStub(ch)
        for i in range(3):
            await kv.Put(pb.PutRequest(key=b"a", value=bytes([i])))
        await kv.Compact(pb.CompactionRequest(revision=3))
        call = pbg.WatchStub(ch).Watch(
            iter(
                [pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"a", start_revision=2))]
            )
        )
        resp = await call.read()
        assert resp.canceled and resp.compact_revision == 3
        call.cancel()

    run(body)


def test_lease_keepalive_stream_and_ttl() -> None:
    async def body(fake: FakeServer, ch: grpc.aio.Channel) -> None:
        lease = pbg.LeaseStub(ch)
        g = await lease.LeaseGrant(pb.LeaseGrantRequest(TTL=30))
        call = lease.LeaseKeepAlive(
            iter([pb.LeaseKeepAliveRequest(ID=g.ID), pb.LeaseKeepAliveRequest(ID=999)])
        )
        answers = [(r.ID, r.TTL) async for r in call]
        assert answers == [(g.ID, 30), (999, 0)]  # unknown lease: TTL 0, not an error
        ttl = await lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=999))
        assert ttl.TTL == -1 and ttl.ID == 999
        ttl = await lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=g.ID))
        assert ttl.TTL == 30
        leases = await lease.LeaseLeases(pb.LeaseLeasesRequest())
        assert [x.ID for x in leases.leases] == [g.ID]

    run(body)


def test_cluster_maintenance_and_snapshot() -> None:
    async def body(fake: FakeServer, ch: grpc.aio.Channel) -> None:
        await pbg.KVStub(ch).Put(pb.PutRequest(key=b"key", value=b"value"))
        members = await pbg.ClusterStub(ch).MemberList(pb.MemberListRequest())
        assert members.members[0].ID == fake.member_id
        await expect_error(
            pbg.ClusterStub(ch).MemberRemove(pb.MemberRemoveRequest(ID=5)),
            errors.MEMBER_NOT_FOUND,
        )
        m = pbg.MaintenanceStub(ch)
        status = await m.Status(pb.StatusRequest())
        assert status.leader == fake.member_id
        chunks = [r async for r in m.Snapshot(pb.SnapshotRequest())]
        data = b"".join(c.blob for c in chunks[:-1])
        assert data.rstrip(b"\0") == b"key=value\n" and len(data) == 512
        assert chunks[-1].blob == hashlib.sha256(data).digest()
        assert chunks[-1].remaining_bytes == 0 and chunks[-2].remaining_bytes == 0
        assert [c.remaining_bytes for c in chunks] == sorted(
            (c.remaining_bytes for c in chunks), reverse=True
        )

    run(body)


def test_auth_when_disabled() -> None:
    async def body(fake: FakeServer, ch: grpc.aio.Channel) -> None:
        auth = pbg.AuthStub(ch)
        await expect_error(
            auth.Authenticate(pb.AuthenticateRequest(name="root", password="x")),
            errors.AUTH_NOT_ENABLED,
        )
        await expect_error(auth.AuthEnable(pb.AuthEnableRequest()), errors.ROOT_USER_NOT_EXIST)
        await auth.AuthDisable(pb.AuthDisableRequest())

    run(body)


def test_receive_limit_is_max_request_bytes_plus_overhead() -> None:
    async def body(fake: FakeServer, ch: grpc.aio.Channel) -> None:
        kv = pbg.KVStub(ch)
        await kv.Put(pb.PutRequest(key=b"ok", value=b"x" * (600 * 1024)))  # under the limit
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await kv.Put(pb.PutRequest(key=b"big", value=b"x" * (700 * 1024)))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    run(body, max_request_bytes=100 * 1024)
