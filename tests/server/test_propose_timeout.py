"""A proposal that cannot commit (the leader lost its quorum) fails with etcd's "request
timed out" after the request timeout, and leaves no waiter behind."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from keelson.proto import errors
from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.server.etcdserver import _Proposals
from tests.server.support import Router, leader_of


@pytest.mark.timeout(120)
def test_a_proposal_without_quorum_times_out(tmp_path: Path) -> None:
    async def main() -> None:
        router = Router()
        async with router.three(tmp_path, request_timeout_s=1.0) as servers:
            leader = await leader_of(servers)
            await leader.put(pb.PutRequest(key=b"a", value=b"1"))
            router.down |= {mid for mid, s in servers.items() if s is not leader}
            started = time.monotonic()
            with pytest.raises(errors.EtcdError) as ei:
                await leader.put(pb.PutRequest(key=b"b", value=b"2"))
            assert ei.value.message == "etcdserver: request timed out"
            assert 0.9 < time.monotonic() - started < 5
            assert leader.pending_proposals() == 0

    asyncio.run(main())


@pytest.mark.timeout(120)
def test_proposals_of_one_turn_time_out_together(tmp_path: Path) -> None:
    """Every proposal of a loop turn shares one timer: all of them fail with the message."""
    async def main() -> None:
        router = Router()
        async with router.three(tmp_path, request_timeout_s=1.0) as servers:
            leader = await leader_of(servers)
            await leader.put(pb.PutRequest(key=b"a", value=b"1"))
            router.down |= {mid for mid, s in servers.items() if s is not leader}
            got = await asyncio.gather(
                *(leader.put(pb.PutRequest(key=b"k%d" % i, value=b"v")) for i in range(5)),
                return_exceptions=True)
            assert [getattr(e, "message", e) for e in got] == [
                "etcdserver: request timed out"] * 5
            assert leader.pending_proposals() == 0

    asyncio.run(main())


def test_the_turns_timer_fails_only_who_still_waits() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        batch = _Proposals()
        batch.timer = loop.call_later(60, batch.time_out)
        answered, cancelled, waiting = (loop.create_future() for _ in range(3))
        for fut in (answered, cancelled, waiting):
            batch.items.append((b"", fut))
            batch.waiting += 1
        answered.set_result("ok")
        batch.settled()
        cancelled.cancel()
        batch.settled()
        assert batch.timer is not None  # one caller still waits
        batch.time_out()
        assert answered.result() == "ok" and cancelled.cancelled()
        assert waiting.exception() is errors.TIMEOUT
        batch.settled()
        assert batch.timer is None

        done = _Proposals()
        timer = done.timer = loop.call_later(60, done.time_out)
        done.items.append((b"", loop.create_future()))
        done.waiting += 1
        done.items[0][1].set_result(1)
        done.settled()
        assert timer.cancelled() and done.timer is None  # nobody waits: no timer left

    asyncio.run(main())
