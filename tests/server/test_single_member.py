"""A single member in-process: KV semantics through the server object, durability, replay."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from keelson.proto import errors
from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.server.etcdserver import EtcdServer, MemberConfig
from tests.server.support import single_member_config


def _cfg(tmp: Path, **kw: Any) -> MemberConfig:
    return single_member_config(tmp, request_timeout_s=3.0, **kw)


async def _started(tmp: Path, **kw: object) -> EtcdServer:
    s = EtcdServer(_cfg(tmp, **kw))
    await s.start()
    return s


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def test_put_get_delete_txn_compact(tmp_path: Path) -> None:
    async def main() -> None:
        s = await _started(tmp_path)
        try:
            base = s.header().revision  # etcd: 1 on an empty store
            r = await s.put(pb.PutRequest(key=b"a", value=b"1"))
            assert r.header.revision == base + 1 and r.header.member_id == 0x1234
            assert r.header.cluster_id == 0xABCD and r.header.raft_term >= 1
            r = await s.put(pb.PutRequest(key=b"a", value=b"2", prev_kv=True))
            assert r.prev_kv.value == b"1"
            g = await s.range(pb.RangeRequest(key=b"a"))
            assert [kv.value for kv in g.kvs] == [b"2"] and g.kvs[0].version == 2
            g = await s.range(pb.RangeRequest(key=b"a", serializable=True))
            assert g.count == 1
            t = await s.txn(
                pb.TxnRequest(
                    compare=[
                        pb.Compare(
                            key=b"a",
                            target=pb.Compare.VALUE,
                            result=pb.Compare.EQUAL,
                            value=b"2",
                        )
                    ],
                    success=[pb.RequestOp(request_put=pb.PutRequest(key=b"b", value=b"x"))],
                    failure=[pb.RequestOp(request_range=pb.RangeRequest(key=b"a"))],
                )
            )
            assert t.succeeded and t.header.revision == base + 3
            d = await s.delete_range(pb.DeleteRangeRequest(key=b"a", range_end=b"c"))
            assert d.deleted == 2
            await s.compact(pb.CompactionRequest(revision=base + 3))
            with pytest.raises(errors.EtcdError) as ei:
                await s.range(pb.RangeRequest(key=b"a", revision=base + 1))
            assert ei.value.message == "etcdserver: mvcc: required revision has been compacted"
            with pytest.raises(errors.EtcdError) as ei:
                await s.compact(pb.CompactionRequest(revision=100))
            assert ei.value.message == "etcdserver: mvcc: required revision is a future revision"
            st = await s.status(pb.StatusRequest())
            assert st.leader == 0x1234 and st.raftAppliedIndex >= 6
        finally:
            await s.stop()

    run(main())


def test_request_limits(tmp_path: Path) -> None:
    async def main() -> None:
        s = await _started(tmp_path, max_request_bytes=100, max_txn_ops=2)
        try:
            with pytest.raises(errors.EtcdError) as ei:
                await s.put(pb.PutRequest(key=b"k", value=b"v" * 200))
            assert ei.value.message == "etcdserver: request is too large"
            ops = [pb.RequestOp(request_put=pb.PutRequest(key=bytes([i]))) for i in range(3)]
            with pytest.raises(errors.EtcdError) as ei:
                await s.txn(pb.TxnRequest(success=ops))
            assert ei.value.message == "etcdserver: too many operations in txn request"
        finally:
            await s.stop()

    run(main())


def test_restart_from_data_dir(tmp_path: Path) -> None:
    async def first() -> int:
        s = await _started(tmp_path)
        try:
            base = s.header().revision
            for i in range(20):
                await s.put(pb.PutRequest(key=b"k%02d" % i, value=b"v%d" % i))
            return base
        finally:
            await s.stop()

    async def second(base: int) -> None:
        s = await _started(tmp_path)
        try:
            g = await s.range(pb.RangeRequest(key=b"k", range_end=b"l"))
            assert g.count == 20 and g.header.revision == base + 20
            r = await s.put(pb.PutRequest(key=b"after", value=b"restart"))
            assert r.header.revision == base + 21
        finally:
            await s.stop()

    base = asyncio.run(first())
    run(second(base))


def test_replay_is_idempotent_after_backend_loss_of_last_batch(tmp_path: Path) -> None:
    """Crash after the WAL write but before the backend commit: simulated by rolling the
    backend's consistent index back is not possible, so instead the WAL holds entries the
    backend already has; replay must skip them (same revision after restart)."""

    async def write() -> int:
        s = await _started(tmp_path)
        try:
            for i in range(5):
                await s.put(pb.PutRequest(key=b"x", value=b"%d" % i))
            return s.kv.current_revision
        finally:
            await s.stop()

    async def reopen() -> tuple[int, int]:
        s = await _started(tmp_path)
        try:
            g = await s.range(pb.RangeRequest(key=b"x"))
            return g.header.revision, g.kvs[0].version
        finally:
            await s.stop()

    write_rev = asyncio.run(write())
    assert asyncio.run(reopen()) == (write_rev, 5)
    assert asyncio.run(reopen()) == (write_rev, 5)


class _Crash(Exception):
    pass


def test_crash_between_wal_and_backend_replays_once(tmp_path: Path) -> None:
    """The entry is durable in the WAL, the backend never saw it: restart applies it once."""
    armed = {"on": False}

    def faults(point: str) -> None:
        if point == "before-apply" and armed["on"]:
            raise _Crash(point)

    async def crash() -> int:
        s = EtcdServer(_cfg(tmp_path), faults=faults)
        await s.start()
        base = s.header().revision
        await s.put(pb.PutRequest(key=b"a", value=b"1"))
        armed["on"] = True
        with pytest.raises(errors.EtcdError):  # the raft loop died: no answer
            await asyncio.wait_for(s.put(pb.PutRequest(key=b"a", value=b"2")), 1.0)
        assert s.kv.current_revision == base + 1
        await s.stop()
        return base

    async def reopen(base: int) -> None:
        s = await _started(tmp_path)
        try:
            g = await s.range(pb.RangeRequest(key=b"a"))
            assert g.kvs[0].value == b"2" and g.kvs[0].version == 2
            assert g.header.revision == base + 2
        finally:
            await s.stop()

    base = asyncio.run(crash())
    asyncio.run(reopen(base))
    asyncio.run(reopen(base))


def test_watch_live_and_history(tmp_path: Path) -> None:
    async def main() -> None:
        s = await _started(tmp_path)
        try:
            base = s.header().revision
            await s.put(pb.PutRequest(key=b"w1", value=b"a"))
            st = s.new_watch_stream()
            assert st.create(pb.WatchCreateRequest(key=b"w", range_end=b"x", prev_kv=True,
                                                   start_revision=base + 1)) is None
            created = await st.next()
            assert created is not None and created.created
            hist = await st.next()
            assert hist is not None and [e.kv.value for e in hist.events] == [b"a"]
            await s.put(pb.PutRequest(key=b"w1", value=b"b"))
            await s.put(pb.PutRequest(key=b"zz", value=b"ignored"))
            await s.delete_range(pb.DeleteRangeRequest(key=b"w1"))
            live = await st.next()
            assert live is not None and live.events[0].kv.value == b"b"
            assert live.events[0].prev_kv.value == b"a"
            dele = await st.next()
            assert dele is not None and dele.events[0].type == 1
            assert dele.header.revision == base + 4
            st.close()
        finally:
            await s.stop()

    run(main())


def test_lease_grant_attach_revoke_expire_restart(tmp_path: Path) -> None:
    async def first() -> int:
        s = await _started(tmp_path)
        try:
            g = await s.lease_grant(pb.LeaseGrantRequest(TTL=60))
            assert g.TTL == 60 and g.ID > 0
            await s.put(pb.PutRequest(key=b"l1", value=b"x", lease=g.ID))
            ttl = await s.lease_time_to_live(pb.LeaseTimeToLiveRequest(ID=g.ID, keys=True))
            assert list(ttl.keys) == [b"l1"] and 0 < ttl.TTL <= 60 and ttl.grantedTTL == 60
            assert await s.lease_renew(g.ID) == 60
            with pytest.raises(errors.EtcdError) as ei:
                await s.put(pb.PutRequest(key=b"bad", lease=12345))
            assert ei.value.message == "etcdserver: requested lease not found"
            with pytest.raises(errors.EtcdError) as ei:
                await s.lease_grant(pb.LeaseGrantRequest(TTL=60, ID=g.ID))
            assert ei.value.message == "etcdserver: lease already exists"
            short = await s.lease_grant(pb.LeaseGrantRequest(TTL=1))
            await s.put(pb.PutRequest(key=b"short", value=b"x", lease=short.ID))
            for _ in range(50):
                if (await s.range(pb.RangeRequest(key=b"short"))).count == 0:
                    break
                await asyncio.sleep(0.1)
            assert (await s.range(pb.RangeRequest(key=b"short"))).count == 0
            return g.ID
        finally:
            await s.stop()

    async def second(lid: int) -> None:
        s = await _started(tmp_path)
        try:
            leases = await s.lease_leases(pb.LeaseLeasesRequest())
            assert [x.ID for x in leases.leases] == [lid]
            ttl = await s.lease_time_to_live(pb.LeaseTimeToLiveRequest(ID=lid, keys=True))
            assert list(ttl.keys) == [b"l1"]
            await s.lease_revoke(pb.LeaseRevokeRequest(ID=lid))
            assert (await s.range(pb.RangeRequest(key=b"l1"))).count == 0
            with pytest.raises(errors.EtcdError) as ei:
                await s.lease_revoke(pb.LeaseRevokeRequest(ID=lid))
            assert ei.value.message == "etcdserver: requested lease not found"
        finally:
            await s.stop()

    lid = asyncio.run(first())
    asyncio.run(second(lid))


def test_member_list_and_learner_add_remove(tmp_path: Path) -> None:
    async def main() -> None:
        s = await _started(tmp_path)
        try:
            ml = await s.member_list(pb.MemberListRequest())
            assert [m.ID for m in ml.members] == [0x1234]
            assert list(ml.members[0].peerURLs) == ["http://127.0.0.1:2380"]
            with pytest.raises(errors.EtcdError) as ei:
                await s.member_add(pb.MemberAddRequest(peerURLs=["http://127.0.0.1:2380"]))
            assert ei.value.message == "etcdserver: Peer URLs already exists"
            added = await s.member_add(
                pb.MemberAddRequest(peerURLs=["http://127.0.0.1:2999"], isLearner=True)
            )
            assert added.member.isLearner and len(added.members) == 2
            with pytest.raises(errors.EtcdError) as ei:
                await s.member_promote(pb.MemberPromoteRequest(ID=added.member.ID))
            assert ei.value.message == (
                "etcdserver: can only promote a learner member which is in sync with leader"
            )
            with pytest.raises(errors.EtcdError) as ei:
                await s.member_promote(pb.MemberPromoteRequest(ID=0x1234))
            assert ei.value.message == "etcdserver: can only promote a learner member"
            upd = await s.member_update(
                pb.MemberUpdateRequest(ID=added.member.ID, peerURLs=["http://127.0.0.1:2998"])
            )
            assert any(list(m.peerURLs) == ["http://127.0.0.1:2998"] for m in upd.members)
            rm = await s.member_remove(pb.MemberRemoveRequest(ID=added.member.ID))
            assert [m.ID for m in rm.members] == [0x1234]
            with pytest.raises(errors.EtcdError) as ei:
                await s.member_remove(pb.MemberRemoveRequest(ID=added.member.ID))
            assert ei.value.message == "etcdserver: member not found"
            await s.put(pb.PutRequest(key=b"still", value=b"works"))
        finally:
            await s.stop()

    run(main())


def test_quota_raises_nospace_alarm_until_disarmed(tmp_path: Path) -> None:
    async def main() -> None:
        s = await _started(tmp_path, quota_backend_bytes=1)  # any write exceeds it
        try:
            with pytest.raises(errors.EtcdError) as ei:
                await s.put(pb.PutRequest(key=b"k", value=b"v"))
            assert ei.value.message == "etcdserver: mvcc: database space exceeded"
            for _ in range(50):
                got = await s.alarm(pb.AlarmRequest(action=pb.AlarmRequest.GET))
                if got.alarms:
                    break
                await asyncio.sleep(0.05)
            assert [(a.memberID, a.alarm) for a in got.alarms] == [(0x1234, 1)]
            st = await s.status(pb.StatusRequest())
            assert list(st.errors) == ["memberID:4660 alarm:NOSPACE "]
            # deletes are still allowed under NOSPACE
            await s.delete_range(pb.DeleteRangeRequest(key=b"k"))
            await s.alarm(
                pb.AlarmRequest(action=pb.AlarmRequest.DEACTIVATE, memberID=0x1234, alarm=1)
            )
            got = await s.alarm(pb.AlarmRequest(action=pb.AlarmRequest.GET))
            assert not got.alarms
        finally:
            await s.stop()

    run(main())


def test_auto_compaction_revision_mode(tmp_path: Path) -> None:
    from keelson.server import compactor

    assert compactor.parse_retention("periodic", "1h30m") == 5400.0
    assert compactor.parse_retention("periodic", "2") == 7200.0
    with pytest.raises(ValueError):
        compactor.parse_retention("periodic", "soon")
    c = compactor.Compactor("periodic", 10.0)
    c.observe(0.0, 5)
    c.observe(5.0, 9)
    assert c.due(9.0, 12, 0) == 0
    assert c.due(10.0, 12, 0) == 5
    r = compactor.Compactor("revision", 3.0)
    assert r.due(0.0, 10, 0) == 7 and r.due(0.0, 10, 0) == 0

    async def main() -> None:
        s = await _started(
            tmp_path, auto_compaction_mode="revision", auto_compaction_retention="2"
        )
        try:
            for i in range(5):
                await s.put(pb.PutRequest(key=b"c", value=b"%d" % i))
            rev = s.header().revision
            for _ in range(80):
                if s.kv.compact_revision == rev - 2:
                    break
                await asyncio.sleep(0.1)
            assert s.kv.compact_revision == rev - 2
        finally:
            await s.stop()

    run(main())


def test_concurrent_linearizable_reads_share_one_read_index(tmp_path: Path) -> None:
    async def main() -> None:
        s = await _started(tmp_path)
        try:
            await s.put(pb.PutRequest(key=b"r", value=b"1"))
            calls: list[bytes] = []
            real = s.node.read_index

            def counting(ctx: bytes) -> None:
                calls.append(ctx)
                real(ctx)

            s.node.read_index = counting  # type: ignore[method-assign]
            got = await asyncio.gather(*(s.range(pb.RangeRequest(key=b"r")) for _ in range(20)))
            assert all(g.kvs[0].value == b"1" for g in got)
            assert len(calls) == 1
        finally:
            await s.stop()

    run(main())


def test_maintenance_hash_defragment_snapshot_move_leader(tmp_path: Path) -> None:
    async def main() -> None:
        s = await _started(tmp_path)
        try:
            for i in range(10):
                await s.put(pb.PutRequest(key=b"m%d" % i, value=b"v" * 100))
            h1 = await s.hash_kv(pb.HashKVRequest())
            await s.defragment(pb.DefragmentRequest())
            h2 = await s.hash_kv(pb.HashKVRequest())
            assert h1.hash == h2.hash and h1.hash != 0
            assert (await s.hash(pb.HashRequest())).hash != 0
            data = b"".join([chunk async for chunk in s.snapshot()])
            assert len(data) > 0
            with pytest.raises(errors.EtcdError) as ei:
                await s.move_leader(pb.MoveLeaderRequest(targetID=999))
            assert ei.value.message == "etcdserver: bad leader transferee"
        finally:
            await s.stop()

    run(main())


def test_read_only_txn_needs_no_log_entry(tmp_path: Path) -> None:
    async def main() -> None:
        s = await _started(tmp_path)
        try:
            await s.put(pb.PutRequest(key=b"t", value=b"1"))
            before = s.applied_index
            t = await s.txn(
                pb.TxnRequest(
                    compare=[pb.Compare(key=b"t", target=pb.Compare.VERSION,
                                        result=pb.Compare.EQUAL, version=1)],
                    success=[pb.RequestOp(request_range=pb.RangeRequest(key=b"t"))],
                )
            )
            assert t.succeeded
            assert t.responses[0].response_range.kvs[0].value == b"1"
            assert s.applied_index == before
        finally:
            await s.stop()

    run(main())
