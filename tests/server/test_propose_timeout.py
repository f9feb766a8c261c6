"""A proposal that cannot commit (the leader lost its quorum) fails with etcd's "request
timed out" after the request timeout, and leaves no waiter behind."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from keelson.proto import errors
from keelson.proto.etcdserverpb import rpc_pb2 as pb
from tests.server.support import Router, leader_of


@pytest.mark.timeout(120)
def test_a_proposal_without_quorum_times_out(tmp_path: Path) -> None:
    async def main() -> None:
        router = Router()
        servers = await router.start_three(tmp_path, request_timeout_s=1.0)
        try:
            leader = await leader_of(servers)
            await leader.put(pb.PutRequest(key=b"a", value=b"1"))
            router.down |= {mid for mid, s in servers.items() if s is not leader}
            started = time.monotonic()
            with pytest.raises(errors.EtcdError) as ei:
                await leader.put(pb.PutRequest(key=b"b", value=b"2"))
            assert ei.value.message == "etcdserver: request timed out"
            assert 0.9 < time.monotonic() - started < 5
            assert leader.pending_proposals() == 0
        finally:
            for s in servers.values():
                await s.stop()

    asyncio.run(main())
