"""The server's watch stream adapter over mvcc's WatchableStore: created first, events in
order, compacted start, cancel, progress, duplicate ids, a slow reader, a store swap, and
the encoded path (``next_encoded``: the same bytes, events converted once per write)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from keelson import mvcc
from keelson.backend import Backend
from keelson.mvcc import (
    DeleteRangeRequest,
    Event,
    EventType,
    KeyValue,
    KVStore,
    PutRequest,
    TxnRequest,
)
from keelson.proto.etcdserverpb import rpc_pb2 as pb
from keelson.proto.mvccpb import kv_pb2
from keelson.server import watch as watch_mod
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


def _same_watches(hub: WatchHub) -> WatchStream:
    """A stream with the watchers every stream of the encoding tests gets."""
    st = hub.new_stream()
    for req in (
        pb.WatchCreateRequest(key=b"a", start_revision=1, prev_kv=True),  # history + prev_kv
        pb.WatchCreateRequest(key=b"a"),  # live, shares the write's events
        pb.WatchCreateRequest(key=b"\0", range_end=b"\0", fragment=True),  # everything
        pb.WatchCreateRequest(key=b"a", watch_id=1),  # duplicate id: answered at once
    ):
        dup = st.create(req)
        if dup is not None:
            assert dup.canceled and "duplicate" in dup.cancel_reason
    return st


def test_next_encoded_is_the_serialization_of_next(tmp_path: Path) -> None:
    """Two streams with the same watchers, one read with ``next`` and one with
    ``next_encoded``: byte for byte the same responses (created, history with prev_kv,
    live shared events, a fragment-enabled range, progress, cancel, compacted start)."""

    async def main() -> None:
        b, kv = _open(tmp_path / "db")
        try:
            hub = _hub(kv)
            _put(kv, b"a", b"0")
            pbs, raw = _same_watches(hub), _same_watches(hub)
            with kv.batch() as btx:  # one write, two keys: the range watcher takes both
                kv.txn(btx, TxnRequest(success=(PutRequest(b"a", b"1"), PutRequest(b"b", b"1"))))
            _put(kv, b"a", b"2")
            for st in (pbs, raw):
                assert st.request_progress() is None
                assert st.cancel(1) is None
            with kv.batch() as btx:
                kv.compact(btx, 2)
            kv.finish_compaction()
            for st in (pbs, raw):
                st.create(pb.WatchCreateRequest(key=b"a", start_revision=1))  # compacted
            want: list[bytes] = []
            got: list[bytes] = []
            while True:
                try:
                    resp = await asyncio.wait_for(pbs.next(), 0.5)
                except TimeoutError:
                    break
                assert resp is not None
                want.append(resp.SerializeToString())
                data = await asyncio.wait_for(raw.next_encoded(), 2)
                assert data is not None
                got.append(data)
            assert got == want
            parsed = [pb.WatchResponse.FromString(d) for d in got]
            assert sum(1 for r in parsed if r.created) == 4
            assert any(r.events and r.events[0].prev_kv.value == b"0" for r in parsed)
            assert any(r.watch_id == -1 for r in parsed)  # progress
            assert any(r.canceled and r.watch_id == 1 for r in parsed)
            assert any(r.canceled and r.compact_revision == 2 for r in parsed)
            assert any(len(r.events) == 2 for r in parsed)  # both keys of the txn
            pbs.close()
            raw.close()
            assert await raw.next_encoded() is None and await pbs.next() is None
        finally:
            b.close()

    asyncio.run(main())


def test_a_write_is_converted_once_for_many_streams(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """256 streams watch one key: each write's event becomes protobuf once, not per
    watcher, on both paths (``next`` for grpcio, ``next_encoded`` for native)."""
    converted: list[bytes] = []
    real = watch_mod._event_to_pb

    def counting(ev: Event) -> kv_pb2.Event:
        converted.append(ev.kv.key)
        return real(ev)

    monkeypatch.setattr(watch_mod, "_event_to_pb", counting)

    async def main() -> None:
        b, kv = _open(tmp_path / "db")
        try:
            hub = _hub(kv)
            streams = [hub.new_stream() for _ in range(256)]
            for st in streams:
                st.create(pb.WatchCreateRequest(key=b"k"))
                assert (await _next(st)).created
            for encoded in (True, False):
                converted.clear()
                rev = _put(kv, b"k", b"v")
                for st in streams:
                    if encoded:
                        data = await asyncio.wait_for(st.next_encoded(), 2)
                        assert data is not None
                        resp = pb.WatchResponse.FromString(data)
                    else:
                        resp = await _next(st)
                    assert [e.kv.mod_revision for e in resp.events] == [rev]
                    assert resp.header.revision == rev and resp.watch_id == 0
                assert converted == [b"k"]
            for st in streams:
                st.close()
        finally:
            b.close()

    asyncio.run(main())


def test_hand_encoding_matches_protobuf_for_every_field_combination(tmp_path: Path) -> None:
    """``_encode`` writes header, watch id, canceled and compact revision by hand: for a
    seeded sample of values (zero, one-byte and multi-byte varints, negative ids) the bytes
    equal protobuf's serialization of the same response."""

    async def main() -> None:
        b, kv = _open(tmp_path / "db")
        try:
            hub = WatchHub(kv, lambda: pb.ResponseHeader(
                cluster_id=2**63 + 5, member_id=300, revision=kv.current_revision, raft_term=7,
            ))
            st = hub.new_stream()
            evs = (
                (),
                (Event(EventType.PUT, KeyValue(b"k", 2, 2, 1, b"v" * 200, 5)),),
                (Event(EventType.PUT, KeyValue(b"a", 3, 3, 1, b"")),
                 Event(EventType.DELETE, KeyValue(b"b", mod_revision=3))),
            )
            rng = random.Random(20261123)
            ints = [0, 1, 127, 128, 300, 2**31, 2**62]
            for _ in range(300):
                r = mvcc.WatchResponse(
                    watch_id=rng.choice([-1, *ints]),
                    events=rng.choice(evs),
                    revision=rng.choice(ints),
                    compact_revision=rng.choice(ints),
                    canceled=rng.random() < 0.3,
                )
                assert st._encode(r) == st._to_pb(r).SerializeToString(), r
            st.close()
        finally:
            b.close()

    asyncio.run(main())


async def _settle() -> None:
    """Let scheduled callbacks and woken tasks run (a few loop turns)."""
    for _ in range(10):
        await asyncio.sleep(0)


def test_pushed_and_read_responses_keep_the_order_of_next_encoded(tmp_path: Path) -> None:
    """A pushing stream whose sink refuses more every third message: the responses its sink
    and its reader send, in sending order, equal what a plain ``next_encoded`` reader of an
    identical stream gets; the reader takes over on a refusal and pushing resumes once the
    reader's writer has taken a response."""

    async def main() -> None:
        b, kv = _open(tmp_path / "db")
        try:
            hub = _hub(kv)
            pushed, plain = hub.new_stream(), hub.new_stream()
            sent: list[tuple[str, bytes]] = []
            backlog: list[bytes] = []

            def sink(data: bytes) -> bool:
                sent.append(("push", data))
                backlog.append(data)
                return len(backlog) < 3

            async def reader() -> None:
                while (data := await pushed.next_encoded()) is not None:
                    sent.append(("read", data))
                    await asyncio.sleep(0)  # the writer waits for the window...
                    backlog.clear()  # ...which the client's reading opened

            pushed.push_to(sink)
            task = asyncio.create_task(reader())
            for st in (pushed, plain):
                st.create(pb.WatchCreateRequest(key=b"k"))
            await _settle()
            for i in range(40):
                _put(kv, b"k", str(i).encode())
                if i % 4 == 0:  # sometimes several writes in one loop turn
                    await _settle()
            await _settle()
            want: list[bytes] = []
            while len(want) < len(sent) or len(want) < 41:
                data = await asyncio.wait_for(plain.next_encoded(), 2)
                assert data is not None
                want.append(data)
            assert [d for _, d in sent] == want
            how = [h for h, _ in sent]
            assert "push" in how and "read" in how
            first_read = how.index("read", 1)
            assert "push" in how[first_read:]  # pushing resumed after the reader took over
            pushed.close()
            plain.close()
            await asyncio.wait_for(task, 2)
        finally:
            b.close()

    asyncio.run(main())


def test_one_write_on_many_streams_is_pushed_without_waking_readers(tmp_path: Path) -> None:
    async def main() -> None:
        b, kv = _open(tmp_path / "db")
        try:
            hub = _hub(kv)
            streams = [hub.new_stream() for _ in range(64)]
            pushed: list[list[bytes]] = [[] for _ in streams]
            read: list[list[bytes]] = [[] for _ in streams]

            async def reader(i: int) -> None:
                while (data := await streams[i].next_encoded()) is not None:
                    read[i].append(data)

            def taking(box: list[bytes]) -> Callable[[bytes], bool]:
                def sink(data: bytes) -> bool:
                    box.append(data)
                    return True

                return sink

            tasks = []
            for i, st in enumerate(streams):
                st.push_to(taking(pushed[i]))
                tasks.append(asyncio.create_task(reader(i)))
                st.create(pb.WatchCreateRequest(key=b"k"))
            await _settle()
            assert all(len(r) == 1 for r in read)  # "created": the readers were busy then
            rev = _put(kv, b"k", b"v")
            await _settle()
            assert all(len(r) == 1 for r in read)  # no reader was woken for the write
            for p in pushed:
                (resp,) = [pb.WatchResponse.FromString(d) for d in p]
                assert [e.kv.mod_revision for e in resp.events] == [rev]
            for st in streams:
                st.close()
            await asyncio.wait_for(asyncio.gather(*tasks), 2)
        finally:
            b.close()

    asyncio.run(main())


def test_a_refusing_sink_and_a_blocked_writer_stop_the_stream(tmp_path: Path) -> None:
    """A client that reads nothing: once the sink refuses and the reader's writer blocks,
    nothing more is pushed or read; the responses wait in mvcc's bounded queue."""

    async def main() -> None:
        b, kv = _open(tmp_path / "db")
        try:
            hub = _hub(kv)
            st = hub.new_stream()
            pushes: list[bytes] = []
            taken: list[bytes] = []
            window: asyncio.Future[None] = asyncio.get_running_loop().create_future()

            async def reader() -> None:
                while (data := await st.next_encoded()) is not None:
                    taken.append(data)
                    if len(taken) > 1:  # past "created": the window never opens
                        await window

            def refusing(data: bytes) -> bool:
                pushes.append(data)
                return False

            st.push_to(refusing)
            task = asyncio.create_task(reader())
            st.create(pb.WatchCreateRequest(key=b"k"))
            await _settle()
            for i in range(20):
                _put(kv, b"k", str(i).encode())
                await _settle()
            assert len(pushes) == 1 and len(taken) == 2  # created + one event
            st.close()
            task.cancel()
        finally:
            b.close()

    asyncio.run(main())
