"""Parallel append (``KEELSON_EXPERIMENTAL_PARALLEL_APPEND``) on in-process members wired by
an in-memory router, with the leader's WAL write held at a gate: with the switch the
followers receive the entry while the leader's fsync is still pending, without it they do
not; in both modes nobody learns that the entry is committed and the client gets no answer
until the leader's write returns. A leader that crashes at the gate loses nothing that was
acknowledged, and a lone voter does not tell its learner a commit it has not made durable.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from keelson.proto import errors
from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.raft import Entry, HardState
from keelson.server.etcdserver import (
    PARALLEL_APPEND_ENV,
    EtcdServer,
    MemberConfig,
    parallel_append_from_env,
)
from tests.server.support import URLS, Router, leader_of, router_member_config, until


class Gate:
    """Holds a member's WAL writes of entries (in the worker thread that runs them) until
    released; ``crash`` makes the held write fail without writing, as a process killed
    before its fsync."""

    def __init__(self, server: EtcdServer) -> None:
        self._save = server.wal.save
        self.armed = False
        self.crash = False
        self.entered = threading.Event()
        self.release = threading.Event()
        server.wal.save = self.save  # type: ignore[method-assign]

    def save(self, hs: HardState | None, ents: Sequence[Entry], must_sync: bool = False) -> int:
        if ents and self.armed:
            self.entered.set()
            self.release.wait(20)
            if self.crash:
                raise OSError("simulated crash before the fsync")
        return self._save(hs, ents, must_sync)


async def _keys(s: EtcdServer) -> list[tuple[bytes, bytes]]:
    r = await s.range(pb.RangeRequest(key=b"\0", range_end=b"\0", serializable=True))
    return [(kv.key, kv.value) for kv in r.kvs]


async def _start3(
    tmp: Path, parallel: bool, points: list[str] | None = None
) -> tuple[Router, dict[int, EtcdServer]]:
    router = Router()
    for mid in URLS:
        s = EtcdServer(router_member_config(tmp, mid, parallel, URLS), send=router.send,
                       faults=points.append if points is not None else None)
        router.servers[mid] = s
    for s in router.servers.values():
        await s.start()
    return router, router.servers


def test_switch_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    monkeypatch.delenv(PARALLEL_APPEND_ENV, raising=False)
    assert not parallel_append_from_env()
    assert not MemberConfig(name="a", data_dir=str(tmp_path), member_id=1, cluster_id=1)\
        .parallel_append
    monkeypatch.setenv(PARALLEL_APPEND_ENV, "1")
    assert MemberConfig(name="a", data_dir=str(tmp_path), member_id=1, cluster_id=1)\
        .parallel_append
    monkeypatch.setenv(PARALLEL_APPEND_ENV, "0")
    assert not parallel_append_from_env()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("parallel", [False, True], ids=["serial", "parallel"])
def test_followers_get_the_entry_during_the_leader_fsync_only_in_parallel_mode(
    tmp_path: Path, parallel: bool
) -> None:
    async def main() -> None:
        points: list[str] = []
        router, servers = await _start3(tmp_path, parallel, points)
        try:
            leader = await leader_of(servers)
            await leader.put(pb.PutRequest(key=b"before", value=b"0"))
            assert ("after-early-send" in points) == parallel  # the failpoint is reached
            index = leader.storage.last_index() + 1
            followers = [s for s in servers.values() if s is not leader]
            if not parallel:
                # The default save runs on the loop's thread, which a gate would block for
                # every in-process member: look at what was sent when it starts.
                at_save: list[int] = []
                save = leader.wal.save

                def watching_save(hs: HardState | None, ents: Sequence[Entry],
                                  must_sync: bool = False) -> int:
                    if ents and ents[-1].index >= index and not at_save:
                        at_save.append(router.highest_sent)
                    return save(hs, ents, must_sync)

                leader.wal.save = watching_save  # type: ignore[method-assign]
                resp = await leader.put(pb.PutRequest(key=b"k", value=b"v"))
                assert at_save and at_save[0] < index, (at_save, index)
                assert router.highest_sent >= index
                assert resp.header.revision == 3
                return
            gate = Gate(leader)
            gate.armed = True
            put = asyncio.create_task(leader.put(pb.PutRequest(key=b"k", value=b"v")))
            await asyncio.to_thread(gate.entered.wait, 20)
            await until(lambda: all(f.storage.last_index() >= index for f in followers))
            await asyncio.sleep(0.3)  # followers answered; nothing may commit visibly yet
            assert not put.done()
            for s in servers.values():
                assert s.storage.hard_state.commit < index
                assert s.applied_index < index
            gate.release.set()
            resp = await asyncio.wait_for(put, 20)
            assert resp.header.revision == 3
            for s in servers.values():
                await until(lambda s=s: s.applied_index >= index)  # type: ignore[misc]
                assert await _keys(s) == [(b"before", b"0"), (b"k", b"v")]
        finally:
            for s in servers.values():
                await s.stop()

    asyncio.run(main())


@pytest.mark.timeout(120)
def test_leader_crash_before_its_fsync_loses_no_acknowledged_write(tmp_path: Path) -> None:
    async def main() -> None:
        router, servers = await _start3(tmp_path, True)
        restarted: EtcdServer | None = None
        try:
            old = await leader_of(servers)
            acked = []
            for i in range(5):
                await old.put(pb.PutRequest(key=b"a%d" % i, value=b"x"))
                acked.append(b"a%d" % i)
            gate = Gate(old)
            gate.armed = True
            gate.crash = True
            put = asyncio.create_task(old.put(pb.PutRequest(key=b"lost?", value=b"y")))
            await asyncio.to_thread(gate.entered.wait, 20)
            followers = {mid: s for mid, s in servers.items() if s is not old}
            index = old.storage.last_index() + 1
            await until(lambda: all(f.storage.last_index() >= index
                                     for f in followers.values()))
            old_id = old.cfg.member_id
            router.down.add(old_id)  # the process dies: nothing more in or out
            gate.release.set()
            with pytest.raises(errors.EtcdError):
                await asyncio.wait_for(put, 20)  # never acknowledged
            await old.stop()
            new = await leader_of(followers)
            for i in range(5):
                await new.put(pb.PutRequest(key=b"b%d" % i, value=b"z"))
                acked.append(b"b%d" % i)
            # the crashed member comes back from its data dir, without the unsaved entry
            restarted = EtcdServer(router_member_config(tmp_path, old_id, True),
                                   send=router.send)
            assert restarted.storage.last_index() < index
            router.servers[old_id] = restarted
            router.down.discard(old_id)
            await restarted.start()
            members = [restarted, *followers.values()]
            await until(lambda: len({s.applied_index for s in members}) == 1
                         and restarted.applied_index >= new.applied_index)
            contents = [await _keys(s) for s in members]
            assert contents[0] == contents[1] == contents[2]
            keys = {k for k, _ in contents[0]}
            assert set(acked) <= keys
        finally:
            for s in [*servers.values(), *([restarted] if restarted else [])]:
                if s is not old:
                    await s.stop()

    asyncio.run(main())


@pytest.mark.timeout(120)
def test_lone_voter_does_not_tell_its_learner_a_commit_before_its_fsync(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        router = Router()
        peers1 = {1: URLS[1]}
        s1 = EtcdServer(router_member_config(tmp_path, 1, True, peers1), send=router.send)
        router.servers[1] = s1
        await s1.start()
        s2: EtcdServer | None = None
        try:
            await until(lambda: s1.is_leader)
            added = await s1.member_add(pb.MemberAddRequest(peerURLs=list(URLS[2]),
                                                             isLearner=True))
            lid = added.member.ID
            s2 = EtcdServer(
                router_member_config(tmp_path, lid, True, {1: URLS[1], lid: URLS[2]}, new=False),
                send=router.send,
            )
            router.servers[lid] = s2
            await s2.start()
            await s1.put(pb.PutRequest(key=b"pre", value=b"1"))
            await until(lambda: s2 is not None and s2.applied_index >= s1.applied_index)
            gate = Gate(s1)
            index = s1.storage.last_index() + 1
            gate.armed = True
            put = asyncio.create_task(s1.put(pb.PutRequest(key=b"k", value=b"v")))
            await asyncio.to_thread(gate.entered.wait, 20)
            await asyncio.sleep(0.5)  # time for an append to reach the learner, if sent
            assert s2.applied_index < index
            assert s2.storage.hard_state.commit < index
            assert not put.done()
            gate.release.set()
            await asyncio.wait_for(put, 20)
            await until(lambda: s2 is not None and s2.applied_index >= index)
            assert await _keys(s2) == [(b"k", b"v"), (b"pre", b"1")]
        finally:
            if s2 is not None:
                await s2.stop()
            await s1.stop()

    asyncio.run(main())
