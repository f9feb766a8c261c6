"""A linearizable read that reaches raft during an election waits for the new leader
instead of being lost: raft drops a read index while there is no leader, and the member asks
again every heartbeat until the read is answered or its timeout ends."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.raft import StateType
from tests.server.support import Router, leader_of, until


@pytest.mark.timeout(120)
def test_read_during_an_election_is_answered_by_the_next_leader(tmp_path: Path) -> None:
    async def main() -> None:
        router = Router()
        async with router.three(tmp_path) as servers:
            leader = await leader_of(servers)
            await leader.put(pb.PutRequest(key=b"k", value=b"v"))
            alone = next(s for s in servers.values() if s is not leader)
            router.down |= {s.cfg.member_id for s in servers.values() if s is not alone}
            await until(lambda: alone._state in (StateType.CANDIDATE,
                                                  StateType.PRE_CANDIDATE), 30)
            # The race: the member still believes in the old leader (the Ready that tells
            # it otherwise is not handled yet) when the read index goes to raft.
            alone._lead = leader.cfg.member_id
            read = asyncio.create_task(alone.range(pb.RangeRequest(key=b"k")))
            await asyncio.sleep(0.5)
            assert not read.done()  # no leader: the read waits
            router.down.clear()
            got = await asyncio.wait_for(read, 9)
            assert [kv.value for kv in got.kvs] == [b"v"]

    asyncio.run(main())
