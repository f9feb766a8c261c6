"""A keep-alive of an expired lease answers "not found" only once the lease's keys are gone.

Found by the torture suite (``make torture``, seed 23): a keep-alive answered TTL 0 (lease not
found) and a linearizable read invoked right after it still found the lease's key, because
the leader refused to renew an expired lease at once, before its revoke went through the log.
etcd's lessor makes such a renew wait until the revoke is applied (or the lessor is demoted),
so "not found" means the keys are deleted; keelson now does the same. The revoke is slowed
down here to make the window wide and the test deterministic.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from keelson.proto import errors
from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.server.etcdserver import EtcdServer, MemberConfig
from tests.server.support import single_member_config


def _cfg(tmp: Path) -> MemberConfig:
    return single_member_config(tmp)


def test_renew_of_an_expired_lease_waits_for_its_revoke(tmp_path: Path) -> None:
    async def main() -> None:
        s = EtcdServer(_cfg(tmp_path))
        await s.start()
        try:
            revoke = s._revoke_expired

            async def slow_revoke(lease_id: int) -> None:
                await asyncio.sleep(1.0)
                await revoke(lease_id)

            s._revoke_expired = slow_revoke  # type: ignore[method-assign]
            g = await s.lease_grant(pb.LeaseGrantRequest(ID=5, TTL=1))
            await s.put(pb.PutRequest(key=b"k", value=b"v", lease=g.ID))
            await asyncio.sleep(max(0.0, s.leases.expiry(g.ID) - time.monotonic()) + 0.2)
            with pytest.raises(errors.EtcdError) as ei:
                await s.lease_renew(g.ID)
            assert ei.value.message == "etcdserver: requested lease not found"
            assert (await s.range(pb.RangeRequest(key=b"k"))).count == 0
        finally:
            await s.stop()

    asyncio.run(main())
