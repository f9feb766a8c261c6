"""Two members in one event loop, wired by an in-memory router: a learner joins an existing
cluster with an empty log, catches up from the leader, is refused writes, is promoted."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from keelson.proto import errors
from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.raft import Message
from keelson.server.etcdserver import EtcdServer, MemberConfig
from tests.server.support import deliver

URL1 = "http://127.0.0.1:2380"
URL2 = "http://127.0.0.1:2381"


class Router:
    def __init__(self) -> None:
        self.servers: dict[int, EtcdServer] = {}

    def send(self, msgs: list[Message]) -> None:
        loop = asyncio.get_running_loop()
        for m in msgs:
            dest = self.servers.get(m.to)
            if dest is not None:
                loop.call_soon(deliver, dest, m)  # step, then drive: as the transport


def test_learner_joins_catches_up_and_is_promoted(tmp_path: Path) -> None:
    async def main() -> None:
        router = Router()
        cfg1 = MemberConfig(
            name="a", data_dir=str(tmp_path / "a"), member_id=1, cluster_id=99,
            peers={1: (URL1,)}, heartbeat_interval_ms=10, election_timeout_ms=100,
            request_timeout_s=3.0,
        )
        s1 = EtcdServer(cfg1, send=router.send)
        router.servers[1] = s1
        await s1.start()
        s2 = None
        try:
            for i in range(5):
                await s1.put(pb.PutRequest(key=b"pre%d" % i, value=b"x"))
            added = await s1.member_add(pb.MemberAddRequest(peerURLs=[URL2], isLearner=True))
            new_id = added.member.ID
            cfg2 = MemberConfig(
                name="b", data_dir=str(tmp_path / "b"), member_id=new_id, cluster_id=99,
                peers={1: (URL1,), new_id: (URL2,)}, new_cluster=False,
                heartbeat_interval_ms=10, election_timeout_ms=100, request_timeout_s=3.0,
            )
            s2 = EtcdServer(cfg2, send=router.send)
            router.servers[new_id] = s2
            await s2.start()
            for _ in range(100):
                r = await s2.range(pb.RangeRequest(key=b"pre", range_end=b"prf", serializable=True))
                if r.count == 5:
                    break
                await asyncio.sleep(0.05)
            assert r.count == 5
            assert s2.is_learner
            with pytest.raises(errors.EtcdError) as ei:
                await s2.put(pb.PutRequest(key=b"x", value=b"y"))
            assert ei.value.message == "etcdserver: rpc not supported for learner"
            with pytest.raises(errors.EtcdError) as ei:
                await s2.range(pb.RangeRequest(key=b"x"))
            assert ei.value.message == "etcdserver: rpc not supported for learner"
            promoted = await s1.member_promote(pb.MemberPromoteRequest(ID=new_id))
            assert all(not m.isLearner for m in promoted.members)
            for _ in range(100):
                if not s2.is_learner:
                    break
                await asyncio.sleep(0.05)
            await s2.put(pb.PutRequest(key=b"from-b", value=b"1"))  # forwarded to the leader
            assert (await s1.range(pb.RangeRequest(key=b"from-b"))).count == 1
            assert (await s2.range(pb.RangeRequest(key=b"from-b"))).count == 1
        finally:
            if s2 is not None:
                await s2.stop()
            await s1.stop()

    asyncio.run(main())


def test_laggard_gets_snapshot_and_snapshot_restart(tmp_path: Path) -> None:
    async def main() -> None:
        router = Router()
        common = dict(
            cluster_id=99, heartbeat_interval_ms=10, election_timeout_ms=100,
            request_timeout_s=3.0, snapshot_count=10, snapshot_catchup_entries=2,
        )
        cfg1 = MemberConfig(
            name="a", data_dir=str(tmp_path / "a"), member_id=1, peers={1: (URL1,)},
            **common,  # type: ignore[arg-type]
        )
        s1 = EtcdServer(cfg1, send=router.send)
        router.servers[1] = s1
        await s1.start()
        s2 = None
        try:
            lease = await s1.lease_grant(pb.LeaseGrantRequest(TTL=100))
            await s1.put(pb.PutRequest(key=b"leased", value=b"v", lease=lease.ID))
            for i in range(30):
                await s1.put(pb.PutRequest(key=b"k%02d" % i, value=b"x"))
            assert s1.storage.first_index() > 1  # the log was compacted
            added = await s1.member_add(pb.MemberAddRequest(peerURLs=[URL2], isLearner=True))
            new_id = added.member.ID
            cfg2 = MemberConfig(
                name="b", data_dir=str(tmp_path / "b"), member_id=new_id,
                peers={1: (URL1,), new_id: (URL2,)}, new_cluster=False,
                **common,  # type: ignore[arg-type]
            )
            s2 = EtcdServer(cfg2, send=router.send)
            router.servers[new_id] = s2
            by_loop_task: list[int] = []  # snapshot Readys the raft loop task handled
            handle = s2._handle_ready

            async def spy(rd: Any) -> None:
                if rd.snapshot is not None and not rd.snapshot.is_empty():
                    by_loop_task.append(rd.snapshot.metadata.index)
                await handle(rd)

            s2._handle_ready = spy  # type: ignore[method-assign]
            await s2.start()
            r = None
            for _ in range(100):
                r = await s2.range(pb.RangeRequest(key=b"k", range_end=b"l", serializable=True))
                if r.count == 30:
                    break
                await asyncio.sleep(0.05)
            assert r is not None and r.count == 30
            assert s2.is_learner
            assert [x.ID for x in (await s2.lease_leases(pb.LeaseLeasesRequest())).leases] == [
                lease.ID
            ]
            await s1.put(pb.PutRequest(key=b"after-snap", value=b"1"))
            for _ in range(100):
                got = await s2.range(pb.RangeRequest(key=b"after-snap", serializable=True))
                if got.count:
                    break
                await asyncio.sleep(0.05)
            assert got.count == 1
            assert s2.kv.hash_kv()[0] == s1.kv.hash_kv()[0]
            # The snapshot arrived as a peer message, which ``drive`` handles inline, but
            # installing it awaits a thread: it was left to the raft loop task.
            assert by_loop_task and by_loop_task[0] > 1
        finally:
            if s2 is not None:
                await s2.stop()
            await s1.stop()

        # restart the leader from its snapshot + WAL tail (alone it is not a quorum with
        # the learner? a learner does not vote, so the single voter elects itself)
        s1 = EtcdServer(cfg1, send=router.send)
        router.servers = {1: s1}
        await s1.start()
        try:
            r = await s1.range(pb.RangeRequest(key=b"k", range_end=b"l"))
            assert r.count == 30
            assert (await s1.range(pb.RangeRequest(key=b"after-snap"))).count == 1
            ml = await s1.member_list(pb.MemberListRequest())
            assert len(ml.members) == 2
        finally:
            await s1.stop()

    asyncio.run(main())
