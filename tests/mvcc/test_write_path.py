"""The put path's shortcuts give what the general code gives.

- ``TreeIndex.current`` (one lookup per put) agrees with ``get(key, at)`` for any ``at`` at
  or after the newest indexed revision, through puts, deletes, compaction and restore.
- A put records the same create revision, version and lease as the history says, and tells
  the lessor exactly what it did before.
- Commit listeners: a changes listener gets every write txn of a commit once, in revision
  order, before the event listeners, which get ``changes_to_events`` of each; an aborted
  batch reaches neither.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import pytest

from keelson.backend import Backend
from keelson.mvcc import (
    DeleteRangeRequest,
    EmptyKeyError,
    Event,
    EventType,
    KeyValue,
    KVStore,
    PutRequest,
    RangeRequest,
    Revision,
    TxnRequest,
)
from keelson.mvcc.key_index import TreeIndex
from keelson.mvcc.keyvalue import Change
from keelson.mvcc.kvstore import changes_to_events

KEYS = [b"a", b"b", b"c"]


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_current_agrees_with_get_at_the_newest_revision(seed: int) -> None:
    rng = random.Random(seed)
    print(f"seed={seed} (replay: pytest -k 'current_agrees and {seed}')")
    index = TreeIndex()
    rev = 1
    for _ in range(400):
        key = rng.choice(KEYS)
        rev += 1
        op = rng.random()
        if op < 0.6:
            index.put(key, Revision(rev, 0), rng.choice([0, 0, 7]))
        elif op < 0.85:
            index.tombstone(key, Revision(rev, 0))
        else:
            index.compact(rng.randint(max(1, rev - 5), rev))
        for k in [*KEYS, b"never"]:
            got = index.get(k, rev + rng.randint(0, 3))
            cur = index.current(k)
            ki = index.key_index(k)
            if got is None:
                assert cur is None, (seed, k)
            else:
                assert ki is not None
                assert cur == (got[1].main, got[2], ki.lease), (seed, k)
        index.check()


class _RecordingLessor:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int, bytes]] = []

    def lease_exists(self, lease_id: int) -> bool:
        return True

    def attach(self, lease_id: int, key: bytes) -> None:
        self.calls.append(("attach", lease_id, key))

    def detach(self, lease_id: int, key: bytes) -> None:
        self.calls.append(("detach", lease_id, key))


def test_put_fields_and_lease_calls(tmp_path: Path) -> None:
    backend = Backend(str(tmp_path / "db"), buckets=KVStore.BUCKETS, map_size=64 << 20)
    lessor = _RecordingLessor()
    try:
        store = KVStore(backend, lessor=lessor)

        def put(key: bytes, lease: int = 0) -> KeyValue:
            with store.batch() as btx:
                store.put(btx, PutRequest(key, b"v", lease=lease))
            return store.range(RangeRequest(key)).kvs[0]

        kv = put(b"k", 5)
        assert (kv.create_revision, kv.mod_revision, kv.version, kv.lease) == (2, 2, 1, 5)
        kv = put(b"k", 6)
        assert (kv.create_revision, kv.mod_revision, kv.version, kv.lease) == (2, 3, 2, 6)
        with store.batch() as btx:
            store.delete_range(btx, DeleteRangeRequest(b"k"))
        kv = put(b"k")
        assert (kv.create_revision, kv.mod_revision, kv.version, kv.lease) == (5, 5, 1, 0)
        kv = put(b"k", 7)
        assert (kv.create_revision, kv.version, kv.lease) == (5, 2, 7)
        assert lessor.calls == [
            ("attach", 5, b"k"),
            ("detach", 5, b"k"), ("attach", 6, b"k"),
            ("detach", 6, b"k"),  # the delete
            ("attach", 7, b"k"),  # the put after it had no lease: nothing to detach
        ]
    finally:
        backend.close()


def test_commit_listeners(tmp_path: Path) -> None:
    backend = Backend(str(tmp_path / "db"), buckets=KVStore.BUCKETS, map_size=64 << 20)
    try:
        store = KVStore(backend)
        calls: list[tuple[str, object]] = []

        def on_changes(pending: Sequence[tuple[int, Sequence[Change]]]) -> None:
            calls.append(("changes", [(rev, tuple(ch)) for rev, ch in pending]))

        def on_events(rev: int, events: Sequence[Event]) -> None:
            calls.append(("events", (rev, tuple(events))))

        store.add_listener(on_events)
        store.add_changes_listener(on_changes)
        with store.batch() as btx:
            store.put(btx, PutRequest(b"a", b"1"))
            store.txn(btx, TxnRequest())  # changes nothing: no revision, no call
            store.txn(btx, TxnRequest(success=(
                PutRequest(b"b", b"2"), DeleteRangeRequest(b"a"),
            )))
        a = KeyValue(b"a", 2, 2, 1, b"1")
        b = KeyValue(b"b", 3, 3, 1, b"2")
        a_deleted = (b"a", 0, 0, 0, b"", 0)
        assert calls == [
            ("changes", [(2, ((b"a", 2, 2, 1, b"1", 0),)),
                         (3, ((b"b", 3, 3, 1, b"2", 0), a_deleted))]),
            ("events", (2, (Event(EventType.PUT, a),))),
            ("events", (3, (Event(EventType.PUT, b),
                            Event(EventType.DELETE, KeyValue(b"a", mod_revision=3))))),
        ]
        assert calls[2][1] == (3, changes_to_events(3, [(b"b", 3, 3, 1, b"2", 0), a_deleted]))
        calls.clear()
        with pytest.raises(RuntimeError), store.batch() as btx:
            store.put(btx, PutRequest(b"c", b"3"))
            raise RuntimeError("abort")
        with store.batch():
            pass
        assert calls == []
        assert store.current_revision == 3
    finally:
        backend.close()


@pytest.mark.parametrize("seed", [1, 2])
def test_put_plain_writes_what_put_writes(tmp_path: Path, seed: int) -> None:
    """The same history through ``put_plain`` and through ``put`` of a plain PutRequest:
    the same responses, events, key space and hash; a key with a lease loses it either way."""
    rng = random.Random(seed)
    stores, backends, events = [], [], []
    for name in ("plain", "general"):
        backend = Backend(str(tmp_path / name), buckets=KVStore.BUCKETS, map_size=64 << 20)
        store = KVStore(backend, lessor=_RecordingLessor())
        seen: list[tuple[int, tuple[Event, ...]]] = []
        store.add_listener(lambda rev, evs, seen=seen: seen.append((rev, tuple(evs))))
        stores.append(store)
        backends.append(backend)
        events.append(seen)
    plain, general = stores
    try:
        for _ in range(300):
            key, value = rng.choice(KEYS), rng.randbytes(rng.randrange(4))
            op = rng.random()
            for store in stores:
                with store.batch() as btx:
                    if op < 0.15:
                        store.delete_range(btx, DeleteRangeRequest(key))
                    elif op < 0.3:
                        store.put(btx, PutRequest(key, value, lease=7))
                    elif store is plain:
                        got_plain = store.put_plain(btx, key, value)
                    else:
                        assert store.put(btx, PutRequest(key, value)) == got_plain
        assert events[0] == events[1]
        assert plain.hash_kv() == general.hash_kv()
        assert plain.range(RangeRequest(b"\0", b"\0")) == general.range(RangeRequest(b"\0", b"\0"))
        assert plain._lessor.calls == general._lessor.calls  # type: ignore[union-attr]
        with plain.batch() as btx, pytest.raises(EmptyKeyError):
            plain.put_plain(btx, b"", b"v")
        assert plain.current_revision == general.current_revision
    finally:
        for backend in backends:
            backend.close()
