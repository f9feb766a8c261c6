"""Parallel append (on unless ``KEELSON_PARALLEL_APPEND=0``) on in-process members wired by
an in-memory router. The leader's WAL save runs on the loop's thread, so what matters is
what was handed to the transport when the save of an entry starts: with the switch the
appends carrying it are already out (the followers' fsyncs overlap the leader's), without it
they are not; in both modes no message yet says the entry is committed. A leader that dies
in its save (after sending, before writing) loses nothing that was acknowledged, and a lone
voter does not tell its learner a commit it has not made durable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from keelson.proto import errors
from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.raft import Entry, HardState, Message
from keelson.server.etcdserver import (
    PARALLEL_APPEND_ENV,
    EtcdServer,
    MemberConfig,
    parallel_append_from_env,
)
from tests.server.support import URLS, Router, leader_of, router_member_config, until


def watch_save(server: EtcdServer, index: int,
               at_save: Callable[[], None]) -> None:
    """Call ``at_save`` when ``server`` starts saving the entry at ``index``, then save
    (unless ``at_save`` raised: a process that died before its write)."""
    save = server.wal.save

    def watching(hs: HardState | None, ents: Sequence[Entry], must_sync: bool = False) -> int:
        if ents and ents[0].index <= index <= ents[-1].index:
            at_save()
        return save(hs, ents, must_sync)

    server.wal.save = watching  # type: ignore[method-assign]


def max_commit(msgs: Sequence[Message], to: int | None = None) -> int:
    return max((m.commit for m in msgs if to is None or m.to == to), default=0)


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


@pytest.mark.parametrize(("raw", "want"), [
    (None, True), ("", True), ("1", True), ("0", False), ("yes", True),
])
def test_switch_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                             raw: str | None, want: bool) -> None:
    if raw is None:
        monkeypatch.delenv(PARALLEL_APPEND_ENV, raising=False)
    else:
        monkeypatch.setenv(PARALLEL_APPEND_ENV, raw)
    assert parallel_append_from_env() is want
    cfg = MemberConfig(name="a", data_dir=str(tmp_path), member_id=1, cluster_id=1)
    assert cfg.parallel_append is want


@pytest.mark.timeout(120)
@pytest.mark.parametrize("parallel", [False, True], ids=["serial", "parallel"])
def test_appends_leave_before_the_leader_fsync_only_in_parallel_mode(
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
            seen: list[tuple[int, int]] = []
            watch_save(leader, index,
                       lambda: seen.append((router.highest_sent, max_commit(router.sent))))
            resp = await leader.put(pb.PutRequest(key=b"k", value=b"v"))
            assert resp.header.revision == 3
            assert len(seen) == 1, seen
            sent, commit = seen[0]
            assert (sent >= index) == parallel, (sent, index)
            assert commit < index  # nobody is told of the commit before the save
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
            index = old.storage.last_index() + 1
            old_id = old.cfg.member_id

            def die() -> None:  # appends handed to the transport, nothing written yet
                assert router.highest_sent >= index
                router.down.add(old_id)  # the process dies: nothing more in or out
                raise OSError("simulated crash before the WAL write")

            watch_save(old, index, die)
            put = asyncio.create_task(old.put(pb.PutRequest(key=b"lost?", value=b"y")))
            followers = {mid: s for mid, s in servers.items() if s is not old}
            await until(lambda: all(f.storage.last_index() >= index
                                     for f in followers.values()))
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
            index = s1.storage.last_index() + 1
            told: list[int] = []
            watch_save(s1, index, lambda: told.append(max_commit(router.sent, to=lid)))
            await asyncio.wait_for(s1.put(pb.PutRequest(key=b"k", value=b"v")), 20)
            assert len(told) == 1 and told[0] < index, (told, index)
            await until(lambda: s2 is not None and s2.applied_index >= index)
            assert await _keys(s2) == [(b"k", b"v"), (b"pre", b"1")]
        finally:
            if s2 is not None:
                await s2.stop()
            await s1.stop()

    asyncio.run(main())
