"""Linearizable reads share a ReadIndex round: together answered, a cancelled caller does
not cancel the others, an unanswered round times out with etcd's timeout error."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from keelson.proto import errors
from keelson.proto.etcdserverpb import rpc_pb2 as pb
from tests.server.support import Router, leader_of, until


def test_reads_share_a_round_and_one_cancelled_caller_leaves_the_others(tmp_path: Path) -> None:
    async def main() -> None:
        router = Router()
        async with router.three(tmp_path, request_timeout_s=3.0) as servers:
            leader = await leader_of(servers)
            follower = next(s for s in servers.values() if s is not leader)
            await leader.put(pb.PutRequest(key=b"k", value=b"v"))
            before = sum(1 for m in router.sent if m.type.name == "READ_INDEX")
            reads = [asyncio.ensure_future(follower.range(pb.RangeRequest(key=b"k")))
                     for _ in range(8)]
            await asyncio.sleep(0)  # all joined the batch; cancel one of them
            reads[3].cancel()
            done = await asyncio.gather(*reads, return_exceptions=True)
            assert isinstance(done[3], asyncio.CancelledError)
            assert all(r.kvs[0].value == b"v" for i, r in enumerate(done) if i != 3)
            # one ReadIndex request for the eight reads
            assert sum(1 for m in router.sent if m.type.name == "READ_INDEX") == before + 1
            assert not follower._reads and not follower._applied_waiters

    asyncio.run(main())


def test_an_unanswered_round_times_out(tmp_path: Path) -> None:
    async def main() -> None:
        router = Router()
        servers = await router.start_three(tmp_path, request_timeout_s=1.0)
        try:
            leader = await leader_of(servers)
            follower = next(s for s in servers.values() if s is not leader)
            await leader.put(pb.PutRequest(key=b"k", value=b"v"))
            await until(lambda: follower.applied_index == leader.applied_index)
            router.down.add(leader.cfg.member_id)  # the round's answer never comes
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            reads = [follower.range(pb.RangeRequest(key=b"k")) for _ in range(3)]
            got = await asyncio.gather(*reads, return_exceptions=True)
            assert all(g is errors.TIMEOUT for g in got), got
            assert 0.9 <= loop.time() - t0 < 3.0
            assert not follower._reads
        finally:
            router.down.clear()
            for s in servers.values():
                await s.stop()

    asyncio.run(main())


def test_stopping_fails_pending_reads(tmp_path: Path) -> None:
    async def main() -> None:
        router = Router()
        servers = await router.start_three(tmp_path, request_timeout_s=5.0)
        leader = await leader_of(servers)
        follower = next(s for s in servers.values() if s is not leader)
        await leader.put(pb.PutRequest(key=b"k", value=b"v"))
        router.down.add(leader.cfg.member_id)
        read = asyncio.ensure_future(follower.range(pb.RangeRequest(key=b"k")))
        await asyncio.sleep(0.05)
        for s in servers.values():
            await s.stop()
        with pytest.raises(errors.EtcdError):
            await asyncio.wait_for(read, 2.0)

    asyncio.run(main())
