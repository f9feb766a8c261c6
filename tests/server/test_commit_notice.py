"""The leader's commit notice hold (``keelson.server.commit_notice``): unit tests with a fake
clock and timer, then in-process members on the in-memory router."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.raft import Entry, Message, MessageType
from keelson.server.commit_notice import CommitNotices
from keelson.server.etcdserver import COMMIT_NOTICE_HOLD_ENV, commit_notice_hold_from_env
from tests.server.support import Router, leader_of, until


class FakeTimer:
    def __init__(self, delay: float, fn: Callable[[], None]) -> None:
        self.delay, self.fn, self.cancelled = delay, fn, False

    def cancel(self) -> None:
        self.cancelled = True


class Harness:
    def __init__(self, hold_s: float = 0.002) -> None:
        self.sent: list[list[Message]] = []
        self.timers: list[FakeTimer] = []
        self.notices = CommitNotices(self.sent.append, self._later,  # type: ignore[arg-type]
                                     hold_s=hold_s)
        self.now = 100.0

    def _later(self, delay: float, fn: Callable[[], None]) -> FakeTimer:
        t = FakeTimer(delay, fn)
        self.timers.append(t)
        return t

    def busy(self) -> None:
        """Two proposals 1 ms apart: writes are frequent."""
        self.propose(1, 1)
        self.now += 0.001
        self.propose(2, 2)

    def propose(self, first: int, last: int, by: int = 0) -> None:
        self.notices.proposed(self.now, first, last, by)

    def fire(self) -> None:
        live = [t for t in self.timers if not t.cancelled]
        assert len(live) == 1
        live[0].fn()

    def flat(self) -> list[Message]:
        return [m for batch in self.sent for m in batch]


def notice(to: int, commit: int, term: int = 2) -> Message:
    return Message(MessageType.APP, to=to, frm=1, term=term, index=commit, log_term=term,
                   commit=commit)


def append(to: int, index: int, commit: int, term: int = 2) -> Message:
    return Message(MessageType.APP, to=to, frm=1, term=term, index=index - 1, log_term=term,
                   commit=commit, entries=(Entry(term, index, data=b"x"),))


def heartbeat(to: int, commit: int, term: int = 2) -> Message:
    return Message(MessageType.HEARTBEAT, to=to, frm=1, term=term, commit=commit)


def test_notices_are_held_while_busy_and_dropped_for_an_append_that_carries_them() -> None:
    h = Harness()
    h.busy()
    h.notices.send([notice(2, 5), notice(3, 5)], leading=True)
    assert h.sent == [] and h.notices.held == 2
    h.notices.send([append(2, 6, 5), append(3, 6, 5)], leading=True)
    assert h.flat() == [append(2, 6, 5), append(3, 6, 5)]
    assert h.notices.held == 0
    h.fire()  # the timer finds nothing left to send
    assert len(h.flat()) == 2


def test_a_held_notice_goes_out_when_its_time_is_up() -> None:
    h = Harness()
    h.busy()
    h.notices.send([notice(2, 5)], leading=True)
    h.notices.send([notice(2, 6)], leading=True)  # the newer one replaces it
    assert h.timers[0].delay == pytest.approx(0.002)
    h.fire()
    assert h.flat() == [notice(2, 6)]


def test_a_message_with_a_lower_commit_or_another_term_does_not_drop_the_notice() -> None:
    h = Harness()
    h.busy()
    h.notices.send([notice(2, 7)], leading=True)
    h.notices.send([heartbeat(2, 6), append(2, 8, 7, term=3)], leading=True)
    assert h.notices.held == 1
    h.notices.send([heartbeat(3, 9)], leading=True)  # another follower
    assert h.notices.held == 1
    h.fire()
    assert h.flat()[-1] == notice(2, 7)


def test_nothing_is_held_when_proposals_are_far_apart() -> None:
    h = Harness()
    h.propose(1, 1)
    h.now += 0.010  # 10 ms: a lone write
    h.propose(2, 2)
    h.notices.send([notice(2, 2), notice(3, 2)], leading=True)
    assert h.flat() == [notice(2, 2), notice(3, 2)] and h.timers == []


def test_a_follower_is_told_at_once_of_the_commit_of_its_forwarded_proposals() -> None:
    h = Harness()
    h.busy()
    h.propose(3, 5, by=2)  # follower 2 forwarded entries 3..5
    h.notices.send([notice(2, 2), notice(3, 2)], leading=True)  # before them: held
    assert h.sent == []
    h.notices.send([notice(2, 4), notice(3, 4)], leading=True)  # covers 3 and 4: at once
    assert h.flat() == [notice(2, 4)]
    h.notices.send([notice(2, 4)], leading=True)  # 5 still waits: 4 tells it nothing
    assert h.flat() == [notice(2, 4)]
    h.notices.send([heartbeat(2, 5)], leading=True)  # covers 5: sent, and 2 waits no more
    h.notices.send([notice(2, 6)], leading=True)
    assert h.flat() == [notice(2, 4), heartbeat(2, 5)]
    h.fire()
    assert h.flat()[2:] == [notice(3, 4), notice(2, 6)]


def test_a_member_that_stops_leading_sends_what_it_held_and_holds_nothing() -> None:
    h = Harness()
    h.busy()
    h.notices.send([notice(2, 5)], leading=True)
    h.notices.send([notice(3, 9, term=3)], leading=False)
    assert h.flat() == [notice(2, 5), notice(3, 9, term=3)]
    assert h.notices.held == 0 and all(t.cancelled for t in h.timers)


def test_drop_forgets_the_held_notices() -> None:
    h = Harness()
    h.busy()
    h.notices.send([notice(2, 5)], leading=True)
    h.notices.drop()
    assert h.notices.held == 0 and h.timers[0].cancelled and h.sent == []


# -- in-process members ----------------------------------------------------------------------


def _commit_only(m: Message) -> bool:
    return m.type == MessageType.APP and not m.entries


@pytest.mark.timeout(120)
def test_members_coalesce_notices_and_answer_forwarded_puts_at_once(tmp_path: Path) -> None:
    async def main() -> None:
        router = Router()
        # a hold of 30 s, busy below 60 s: every notice is held unless something carries it
        async with router.three(tmp_path, commit_notice_hold_s=30.0) as servers:
            leader = await leader_of(servers)
            lid = leader.cfg.member_id
            await leader.put(pb.PutRequest(key=b"a", value=b"1"))
            await leader.put(pb.PutRequest(key=b"b", value=b"2"))  # now "busy"
            index = leader.storage.last_index()
            mark = len(router.sent)
            await leader.put(pb.PutRequest(key=b"c", value=b"3"))
            told = [m for m in router.sent[mark:] if m.frm == lid and _commit_only(m)
                    and m.commit >= index + 1]
            assert told == []  # index+1 committed; its notices are held (or carried by
            # a heartbeat, which is never held)
            mark = len(router.sent)
            await leader.put(pb.PutRequest(key=b"d", value=b"4"))
            carried = [m for m in router.sent[mark:] if m.frm == lid and m.entries]
            assert carried and all(m.commit >= index + 1 for m in carried)
            # a put through a follower: the follower is told of its commit at once
            follower = next(s for s in servers.values() if s is not leader)
            fid = follower.cfg.member_id
            mark = len(router.sent)
            resp = await asyncio.wait_for(
                follower.put(pb.PutRequest(key=b"e", value=b"5")), 10)
            assert resp.header.revision == 6
            idx = leader.storage.last_index()
            assert any(m.to == fid and _commit_only(m) and m.commit >= idx
                       for m in router.sent[mark:])  # sent at once, not held
            for s in servers.values():
                await until(lambda s=s: s.applied_index >= leader.applied_index)  # type: ignore[misc]
                r = await s.range(pb.RangeRequest(key=b"a", range_end=b"z", serializable=True))
                assert [kv.key for kv in r.kvs] == [b"a", b"b", b"c", b"d", b"e"]

    asyncio.run(main())


@pytest.mark.timeout(120)
def test_without_the_hold_every_commit_is_told_at_once(tmp_path: Path) -> None:
    async def main() -> None:
        router = Router()
        async with router.three(tmp_path, commit_notice_hold_s=0.0) as servers:
            leader = await leader_of(servers)
            assert leader._notices is None
            for k in (b"a", b"b"):
                mark = len(router.sent)
                await leader.put(pb.PutRequest(key=k, value=b"1"))
                index = leader.storage.last_index()
                told = {m.to for m in router.sent[mark:]
                        if _commit_only(m) and m.commit >= index}
                assert len(told) == 2

    asyncio.run(main())


@pytest.mark.parametrize(("raw", "want"), [
    (None, 0.002), ("", 0.002), ("0", 0.0), ("5", 0.005), ("0.5", 0.0005),
    ("abc", 0.002), ("-1", 0.002), ("1000", 0.002),
])
def test_the_hold_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch,
                                               raw: str | None, want: float) -> None:
    if raw is None:
        monkeypatch.delenv(COMMIT_NOTICE_HOLD_ENV, raising=False)
    else:
        monkeypatch.setenv(COMMIT_NOTICE_HOLD_ENV, raw)
    assert commit_notice_hold_from_env() == pytest.approx(want)
