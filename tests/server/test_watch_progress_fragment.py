"""Periodic progress notifications and fragmented watch responses (etcd 3.4's
``progress_notify`` and ``fragment``), on the in-process watch stream adapter.

The over-the-wire behaviour, side by side with a real etcd, is in
``test_watch_progress_fragment_vs_etcd.py``.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from keelson.backend import Backend
from keelson.mvcc import KVStore, PutRequest
from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.proto.mvccpb import kv_pb2
from keelson.server.watch import (
    DEFAULT_PROGRESS_INTERVAL,
    MAX_PENDING,
    MIN_PROGRESS_INTERVAL,
    WatchHub,
    WatchStream,
    progress_notify_interval,
    split_fragments,
)


def _open(path: Path) -> tuple[Backend, KVStore]:
    b = Backend(str(path), buckets=KVStore.BUCKETS, map_size=64 << 20)
    return b, KVStore(b)


def _put(kv: KVStore, key: bytes, value: bytes) -> int:
    with kv.batch() as btx:
        return kv.put(btx, PutRequest(key, value)).revision


def _hub(kv: KVStore, **kw: object) -> WatchHub:
    return WatchHub(
        kv, lambda: pb.ResponseHeader(cluster_id=7, revision=kv.current_revision),
        rng=random.Random(1), **kw,  # type: ignore[arg-type]
    )


async def _next(st: WatchStream, timeout: float = 2.0) -> pb.WatchResponse:
    r = await asyncio.wait_for(st.next(), timeout)
    assert r is not None
    return r


async def _nothing_queued(st: WatchStream) -> bool:
    try:
        await asyncio.wait_for(st.next(), 0.2)
    except TimeoutError:
        return True
    return False


def test_interval_rules_are_etcds() -> None:
    assert progress_notify_interval(0) == DEFAULT_PROGRESS_INTERVAL == 600.0
    assert progress_notify_interval(-5) == DEFAULT_PROGRESS_INTERVAL
    assert progress_notify_interval(0.01) == MIN_PROGRESS_INTERVAL == 0.1
    assert progress_notify_interval(2.5) == 2.5


def test_tick_notifies_only_progress_watchers_that_got_no_events(tmp_path: Path) -> None:
    async def main() -> None:
        b, kv = _open(tmp_path / "db")
        try:
            hub = _hub(kv)  # default 10 min period: ticks are driven by hand here
            st = hub.new_stream()
            st.create(pb.WatchCreateRequest(key=b"a", progress_notify=True))
            st.create(pb.WatchCreateRequest(key=b"b"))
            assert (await _next(st)).watch_id == 0 and (await _next(st)).watch_id == 1
            rev = _put(kv, b"zzz", b"1")  # no watcher matches
            st.tick_progress()
            prog = await _next(st)
            assert prog.watch_id == 0 and not prog.events and not prog.created
            assert prog.header.revision == rev and prog.header.cluster_id == 7
            assert await _nothing_queued(st)  # nothing for watcher 1 (no progress_notify)

            # an event sent to watcher 0 elides the next progress notification only
            _put(kv, b"a", b"x")
            assert [e.kv.key for e in (await _next(st)).events] == [b"a"]
            st.tick_progress()
            assert await _nothing_queued(st)
            st.tick_progress()
            assert (await _next(st)).watch_id == 0

            # a canceled watcher gets no more progress
            st.cancel(0)
            assert (await _next(st)).canceled
            st.tick_progress()
            assert await _nothing_queued(st)
            st.close()
        finally:
            b.close()

    asyncio.run(main())


def test_unsynced_watcher_gets_no_progress(tmp_path: Path) -> None:
    async def main() -> None:
        b, kv = _open(tmp_path / "db")
        try:
            hub = _hub(kv)
            st = hub.new_stream()
            st.create(pb.WatchCreateRequest(key=b"k", progress_notify=True))
            assert (await _next(st)).created
            n = MAX_PENDING + 20  # not read: the watcher falls behind (unsynced)
            for i in range(n):
                _put(kv, b"k", b"%d" % i)
            assert hub.store.counts() == (0, 1)
            st.tick_progress()
            seen = 0
            while seen < n:
                r = await _next(st)
                assert r.events, "progress sent to a watcher that was not synced"
                seen += len(r.events)
            assert seen == n
            st.close()
        finally:
            b.close()

    asyncio.run(main())


def test_stream_timer_sends_progress_periodically(tmp_path: Path) -> None:
    async def main() -> None:
        b, kv = _open(tmp_path / "db")
        try:
            hub = _hub(kv, progress_interval=0.1)
            st = hub.new_stream()
            st.create(pb.WatchCreateRequest(key=b"a", progress_notify=True, watch_id=5))
            assert (await _next(st)).created
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            got = [await _next(st, 5.0) for _ in range(3)]
            elapsed = loop.time() - t0
            assert all(r.watch_id == 5 and not r.events for r in got)
            # three ticks of 0.1 s plus at most 10 % jitter each: not before 0.3 s
            assert elapsed >= 0.29, elapsed
            st.close()
            assert await st.next() is None
        finally:
            b.close()

    asyncio.run(main())


def _event(key: bytes, size: int, rev: int) -> kv_pb2.Event:
    return kv_pb2.Event(kv=kv_pb2.KeyValue(key=key, value=b"x" * size, mod_revision=rev))


def test_split_fragments_matches_etcds_rule() -> None:
    resp = pb.WatchResponse(header=pb.ResponseHeader(revision=9), watch_id=3,
                            events=[_event(b"k%d" % i, 100, i + 2) for i in range(7)])
    assert split_fragments(resp, resp.ByteSize() + 1) == [resp]  # below the limit
    one = pb.WatchResponse(watch_id=3, events=[_event(b"big", 5000, 2)])
    assert split_fragments(one, 100) == [one]  # a single event is never split
    limit = 300  # two events (112 bytes each on the wire) fit, three do not
    parts = split_fragments(resp, limit)
    assert [len(p.events) for p in parts] == [2, 2, 2, 1]
    assert [p.fragment for p in parts] == [True, True, True, False]
    assert [e for p in parts for e in p.events] == list(resp.events)
    for p in parts:
        assert p.watch_id == 3 and p.header.revision == 9
        with_flag = pb.WatchResponse()
        with_flag.CopyFrom(p)
        with_flag.fragment = True
        assert with_flag.ByteSize() < limit  # sized as sent with fragment set
        more = pb.WatchResponse()
        more.CopyFrom(with_flag)
        more.events.append(resp.events[0])
        assert p is parts[-1] or more.ByteSize() >= limit  # as full as the limit allows
    # an event bigger than the limit travels alone, between full fragments
    mixed = pb.WatchResponse(events=[_event(b"a", 10, 2), _event(b"b", 1000, 3),
                                     _event(b"c", 10, 4)])
    parts = split_fragments(mixed, 500)
    assert [[e.kv.key for e in p.events] for p in parts] == [[b"a"], [b"b"], [b"c"]]


@pytest.mark.parametrize("fragment", [True, False])
def test_catch_up_response_is_fragmented_only_when_asked(tmp_path: Path, fragment: bool) -> None:
    async def main() -> None:
        b, kv = _open(tmp_path / "db")
        try:
            limit = 2000
            hub = _hub(kv, max_response_bytes=limit)
            revs = [_put(kv, b"p/%d" % i, b"v" * 300) for i in range(10)]
            st = hub.new_stream()
            st.create(pb.WatchCreateRequest(key=b"p/", range_end=b"p0", start_revision=1,
                                            fragment=fragment))
            assert (await _next(st)).created
            parts: list[pb.WatchResponse] = []
            while not parts or parts[-1].fragment:
                parts.append(await _next(st))
            assert [e.kv.mod_revision for p in parts for e in p.events] == revs
            if fragment:
                assert len(parts) > 1
                assert all(p.fragment for p in parts[:-1]) and not parts[-1].fragment
                assert all(p.ByteSize() < limit for p in parts)
            else:
                assert len(parts) == 1 and parts[0].ByteSize() > limit
            st.close()
        finally:
            b.close()

    asyncio.run(main())
