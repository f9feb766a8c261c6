"""WatchableStore: delivery, ordering, catch-up, compaction, filters, prev_kv, cancel,
progress, and a seeded randomized check of many watchers against the recorded history."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from keelson.backend import Backend
from keelson.mvcc import (
    PROGRESS_WATCH_ID,
    DeleteRangeRequest,
    Event,
    EventType,
    KVStore,
    PutRequest,
    RangeRequest,
    TxnRequest,
    WatchableStore,
    WatcherDuplicateIdError,
    WatcherEmptyRangeError,
    WatchFilter,
    WatchResponse,
    WatchStream,
    prefix_end,
)


@dataclass
class Env:
    path: Path
    backend: Backend
    store: KVStore
    ws: WatchableStore
    history: list[tuple[int, tuple[Event, ...]]] = field(default_factory=list)

    def put(self, key: bytes, value: bytes = b"v") -> int:
        with self.store.batch() as btx:
            return self.store.put(btx, PutRequest(key, value)).revision

    def delete(self, key: bytes, end: bytes = b"") -> int:
        with self.store.batch() as btx:
            return self.store.delete_range(btx, DeleteRangeRequest(key, end)).revision

    def compact(self, rev: int) -> None:
        with self.store.batch() as btx:
            self.store.compact(btx, rev)
        self.store.finish_compaction()


def open_env(path: Path) -> Env:
    b = Backend(str(path), buckets=KVStore.BUCKETS, map_size=64 << 20)
    s = KVStore(b)
    env = Env(path, b, s, WatchableStore(s))
    s.add_listener(lambda rev, evs: env.history.append((rev, tuple(evs))))
    return env


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = open_env(tmp_path / "db")
    yield e
    e.backend.close()


def events_of(resps: list[WatchResponse], watch_id: int) -> list[Event]:
    return [ev for r in resps if r.watch_id == watch_id for ev in r.events]


def summary(evs: list[Event]) -> list[tuple[str, bytes, int]]:
    return [(ev.type.name, ev.kv.key, ev.kv.mod_revision) for ev in evs]


def drain(env: Env, stream: WatchStream) -> list[WatchResponse]:
    out: list[WatchResponse] = []
    while True:
        done = env.ws.sync_watchers(max_revisions=3)
        got = stream.poll()
        out.extend(got)
        if done and not got:
            return out


def test_synced_watcher_gets_each_revision(env: Env) -> None:
    s = env.ws.new_stream()
    wid = s.watch(b"a")
    env.put(b"a", b"1")
    env.put(b"b", b"1")
    env.delete(b"a")
    resps = s.poll()
    assert [r.revision for r in resps] == [2, 4]
    assert summary(events_of(resps, wid)) == [("PUT", b"a", 2), ("DELETE", b"a", 4)]
    assert resps[0].events[0].kv.value == b"1" and resps[0].events[0].prev_kv is None
    assert env.ws.counts() == (1, 0)


def test_events_of_one_txn_stay_together(env: Env) -> None:
    s = env.ws.new_stream()
    wid = s.watch(b"\0", b"\0")
    with env.store.batch() as btx:
        env.store.txn(btx, TxnRequest(success=(PutRequest(b"x"), PutRequest(b"y"),
                                               DeleteRangeRequest(b"z"))))
    resps = s.poll()
    assert len(resps) == 1 and resps[0].watch_id == wid
    assert summary(list(resps[0].events)) == [("PUT", b"x", 2), ("PUT", b"y", 2)]


def test_watchers_taking_all_events_of_a_write_share_one_events_tuple(env: Env) -> None:
    """The server encodes a write's events once for every watcher given the same tuple."""
    streams = [env.ws.new_stream() for _ in range(3)]
    for s in streams:
        s.watch(b"a")
    ranged = streams[0].watch(b"\0", b"\0")  # takes both events of the txn below too
    with_prev = streams[1].watch(b"a", prev_kv=True)  # its events carry prev_kv: its own
    only_b = streams[2].watch(b"b")  # takes one of the two: its own
    with env.store.batch() as btx:
        env.store.txn(btx, TxnRequest(success=(PutRequest(b"a"), PutRequest(b"b"))))
    got = {(i, r.watch_id): r.events for i, s in enumerate(streams) for r in s.poll()}
    # the plain watchers of b"a" get only the put of b"a": a shared tuple of its own kind
    plain = [got[(i, 0)] for i in range(3)]
    assert all(summary(list(evs)) == [("PUT", b"a", 2)] for evs in plain)
    shared = got[(0, ranged)]
    assert summary(list(shared)) == [("PUT", b"a", 2), ("PUT", b"b", 2)]
    assert got[(1, with_prev)] is not shared and got[(2, only_b)] is not shared
    env.put(b"a", b"2")
    again = [r.events for s in streams for r in s.poll() if r.watch_id == 0]
    assert len(again) == 3 and again[0] is again[1] is again[2]
    assert summary(list(again[0])) == [("PUT", b"a", 3)]


def test_start_revision_in_the_past_is_caught_up(env: Env) -> None:
    for i in range(10):
        env.put(b"k%d" % (i % 2), b"%d" % i)
    s = env.ws.new_stream()
    wid = s.watch(b"k1", start_rev=4)
    assert env.ws.counts() == (0, 1) and s.poll() == []
    assert not env.ws.sync_watchers(max_revisions=3)  # revisions 4..6
    first = s.poll()
    assert summary(events_of(first, wid)) == [("PUT", b"k1", 5)]
    env.put(b"k1", b"new")  # rev 12, published while the watcher is behind
    resps = first + drain(env, s)
    assert [ev.kv.mod_revision for ev in events_of(resps, wid)] == [5, 7, 9, 11, 12]
    assert env.ws.counts() == (1, 0)
    env.put(b"k1", b"later")
    assert summary(events_of(s.poll(), wid)) == [("PUT", b"k1", 13)]


def test_future_start_revision_waits(env: Env) -> None:
    env.put(b"a")
    s = env.ws.new_stream()
    wid = s.watch(b"a", start_rev=4)
    env.put(b"a")
    assert s.poll() == []
    env.put(b"a")
    assert summary(events_of(s.poll(), wid)) == [("PUT", b"a", 4)]


def test_compacted_start_revision_cancels_the_watcher(env: Env) -> None:
    for _ in range(5):
        env.put(b"a")
    env.compact(5)
    s = env.ws.new_stream()
    old = s.watch(b"a", start_rev=3)
    ok = s.watch(b"a", start_rev=5)
    env.ws.sync_watchers()
    resps = s.poll()
    assert resps[0] == WatchResponse(old, revision=6, compact_revision=5, canceled=True)
    assert summary(events_of(resps, ok)) == [("PUT", b"a", 5), ("PUT", b"a", 6)]
    assert s.watch_ids() == [ok]
    assert not s.cancel(old)


def test_delete_at_the_compact_revision_is_delivered(tmp_path: Path) -> None:
    """etcd#18274/#19188: a tombstone at exactly the compact revision stays in history (also
    after a restart), so a watch from that revision sees the deletion."""
    env = open_env(tmp_path / "db")
    env.put(b"a")
    env.put(b"b")
    env.delete(b"a")
    env.compact(4)
    for restart in (False, True):
        if restart:
            h = env.store.hash_kv(0)
            env.backend.close()
            env = open_env(tmp_path / "db")
            assert env.store.hash_kv(0) == h
        s = env.ws.new_stream()
        wid = s.watch(b"\0", b"\0", start_rev=4)
        env.ws.sync_watchers()
        assert summary(events_of(s.poll(), wid)) == [("DELETE", b"a", 4)], restart
    env.put(b"c")
    env.compact(5)  # the next compaction drops the old tombstone for good
    assert env.store.range(RangeRequest(b"a")).kvs == ()
    env.store.check()
    env.backend.close()


def test_filters(env: Env) -> None:
    s = env.ws.new_stream()
    noput = s.watch(b"a", filters=(WatchFilter.NOPUT,))
    nodel = s.watch(b"a", filters=(WatchFilter.NODELETE,))
    env.put(b"a")
    env.delete(b"a")
    resps = s.poll()
    assert summary(events_of(resps, noput)) == [("DELETE", b"a", 3)]
    assert summary(events_of(resps, nodel)) == [("PUT", b"a", 2)]
    assert len(resps) == 2  # nothing is sent for a revision filtered out entirely


def test_prev_kv_synced_and_from_history(env: Env) -> None:
    s = env.ws.new_stream()
    live = s.watch(b"a", prev_kv=True)
    env.put(b"a", b"1")
    env.put(b"a", b"2")
    env.delete(b"a")
    past = s.watch(b"a", start_rev=2, prev_kv=True)
    plain = s.watch(b"a", start_rev=2)
    resps = drain(env, s)
    for wid in (live, past):
        prevs = [ev.prev_kv.value if ev.prev_kv else None for ev in events_of(resps, wid)]
        assert prevs == [None, b"1", b"2"], wid
    assert all(ev.prev_kv is None for ev in events_of(resps, plain))


def test_prev_kv_omitted_when_compacted(env: Env) -> None:
    env.put(b"a", b"1")
    env.put(b"b")
    env.put(b"a", b"2")
    env.compact(4)
    s = env.ws.new_stream()
    wid = s.watch(b"a", start_rev=4, prev_kv=True)
    env.ws.sync_watchers()
    (ev,) = events_of(s.poll(), wid)
    assert ev.kv.value == b"2" and ev.prev_kv is None  # revision 3 is compacted


def test_cancel(env: Env) -> None:
    s = env.ws.new_stream(max_pending=10)
    wid = s.watch(b"a")
    other = s.watch(b"a")
    env.put(b"a")
    assert s.cancel(wid) and not s.cancel(wid) and not s.cancel(99)
    env.put(b"a")
    resps = s.poll()
    assert [(r.watch_id, r.canceled) for r in resps] == [(other, False), (wid, True),
                                                          (other, False)]
    assert env.ws.counts() == (1, 0)


def test_watch_ids_and_errors(env: Env) -> None:
    s = env.ws.new_stream()
    assert s.watch(b"a", watch_id=1) == 1
    assert s.watch(b"a") == 0 and s.watch(b"a") == 2
    with pytest.raises(WatcherDuplicateIdError) as e:
        s.watch(b"a", watch_id=2)
    assert str(e.value) == "mvcc: duplicate watch ID provided on the WatchStream"
    with pytest.raises(WatcherEmptyRangeError) as e2:
        s.watch(b"b", b"a")
    assert str(e2.value) == "mvcc: watcher range is empty"
    with pytest.raises(ValueError):
        s.watch(b"a", watch_id=-5)
    other = env.ws.new_stream()
    assert other.watch(b"a", watch_id=1) == 1  # ids are per stream
    s.close()
    assert env.ws.counts() == (1, 0)


def test_progress_only_when_synced(env: Env) -> None:
    env.put(b"a")
    s = env.ws.new_stream()
    synced = s.watch(b"a")
    behind = s.watch(b"a", start_rev=2)
    assert s.request_progress(synced)
    assert not s.request_progress(behind)
    assert not s.request_progress()  # stream-wide: not every watcher is synced
    assert not s.request_progress(42)
    env.ws.sync_watchers()
    assert s.request_progress()
    resps = s.poll()
    assert resps[0] == WatchResponse(synced, revision=2)
    assert resps[-1] == WatchResponse(PROGRESS_WATCH_ID, revision=2)


def test_on_ready_called_when_queue_becomes_non_empty(env: Env) -> None:
    calls: list[int] = []
    s = env.ws.new_stream(on_ready=lambda: calls.append(1))
    s.watch(b"a")
    env.put(b"a")
    env.put(b"a")
    assert calls == [1] and s.has_pending
    s.poll()
    assert not s.has_pending
    env.put(b"a")
    assert calls == [1, 1]


def test_slow_watcher_moves_to_unsynced_and_catches_up(env: Env) -> None:
    s = env.ws.new_stream(max_pending=2)
    wid = s.watch(b"k", prefix_end(b"k"))
    for i in range(20):
        env.put(b"k%d" % (i % 3))
    assert env.ws.counts() == (0, 1)
    resps: list[WatchResponse] = []
    i = 0
    while True:
        resps.extend(s.poll())
        done = env.ws.sync_watchers(max_revisions=4)
        if i < 15:
            env.put(b"k%d" % (i % 3))  # writes continue during catch-up
            i += 1
        elif done and not s.has_pending:
            break
    resps.extend(s.poll())
    assert [ev.kv.mod_revision for ev in events_of(resps, wid)] == list(range(2, 37))
    revs = [r.revision for r in resps]
    assert revs == sorted(revs)
    assert env.ws.counts() == (1, 0)


def test_restart_forgets_watchers_history_remains(tmp_path: Path) -> None:
    env = open_env(tmp_path / "db")
    s = env.ws.new_stream()
    s.watch(b"a")
    env.put(b"a", b"1")
    env.put(b"a", b"2")
    env.backend.close()
    env = open_env(tmp_path / "db")
    assert env.ws.counts() == (0, 0)
    s = env.ws.new_stream()
    wid = s.watch(b"a", start_rev=2)
    env.put(b"a", b"3")
    resps = drain(env, s)
    assert [ev.kv.value for ev in events_of(resps, wid)] == [b"1", b"2", b"3"]
    env.backend.close()


KEYS = [b"a", b"ab", b"b", b"c", b"d"]


def _expected(env: Env, key: bytes, end: bytes, start: int,
              filters: tuple[WatchFilter, ...]) -> list[tuple[str, bytes, int]]:
    def match(k: bytes) -> bool:
        if end == b"":
            return k == key
        if end == b"\0":
            return k >= key
        return key <= k < end

    out = []
    for rev, evs in env.history:
        if rev < start:
            continue
        for ev in evs:
            if not match(ev.kv.key):
                continue
            if ev.type == EventType.PUT and WatchFilter.NOPUT in filters:
                continue
            if ev.type == EventType.DELETE and WatchFilter.NODELETE in filters:
                continue
            out.append((ev.type.name, ev.kv.key, ev.kv.mod_revision))
    return out


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_many_watchers_randomized(env: Env, seed: int) -> None:
    rng = random.Random(seed)
    print(f"seed={seed} (replay: pytest -k 'randomized and {seed}')")
    streams = [env.ws.new_stream(max_pending=rng.choice([1, 2, 8])) for _ in range(3)]
    got: dict[tuple[int, int], list[WatchResponse]] = {}
    spec: dict[tuple[int, int], tuple[bytes, bytes, int, tuple[WatchFilter, ...]]] = {}

    def collect() -> None:
        for si, st in enumerate(streams):
            for r in st.poll():
                got.setdefault((si, r.watch_id), []).append(r)

    for step in range(200):
        op = rng.random()
        if op < 0.5:
            if rng.random() < 0.8:
                env.put(rng.choice(KEYS), b"%d" % step)
            else:
                env.delete(rng.choice(KEYS), rng.choice([b"", b"c", b"\0"]))
        elif op < 0.6 and len(spec) < 30:
            si = rng.randrange(len(streams))
            key = rng.choice(KEYS)
            end = rng.choice([b"", b"\0", prefix_end(key), b"e"])
            start = rng.randint(0, env.store.current_revision + 2)
            filters = tuple(f for f in WatchFilter if rng.random() < 0.2)
            wid = streams[si].watch(key, end, start, filters=filters)
            if start == 0:
                start = env.store.current_revision + 1
            spec[(si, wid)] = (key, end, start, filters)
        elif op < 0.62:
            cur, low = env.store.current_revision, env.store.compact_revision
            if cur > low:
                rev = rng.randint(low + 1, cur)
                with env.store.batch() as btx:
                    env.store.compact(btx, rev)
                env.store.compaction_step()
        elif op < 0.8:
            env.ws.sync_watchers(max_revisions=rng.randint(1, 5))
        else:
            collect()
    while not env.ws.sync_watchers(max_revisions=5) or any(st.has_pending for st in streams):
        collect()
    collect()
    for sid, (key, end, start, filters) in spec.items():
        resps = got.get(sid, [])
        evs = [ev for r in resps for ev in r.events]
        want = _expected(env, key, end, start, filters)
        if resps and resps[-1].compact_revision:
            # Cancelled by compaction: what came before is a gap-free prefix, and the
            # watcher was still behind the compact revision.
            last = resps.pop()
            assert last.canceled and summary(evs) == want[: len(evs)], (seed, sid)
        else:
            assert summary(evs) == want, (seed, sid)
        revs = [r.revision for r in resps]
        assert revs == sorted(revs), (seed, sid)
        for r in resps:  # one revision never spans two responses
            assert r.events and r.revision >= r.events[-1].kv.mod_revision
        last_rev = [r.events[-1].kv.mod_revision for r in resps]
        first_rev = [r.events[0].kv.mod_revision for r in resps]
        assert all(a < b for a, b in zip(last_rev, first_rev[1:], strict=False)), (seed, sid)
    assert env.ws.counts()[1] == 0


def test_sync_reads_a_bounded_batch_of_revisions(env: Env) -> None:
    for _ in range(30):
        env.put(b"a")
    s = env.ws.new_stream()
    wid = s.watch(b"a", start_rev=2)
    assert not env.ws.sync_watchers(max_revisions=10)
    resps = s.poll()
    assert [ev.kv.mod_revision for ev in events_of(resps, wid)] == list(range(2, 12))
    assert resps[0].revision == 31  # the store revision when the response was made
    with pytest.raises(ValueError):
        env.ws.sync_watchers(max_revisions=0)


def test_negative_start_revision_reads_all_history_unless_compacted(env: Env) -> None:
    env.put(b"a")
    env.put(b"a")
    s = env.ws.new_stream()
    wid = s.watch(b"a", start_rev=-3)
    env.ws.sync_watchers()
    assert [ev.kv.mod_revision for ev in events_of(s.poll(), wid)] == [2, 3]
    env.compact(3)
    gone = s.watch(b"a", start_rev=-3)
    env.ws.sync_watchers()
    assert s.poll() == [WatchResponse(gone, revision=3, compact_revision=3, canceled=True)]


def test_aborted_batch_is_never_delivered(env: Env) -> None:
    s = env.ws.new_stream()
    wid = s.watch(b"a")
    with pytest.raises(RuntimeError), env.store.batch() as btx:
        env.store.put(btx, PutRequest(b"a", b"lost"))
        raise RuntimeError("apply failed")
    assert s.poll() == [] and env.ws.revision == 1
    env.put(b"a", b"kept")
    (ev,) = events_of(s.poll(), wid)
    assert (ev.kv.mod_revision, ev.kv.value) == (2, b"kept")


def test_catch_up_responses_hold_whole_revisions_up_to_max_bytes(env: Env) -> None:
    """Large values: each catch-up response holds whole revisions (a txn's events stay
    together) up to the byte budget, and the watcher still gets everything, in order, once
    each. Without the bound 1000 revisions of 30 KB values made one 12 MB response, which
    a grpcio client refuses (4 MiB by default) on every reconnect."""
    big = b"x" * 3000
    for i in range(20):
        if i % 4 == 0:  # a txn of two puts: one revision, two events
            with env.store.batch() as btx:
                env.store.txn(btx, TxnRequest(success=[PutRequest(b"k1", big),
                                                       PutRequest(b"k2", big)]))
        else:
            env.put(b"k%d" % (i % 3), big)
    s = env.ws.new_stream()
    wid = s.watch(b"k", prefix_end(b"k"), start_rev=2)
    responses: list[WatchResponse] = []
    for _ in range(50):
        done = env.ws.sync_watchers(max_bytes=10_000)
        responses += s.poll()
        if done:
            break
    assert done
    sizes = [sum(len(ev.kv.key) + len(ev.kv.value) for ev in r.events) for r in responses]
    assert len(responses) > 3 and max(sizes) <= 10_000
    for r in responses[:-1]:  # every response ends where the next revision starts
        nxt = responses[responses.index(r) + 1].events[0].kv.mod_revision
        assert r.events[-1].kv.mod_revision < nxt
    got = [(ev.kv.key, ev.kv.mod_revision) for ev in events_of(responses, wid)]
    want = [(ev.kv.key, rev) for rev, evs in env.history for ev in evs if rev >= 2]
    assert got == want
    with pytest.raises(ValueError):
        env.ws.sync_watchers(max_bytes=0)


def test_catch_up_counts_prev_values_and_sends_an_oversized_revision_alone(env: Env) -> None:
    for _ in range(6):
        env.put(b"p", b"y" * 1000)
    env.put(b"p", b"z" * 5000)  # alone larger than the budget
    env.put(b"p", b"y" * 1000)
    s = env.ws.new_stream()
    wid = s.watch(b"p", start_rev=2, prev_kv=True)
    responses: list[WatchResponse] = []
    while not env.ws.sync_watchers(max_bytes=4100):
        responses += s.poll()
    responses += s.poll()
    per_response = [[ev.kv.mod_revision for ev in r.events] for r in responses]
    # 1001 bytes, twice with the previous value: two puts per response
    assert per_response == [[2, 3], [4, 5], [6, 7], [8], [9]]
    # the first put created the key: no previous value
    assert [ev.prev_kv is not None for ev in events_of(responses, wid)] == [False] + [True] * 7
