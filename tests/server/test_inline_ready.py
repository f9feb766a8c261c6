"""``EtcdServer.drive``: whoever fed raft handles the resulting Ready at once, unless one
is being handled already, the member stopped, or the Ready installs a snapshot."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from keelson.proto import errors
from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.raft import Ready
from keelson.server import etcdserver
from keelson.server.etcdserver import (
    INLINE_READY_ENV,
    EtcdServer,
    MemberConfig,
    inline_ready_from_env,
)
from tests.server.support import Router, leader_of, single_member_config, until


class _Crash(Exception):
    pass


def _spy_loop_task(s: EtcdServer) -> list[Ready]:
    """Record the Readys the raft loop task (not ``drive``) handles."""
    seen: list[Ready] = []
    handle = s._handle_ready

    async def spy(rd: Ready) -> None:
        seen.append(rd)
        await handle(rd)

    s._handle_ready = spy  # type: ignore[method-assign]
    return seen


def _entries(readys: list[Ready]) -> int:
    return sum(len(rd.entries) for rd in readys)


@pytest.mark.parametrize("inline", [True, False])
def test_proposals_are_saved_and_applied_by_the_flush_not_the_loop_task(
    tmp_path: Path, inline: bool
) -> None:
    async def main() -> None:
        s = EtcdServer(single_member_config(tmp_path, inline_ready=inline))
        by_task = _spy_loop_task(s)
        await s.start()
        try:
            await s.put(pb.PutRequest(key=b"warm", value=b"up"))  # leader, term entry
            before = _entries(by_task)
            for i in range(5):
                await s.put(pb.PutRequest(key=b"k%d" % i, value=b"v"))
            await asyncio.gather(*(s.put(pb.PutRequest(key=b"g", value=b"%d" % i))
                                   for i in range(20)))
            got = await s.range(pb.RangeRequest(key=b"g"))
            assert got.kvs[0].version == 20
            if inline:
                assert _entries(by_task) == before  # the flush handled every one
            else:
                assert _entries(by_task) >= before + 6  # the loop task did
        finally:
            await s.stop()

    asyncio.run(main())


def test_drive_while_a_ready_is_handled_does_nothing(tmp_path: Path) -> None:
    """Readys are taken one at a time, the next only after the previous one's save: a
    ``drive`` from inside the handling of one (here from the fault hook, between save and
    apply) must not take the next."""
    depth: list[int] = []
    box: list[EtcdServer] = []

    def faults(point: str) -> None:
        if point == "before-apply" and box:
            s = box[0]
            s.node.tick()  # give raft something to do
            s.drive()
            depth.append(int(s._in_ready))

    async def main() -> None:
        s = EtcdServer(single_member_config(tmp_path), faults=faults)
        box.append(s)
        inner = s._handle_ready_now
        active = [0]

        def counting(rd: Ready, **kw: Any) -> None:
            active[0] += 1
            assert active[0] == 1, "a Ready was taken while another was being handled"
            try:
                inner(rd, **kw)
            finally:
                active[0] -= 1

        s._handle_ready_now = counting  # type: ignore[method-assign]
        await s.start()
        try:
            for i in range(5):
                await s.put(pb.PutRequest(key=b"k", value=b"%d" % i))
            assert depth and all(d == 1 for d in depth)
        finally:
            await s.stop()

    asyncio.run(main())


def test_a_failure_in_drive_stops_the_member_like_one_in_the_loop(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    armed = {"on": False}

    def faults(point: str) -> None:
        if point == "before-apply" and armed["on"]:
            raise _Crash(point)

    async def main() -> None:
        s = EtcdServer(single_member_config(tmp_path, request_timeout_s=3.0), faults=faults)
        await s.start()
        try:
            await s.put(pb.PutRequest(key=b"a", value=b"1"))
            armed["on"] = True
            with caplog.at_level(logging.ERROR):
                with pytest.raises(errors.EtcdError) as info:
                    await asyncio.wait_for(s.put(pb.PutRequest(key=b"a", value=b"2")), 2.0)
            assert info.value is errors.STOPPED
            assert "raft loop failed" in caplog.text
            loop_task = next(t for t in s._tasks if t.get_name() == "raft-loop")
            await until(loop_task.done, 2.0)
            with pytest.raises(errors.EtcdError):
                await s.put(pb.PutRequest(key=b"a", value=b"3"))
        finally:
            await s.stop()

    asyncio.run(main())


def test_drive_before_start_leaves_the_ready_to_the_loop_task(tmp_path: Path) -> None:
    async def main() -> None:
        s = EtcdServer(single_member_config(tmp_path))
        s.node.campaign()  # a one-member cluster elects itself at once
        assert s.node.has_ready()
        s.drive()
        assert s.node.has_ready()  # not started: untouched
        await s.start()
        try:
            await until(lambda: s.is_leader, 5.0)
        finally:
            await s.stop()

    asyncio.run(main())


def test_three_members_commit_through_drive_with_the_loop_task_idle(tmp_path: Path) -> None:
    """With the router delivering as the transport does (step, then drive), a write's
    append, answers and commit are all handled inline on every member."""

    async def main() -> None:
        router = Router()
        servers = await router.start_three(tmp_path, parallel=True)
        by_task = {mid: _spy_loop_task(s) for mid, s in servers.items()}
        try:
            leader = await leader_of(servers)
            await leader.put(pb.PutRequest(key=b"warm", value=b"up"))
            await until(lambda: all(s.applied_index == leader.applied_index
                                    for s in servers.values()))
            before = {mid: _entries(v) for mid, v in by_task.items()}
            for i in range(10):
                await leader.put(pb.PutRequest(key=b"k%d" % i, value=b"v"))
            await until(lambda: all(s.applied_index == leader.applied_index
                                    for s in servers.values()))
            assert {mid: _entries(v) for mid, v in by_task.items()} == before
            for s in servers.values():
                got = await s.range(pb.RangeRequest(key=b"k9", serializable=True))
                assert got.count == 1
        finally:
            for s in servers.values():
                await s.stop()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("raw", "want", "warned"),
    [("", True, False), ("1", True, False), ("0", False, False), ("yes", True, True)],
)
def test_inline_ready_env(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    raw: str, want: bool, warned: bool,
) -> None:
    monkeypatch.setenv(INLINE_READY_ENV, raw)
    with caplog.at_level(logging.WARNING):
        assert inline_ready_from_env() is want
        cfg = MemberConfig(name="m", data_dir="/nonexistent", member_id=1, cluster_id=1)
        assert cfg.inline_ready is want
    assert ("ignoring" in caplog.text) is warned


def test_forwarded_proposals_wait_for_one_ready_with_everything_proposed_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A follower's forwarded MsgProp is not driven on delivery while proposals are
    frequent: the proposals both followers and the leader's own clients make together
    reach the leader's log in one Ready (one fsync, one append per follower), not one
    Ready per forwarded batch. (The window is widened so a loaded test machine cannot
    stretch the gaps between these proposals past it.)"""
    monkeypatch.setattr(etcdserver, "COALESCE_FORWARDED_S", 60.0)

    async def main() -> None:
        router = Router()
        async with router.three(tmp_path, parallel=True) as servers:
            leader = await leader_of(servers)
            followers = [s for s in servers.values() if s is not leader]
            await leader.put(pb.PutRequest(key=b"warm", value=b"up"))
            sizes: list[int] = []
            inner = leader._handle_ready_now

            def spy(rd: Ready, **kw: Any) -> None:
                if rd.entries:
                    sizes.append(len(rd.entries))
                inner(rd, **kw)

            leader._handle_ready_now = spy  # type: ignore[method-assign]
            puts = [s.put(pb.PutRequest(key=b"k%d" % i, value=b"v"))
                    for s in (*followers, leader) for i in range(10)]
            await asyncio.gather(*puts)
            assert sum(sizes) == 30
            assert max(sizes) >= 20, sizes  # the followers' batches came together

    asyncio.run(main())


def test_a_lone_forwarded_proposal_is_driven_on_delivery(tmp_path: Path) -> None:
    async def main() -> None:
        router = Router()
        async with router.three(tmp_path, parallel=True) as servers:
            leader = await leader_of(servers)
            follower = next(s for s in servers.values() if s is not leader)
            await follower.put(pb.PutRequest(key=b"warm", value=b"up"))
            by_task = _spy_loop_task(leader)
            for i in range(5):
                await asyncio.sleep(0.01)  # proposals far apart: nothing to wait for
                await follower.put(pb.PutRequest(key=b"k%d" % i, value=b"v"))
            assert _entries(by_task) == 0

    asyncio.run(main())
