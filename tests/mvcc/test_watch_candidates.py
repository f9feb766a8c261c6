"""Which synced watchers a write looks at, and in which order (WatchableStore._candidates).

The store caches the creation order of its synced range watchers and of each key's synced
watchers between membership changes. What must hold after any churn (watchers created
synced or in the past, caught up, cancelled, moved to catch-up by a full stream): the
candidates of a write are exactly the synced range watchers plus the synced watchers of the
keys it changed, in creation order, and a stream receives one write's responses in the
order its watchers were created.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from keelson.backend import Backend
from keelson.mvcc import (
    DeleteRangeRequest,
    Event,
    EventType,
    KeyValue,
    KVStore,
    PutRequest,
    TxnRequest,
    WatchableStore,
    WatchStream,
)
from keelson.mvcc.watcher import Watcher

KEYS = [b"a", b"ab", b"b", b"c", b"d"]


def _expected(ws: WatchableStore, events: tuple[Event, ...]) -> list[Watcher]:
    keys = {ev.kv.key for ev in events}
    synced = [w for w in ws._synced.values() if w.range_end != b"" or w.key in keys]
    return sorted(synced, key=lambda w: w.seq)


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
def test_candidates_follow_membership_changes(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    print(f"seed={seed} (replay: pytest -k 'candidates and {seed}')")
    backend = Backend(str(tmp_path / "db"), buckets=KVStore.BUCKETS, map_size=64 << 20)
    try:
        store = KVStore(backend)
        ws = WatchableStore(store)
        streams = [ws.new_stream(max_pending=rng.choice([1, 3, 50])) for _ in range(3)]
        live: list[tuple[WatchStream, int]] = []
        for step in range(300):
            op = rng.random()
            if op < 0.35:
                si = rng.randrange(len(streams))
                key = rng.choice(KEYS)
                end = rng.choice([b"", b"", b"\0", b"c"])
                if end == b"c" and key >= b"c":
                    end = b""
                start = rng.choice([0, 0, rng.randint(1, store.current_revision + 2)])
                live.append((streams[si], streams[si].watch(key, end, start)))
            elif op < 0.45 and live:
                st, wid = live.pop(rng.randrange(len(live)))
                st.cancel(wid)
            elif op < 0.55:
                ws.sync_watchers(max_revisions=rng.randint(1, 4))
            elif op < 0.65:
                rng.choice(streams).poll()
            else:
                chosen = rng.sample(KEYS, rng.randint(1, 3))
                events = tuple(
                    Event(EventType.PUT, KeyValue(k, 1, store.current_revision + 1, 1))
                    for k in chosen
                )
                assert ws._candidates(events) == _expected(ws, events), (seed, step)
                with store.batch() as btx:
                    if len(chosen) == 1 and rng.random() < 0.3:
                        store.delete_range(btx, DeleteRangeRequest(chosen[0]))
                    else:
                        store.txn(btx, TxnRequest(success=tuple(
                            PutRequest(k, b"%d" % step) for k in chosen
                        )))
    finally:
        backend.close()


def test_one_write_reaches_a_stream_in_watcher_creation_order(tmp_path: Path) -> None:
    backend = Backend(str(tmp_path / "db"), buckets=KVStore.BUCKETS, map_size=64 << 20)
    try:
        store = KVStore(backend)
        ws = WatchableStore(store)
        with store.batch() as btx:
            store.put(btx, PutRequest(b"k", b"0"))
        st = ws.new_stream()
        # Created in this order; the first two start in the past, so they join the synced
        # groups after the last two (insertion order differs from creation order).
        first = st.watch(b"k", b"", 1)
        second = st.watch(b"a", b"\0", 1)
        third = st.watch(b"k")
        fourth = st.watch(b"a", b"z")
        assert ws.sync_watchers()
        st.poll()
        with store.batch() as btx:
            store.put(btx, PutRequest(b"k", b"1"))
        assert [r.watch_id for r in st.poll()] == [first, second, third, fourth]
        st.cancel(second)
        st.poll()
        fifth = st.watch(b"k")
        with store.batch() as btx:
            store.put(btx, PutRequest(b"k", b"2"))
        assert [r.watch_id for r in st.poll()] == [first, third, fourth, fifth]
    finally:
        backend.close()
