"""A proposal that cannot commit (the leader lost its quorum) fails with etcd's "request
timed out" after the request timeout, and leaves no waiter behind."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import pytest

from keelson.proto import errors
from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.server.etcdserver import EtcdServer
from tests.server.test_parallel_append import URLS, Router, _cfg, _leader


@pytest.mark.timeout(120)
def test_a_proposal_without_quorum_times_out(tmp_path: Path) -> None:
    async def main() -> None:
        router = Router()
        for mid in URLS:
            cfg = dataclasses.replace(_cfg(tmp_path, mid, False, URLS), request_timeout_s=1.0)
            router.servers[mid] = EtcdServer(cfg, send=router.send)
        servers = router.servers
        for s in servers.values():
            await s.start()
        try:
            leader = await _leader(servers)
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
