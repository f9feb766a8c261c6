"""The server's watch stream adapter over mvcc's WatchableStore: created first, events in
order, compacted start, cancel, progress, duplicate ids, a slow reader, and a store swap."""

from __future__ import annotations

import asyncio
from pathlib import Path

from keelson.backend import Backend
from keelson.mvcc import DeleteRangeRequest, KVStore, PutRequest
from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.server.watch import MAX_PENDING, WatchHub, WatchStream


def _open(path: Path) -> tuple[Backend, KVStore]:
    b = Backend(str(path), buckets=KVStore.BUCKETS, map_size=64 << 20)
    return b, KVStore(b)


def _put(kv: KVStore, key: bytes, value: bytes) -> int:
    with kv.batch() as btx:
        return kv.put(btx, PutRequest(key, value)).revision


def _hub(kv: KVStore) -> WatchHub:
    return WatchHub(kv, lambda: pb.ResponseHeader(cluster_id=7, revision=kv.current_revision))


async def _next(st: WatchStream) -> pb.WatchResponse:
    r = await asyncio.wait_for(st.next(), 2)
    assert r is not None
    return r


def test_created_history_live_prev_kv_cancel_progress(tmp_path: Path) -> None:
    async def main() -> None:
        b, kv = _open(tmp_path / "db")
        try:
            hub = _hub(kv)
            r1 = _put(kv, b"a", b"1")
            st = hub.new_stream()
            req = pb.WatchCreateRequest(key=b"a", start_revision=r1, prev_kv=True)
            assert st.create(req) is None
            created = await _next(st)
            assert created.created and created.watch_id == 0 and created.header.cluster_id == 7
            hist = await _next(st)
            assert [(e.kv.value, e.kv.mod_revision) for e in hist.events] == [(b"1", r1)]
            r2 = _put(kv, b"a", b"2")
            live = await _next(st)
            assert live.events[0].kv.value == b"2" and live.events[0].prev_kv.value == b"1"
            assert live.header.revision == r2
            dup = st.create(pb.WatchCreateRequest(key=b"b", watch_id=0))
            assert dup is None  # id 0 means "pick one"
            assert (await _next(st)).watch_id == 1
            bad = st.create(pb.WatchCreateRequest(key=b"c", watch_id=1))
            assert bad is not None and bad.canceled and "duplicate" in bad.cancel_reason
            assert st.request_progress() is None
            prog = await _next(st)
            assert prog.watch_id == -1 and not prog.events and prog.header.revision == r2
            assert st.cancel(0) is None
            canceled = await _next(st)
            assert canceled.canceled and canceled.watch_id == 0
            with kv.batch() as btx:
                kv.delete_range(btx, DeleteRangeRequest(b"b", b""))
            _put(kv, b"a", b"3")  # watcher 0 is gone: nothing for it
            _put(kv, b"b", b"x")
            got = await _next(st)
            assert got.watch_id == 1 and got.events[0].kv.value == b"x"
            st.close()
            assert await st.next() is None
        finally:
            b.close()

    asyncio.run(main())


def test_compacted_start_is_canceled_with_compact_revision(tmp_path: Path) -> None:
    async def main() -> None:
        b, kv = _open(tmp_path / "db")
        try:
            hub = _hub(kv)
            for i in range(3):
                _put(kv, b"a", bytes([i]))
            with kv.batch() as btx:
                kv.compact(btx, 3)
            kv.finish_compaction()
            st = hub.new_stream()
            st.create(pb.WatchCreateRequest(key=b"a", start_revision=2))
            assert (await _next(st)).created
            resp = await _next(st)
            assert resp.canceled and resp.compact_revision == 3
            st.close()
        finally:
            b.close()

    asyncio.run(main())


def test_slow_reader_gets_everything_in_order(tmp_path: Path) -> None:
    async def main() -> None:
        b, kv = _open(tmp_path / "db")
        try:
            hub = _hub(kv)
            st = hub.new_stream()
            st.create(pb.WatchCreateRequest(key=b"k"))
            assert (await _next(st)).created
            n = 3 * MAX_PENDING
            revs = [_put(kv, b"k", str(i).encode()) for i in range(n)]
            seen: list[int] = []
            while len(seen) < n:
                seen += [e.kv.mod_revision for e in (await _next(st)).events]
            assert seen == revs
            st.close()
        finally:
            b.close()

    asyncio.run(main())


def test_rebind_to_a_new_store_resumes_without_gaps(tmp_path: Path) -> None:
    async def main() -> None:
        b1, kv1 = _open(tmp_path / "one")
        b2, kv2 = _open(tmp_path / "two")
        try:
            hub = _hub(kv1)
            st = hub.new_stream()
            st.create(pb.WatchCreateRequest(key=b"k"))
            assert (await _next(st)).created
            r = _put(kv1, b"k", b"1")
            assert [e.kv.mod_revision for e in (await _next(st)).events] == [r]
            # the "snapshot" store has the same first write and more after it
            assert _put(kv2, b"k", b"1") == r
            later = [_put(kv2, b"k", b"2"), _put(kv2, b"other", b"x")]
            hub.rebind(kv2)
            got = await _next(st)
            assert [e.kv.mod_revision for e in got.events] == [later[0]]
            r3 = _put(kv2, b"k", b"3")
            assert [e.kv.mod_revision for e in (await _next(st)).events] == [r3]
            st.close()
        finally:
            b1.close()
            b2.close()

    asyncio.run(main())
